#include "proto/batch_wire.h"

#include <cstdio>

namespace ringmail::proto {

namespace {

constexpr size_t kFieldHeaderSize = 6;  // u16 tag + u32 length

void put_be(std::string& out, uint64_t v, size_t width) {
  for (size_t i = width; i-- > 0;) {
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

uint64_t get_be(std::string_view in, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    v = (v << 8) | static_cast<unsigned char>(in[i]);
  }
  return v;
}

Error bad(std::string message) {
  return make_error(Errc::kSyntax, std::move(message));
}

std::string tag_hex(uint16_t tag) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%04x", tag);
  return buf;
}

Error unknown_field(uint16_t tag) {
  return bad("unknown mandatory field " + tag_hex(tag));
}
Error duplicate_field(uint16_t tag) {
  return bad("duplicate field " + tag_hex(tag));
}

bool is_optional(uint16_t t) {
  return (t & tag::kOptionalBit) != 0;
}

// Reads a fixed-width integer field into *out.
template <class T>
Result<void> read_uint(const Field& f, size_t width, T* out) {
  Result<uint64_t> v = field_uint(f, width);
  if (!v) {
    return std::move(v).take_error();
  }
  *out = static_cast<T>(*v);
  return ok_result();
}

bool valid_batch_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxBatchId) {
    return false;
  }
  for (char ch : id) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x21 || c > 0x7e) {
      return false;
    }
  }
  return true;
}

// `seen` bit: the last recipient already has its recipient_vars field.
constexpr unsigned kSeenVarsForLast = 1u << 8;

// Applies one BATCH field to *b. `seen` tracks single-valued fields.
Result<void> apply_batch_field(const Field& f, const BatchLimits& limits, BatchView* b,
                               unsigned* seen) {
  auto once = [&](unsigned bit) {
    bool dup = (*seen & bit) != 0;
    *seen |= bit;
    return !dup;
  };
  switch (f.tag) {
    case tag::kBatchId:
      if (!once(1)) {
        return duplicate_field(f.tag);
      }
      if (!valid_batch_id(f.value)) {
        return bad("batch id must be 1..128 printable ASCII characters");
      }
      b->batch_id = f.value;
      return ok_result();
    case tag::kSender:
      if (!once(2)) {
        return duplicate_field(f.tag);
      }
      b->sender = f.value;
      b->has_sender = true;
      return ok_result();
    case tag::kMessage:
      if (!once(4)) {
        return duplicate_field(f.tag);
      }
      if (f.value.size() > limits.max_message) {
        return make_error(Errc::kLimit,
                          "message larger than " + std::to_string(limits.max_message) + " bytes");
      }
      b->message = f.value;
      return ok_result();
    case tag::kRecipient:
      if (b->recipients.size() >= limits.max_recipients) {
        return make_error(Errc::kLimit,
                          "more than " + std::to_string(limits.max_recipients) + " recipients");
      }
      b->recipients.push_back(f.value);
      if (!b->recipient_vars.empty()) {
        b->recipient_vars.emplace_back();
      }
      *seen &= ~kSeenVarsForLast;
      return ok_result();
    case tag::kRecipientVars:
      if (b->recipients.empty()) {
        return bad("recipient_vars field before any recipient");
      }
      if ((*seen & kSeenVarsForLast) != 0) {
        return bad("second recipient_vars field for recipient #" +
                   std::to_string(b->recipients.size() - 1));
      }
      *seen |= kSeenVarsForLast;
      // Parallel to recipients from the first one on: a batch without
      // variables pays nothing for the feature.
      b->recipient_vars.resize(b->recipients.size());
      b->recipient_vars.back() = f.value;
      return ok_result();
    case tag::kUnsubscribed:
      if (b->unsubscribed.size() >= limits.max_unsubscribed) {
        return make_error(Errc::kLimit, "more than " + std::to_string(limits.max_unsubscribed) +
                                            " unsubscribed addresses");
      }
      b->unsubscribed.push_back(f.value);
      return ok_result();
    case tag::kOption:
      b->options.push_back(f.value);
      return ok_result();
    default:
      return is_optional(f.tag) ? ok_result() : Result<void>(unknown_field(f.tag));
  }
}

}  // namespace

Result<FrameHeader> decode_frame_header(std::span<const char> header, uint32_t max_length) {
  if (header.size() < kFrameHeaderSize) {
    return bad("truncated frame header");
  }
  std::string_view h(header.data(), kFrameHeaderSize);
  if (h[5] != 0 || h[6] != 0 || h[7] != 0) {
    return bad("frame flags or reserved bytes are not zero");
  }
  FrameHeader fh;
  fh.length = static_cast<uint32_t>(get_be(h, 4));
  fh.type = static_cast<uint8_t>(h[4]);
  if (fh.length > max_length) {
    return make_error(Errc::kLimit, "frame length " + std::to_string(fh.length) +
                                        " exceeds the maximum " + std::to_string(max_length));
  }
  return fh;
}

void append_frame_header(std::string& out, FrameType type, uint32_t length) {
  put_be(out, length, 4);
  out.push_back(static_cast<char>(type));
  out.append(3, '\0');
}

void append_frame(std::string& out, FrameType type, std::string_view payload) {
  RM_ASSERT(payload.size() <= UINT32_MAX);
  append_frame_header(out, type, static_cast<uint32_t>(payload.size()));
  out.append(payload);
}

Result<bool> FieldReader::next(Field* field) {
  if (rest_.empty()) {
    return false;
  }
  if (rest_.size() < kFieldHeaderSize) {
    return bad("truncated field header");
  }
  uint16_t t = static_cast<uint16_t>(get_be(rest_, 2));
  uint64_t len = get_be(rest_.substr(2), 4);
  if (len > rest_.size() - kFieldHeaderSize) {
    return bad("field " + tag_hex(t) + " length exceeds the payload");
  }
  field->tag = t;
  field->value = rest_.substr(kFieldHeaderSize, static_cast<size_t>(len));
  rest_.remove_prefix(kFieldHeaderSize + static_cast<size_t>(len));
  return true;
}

void append_field(std::string& out, uint16_t t, std::string_view value) {
  put_be(out, t, 2);
  put_be(out, value.size(), 4);
  out.append(value);
}

void append_field_u8(std::string& out, uint16_t t, uint8_t v) {
  put_be(out, t, 2);
  put_be(out, 1, 4);
  put_be(out, v, 1);
}

void append_field_u16(std::string& out, uint16_t t, uint16_t v) {
  put_be(out, t, 2);
  put_be(out, 2, 4);
  put_be(out, v, 2);
}

void append_field_u32(std::string& out, uint16_t t, uint32_t v) {
  put_be(out, t, 2);
  put_be(out, 4, 4);
  put_be(out, v, 4);
}

void append_field_u64(std::string& out, uint16_t t, uint64_t v) {
  put_be(out, t, 2);
  put_be(out, 8, 4);
  put_be(out, v, 8);
}

Result<uint64_t> field_uint(const Field& f, size_t width) {
  if ((width != 1 && width != 2 && width != 4 && width != 8) || f.value.size() != width) {
    return bad("field " + tag_hex(f.tag) + " must be " + std::to_string(width) + " bytes");
  }
  return get_be(f.value, width);
}

void encode_hello(std::string& out, const Hello& hello) {
  append_field_u16(out, tag::kVersionMin, hello.version_min);
  append_field_u16(out, tag::kVersionMax, hello.version_max);
  if (!hello.peer_name.empty()) {
    append_field(out, tag::kPeerName, hello.peer_name);
  }
  if (hello.version != 0) {
    append_field_u16(out, tag::kVersion, hello.version);
  }
  if (hello.max_frame != 0) {
    append_field_u32(out, tag::kMaxFrame, hello.max_frame);
  }
  if (hello.max_message != 0) {
    append_field_u32(out, tag::kMaxMessage, hello.max_message);
  }
  if (hello.max_recipients != 0) {
    append_field_u32(out, tag::kMaxRecipients, hello.max_recipients);
  }
}

Result<Hello> decode_hello(std::string_view payload) {
  Hello h;
  FieldReader reader(payload);
  Field f;
  unsigned seen = 0;
  while (true) {
    Result<bool> more = reader.next(&f);
    if (!more) {
      return std::move(more).take_error();
    }
    if (!*more) {
      break;
    }
    if (f.tag >= tag::kVersionMin && f.tag <= tag::kMaxRecipients) {
      unsigned bit = 1u << f.tag;
      if ((seen & bit) != 0) {
        return duplicate_field(f.tag);
      }
      seen |= bit;
    }
    Result<void> r = ok_result();
    switch (f.tag) {
      case tag::kVersionMin:
        r = read_uint(f, 2, &h.version_min);
        break;
      case tag::kVersionMax:
        r = read_uint(f, 2, &h.version_max);
        break;
      case tag::kPeerName:
        h.peer_name = f.value;
        break;
      case tag::kVersion:
        r = read_uint(f, 2, &h.version);
        break;
      case tag::kMaxFrame:
        r = read_uint(f, 4, &h.max_frame);
        break;
      case tag::kMaxMessage:
        r = read_uint(f, 4, &h.max_message);
        break;
      case tag::kMaxRecipients:
        r = read_uint(f, 4, &h.max_recipients);
        break;
      default:
        if (!is_optional(f.tag)) {
          return unknown_field(f.tag);
        }
    }
    if (!r) {
      return std::move(r).take_error();
    }
  }
  if (h.version_min > h.version_max) {
    return bad("version range is empty");
  }
  return h;
}

Result<BatchView> decode_batch(std::string_view payload, const BatchLimits& limits) {
  BatchView b;
  FieldReader reader(payload);
  Field f;
  unsigned seen = 0;
  while (true) {
    Result<bool> more = reader.next(&f);
    if (!more) {
      return std::move(more).take_error();
    }
    if (!*more) {
      break;
    }
    Result<void> r = apply_batch_field(f, limits, &b, &seen);
    if (!r) {
      return std::move(r).take_error();
    }
  }
  if (!b.has_sender) {
    return bad("missing sender field");
  }
  if ((seen & 4) == 0) {
    return bad("missing message field");
  }
  if (b.recipients.empty()) {
    return bad("no recipients");
  }
  return b;
}

void encode_batch(std::string& out, const BatchView& batch) {
  if (!batch.batch_id.empty()) {
    append_field(out, tag::kBatchId, batch.batch_id);
  }
  if (batch.has_sender || !batch.sender.empty()) {
    append_field(out, tag::kSender, batch.sender);
  }
  append_field(out, tag::kMessage, batch.message);
  for (size_t i = 0; i < batch.recipients.size(); ++i) {
    append_field(out, tag::kRecipient, batch.recipients[i]);
    if (i < batch.recipient_vars.size() && !batch.recipient_vars[i].empty()) {
      append_field(out, tag::kRecipientVars, batch.recipient_vars[i]);
    }
  }
  for (std::string_view u : batch.unsubscribed) {
    append_field(out, tag::kUnsubscribed, u);
  }
  for (std::string_view o : batch.options) {
    append_field(out, tag::kOption, o);
  }
}

void encode_ack(std::string& out, const Ack& ack) {
  append_field_u64(out, tag::kSeq, ack.seq);
  if (!ack.batch_id.empty()) {
    append_field(out, tag::kBatchId, ack.batch_id);
  }
  append_field_u8(out, tag::kStatus, static_cast<uint8_t>(ack.status));
  append_field_u32(out, tag::kAccepted, ack.accepted);
  for (const Rejection& r : ack.rejections) {
    put_be(out, tag::kRejected, 2);
    put_be(out, 4 + 2 + r.text.size(), 4);
    put_be(out, r.index, 4);
    put_be(out, static_cast<uint16_t>(r.reason), 2);
    out.append(r.text);
  }
  if (!ack.reason.empty()) {
    append_field(out, tag::kReason, ack.reason);
  }
}

namespace {

Result<void> apply_ack_field(const Field& f, Ack* a, unsigned* seen) {
  auto once = [&](unsigned bit) {
    bool dup = (*seen & bit) != 0;
    *seen |= bit;
    return !dup;
  };
  switch (f.tag) {
    case tag::kSeq:
      return once(1) ? read_uint(f, 8, &a->seq) : Result<void>(duplicate_field(f.tag));
    case tag::kBatchId:
      if (!once(2)) {
        return duplicate_field(f.tag);
      }
      a->batch_id.assign(f.value);
      return ok_result();
    case tag::kStatus: {
      uint8_t s = 0;
      Result<void> r = once(4) ? read_uint(f, 1, &s) : Result<void>(duplicate_field(f.tag));
      if (!r) {
        return r;
      }
      if (s > static_cast<uint8_t>(AckStatus::kSpoolUnavailable)) {
        return bad("unknown ack status " + std::to_string(s));
      }
      a->status = static_cast<AckStatus>(s);
      return ok_result();
    }
    case tag::kAccepted:
      return once(8) ? read_uint(f, 4, &a->accepted) : Result<void>(duplicate_field(f.tag));
    case tag::kRejected: {
      if (f.value.size() < 6) {
        return bad("truncated rejection field");
      }
      Rejection rej;
      rej.index = static_cast<uint32_t>(get_be(f.value, 4));
      rej.reason = static_cast<RejectReason>(get_be(f.value.substr(4), 2));
      rej.text.assign(f.value.substr(6));
      a->rejections.push_back(std::move(rej));
      return ok_result();
    }
    case tag::kReason:
      if (!once(16)) {
        return duplicate_field(f.tag);
      }
      a->reason.assign(f.value);
      return ok_result();
    default:
      return is_optional(f.tag) ? ok_result() : Result<void>(unknown_field(f.tag));
  }
}

}  // namespace

Result<Ack> decode_ack(std::string_view payload) {
  Ack a;
  FieldReader reader(payload);
  Field f;
  unsigned seen = 0;
  while (true) {
    Result<bool> more = reader.next(&f);
    if (!more) {
      return std::move(more).take_error();
    }
    if (!*more) {
      break;
    }
    Result<void> r = apply_ack_field(f, &a, &seen);
    if (!r) {
      return std::move(r).take_error();
    }
  }
  if ((seen & 1) == 0) {
    return bad("missing seq field");
  }
  if ((seen & 4) == 0) {
    return bad("missing status field");
  }
  return a;
}

std::string_view ack_status_name(AckStatus s) {
  switch (s) {
    case AckStatus::kAccepted:
      return "accepted";
    case AckStatus::kRejected:
      return "rejected";
    case AckStatus::kTryLater:
      return "try_later";
    case AckStatus::kSpoolUnavailable:
      return "spool_unavailable";
  }
  return "unknown";
}

std::string_view reject_reason_name(RejectReason r) {
  switch (r) {
    case RejectReason::kInvalidAddress:
      return "invalid_address";
    case RejectReason::kDuplicate:
      return "duplicate";
    case RejectReason::kSuppressed:
      return "suppressed";
    case RejectReason::kPolicy:
      return "policy";
    case RejectReason::kTemplate:
      return "template";
  }
  return "unknown";
}

}  // namespace ringmail::proto
