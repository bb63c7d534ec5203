// Batch protocol decoder: the fuzz bytes are a frame header plus payload
// from an untrusted local client.
// Properties: no over-read (views lie inside the payload), limits hold, and
// whatever decodes re-encodes to something that decodes to the same values.
#include <string>

#include "proto/batch_wire.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;

namespace {

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void batch(std::string_view payload, const BatchLimits& limits) {
  Result<BatchView> b = decode_batch(payload, limits);
  if (!b.ok()) {
    FUZZ_CHECK(!b.error().message.empty());
    return;
  }
  FUZZ_CHECK(b->has_sender && !b->recipients.empty());
  FUZZ_CHECK(b->recipients.size() <= limits.max_recipients);
  FUZZ_CHECK(b->message.size() <= limits.max_message);
  FUZZ_CHECK(b->batch_id.size() <= kMaxBatchId);
  FUZZ_CHECK(inside(b->message, payload) && inside(b->sender, payload) &&
             inside(b->batch_id, payload));
  for (std::string_view r : b->recipients) {
    FUZZ_CHECK(inside(r, payload));
  }
  FUZZ_CHECK(b->recipient_vars.empty() || b->recipient_vars.size() == b->recipients.size());
  for (std::string_view v : b->recipient_vars) {
    FUZZ_CHECK(inside(v, payload));
  }
  FUZZ_CHECK(b->unsubscribed.size() <= limits.max_unsubscribed);
  for (std::string_view u : b->unsubscribed) {
    FUZZ_CHECK(inside(u, payload));
  }
  std::string again;
  encode_batch(again, *b);
  Result<BatchView> b2 = decode_batch(again, limits);
  FUZZ_CHECK(b2.ok());
  FUZZ_CHECK(b2->batch_id == b->batch_id && b2->sender == b->sender && b2->message == b->message &&
             b2->recipients == b->recipients && b2->options == b->options &&
             b2->unsubscribed == b->unsubscribed);
  // An empty recipient_vars field means "none": compare per recipient.
  auto vars_of = [](const BatchView& v, size_t i) {
    return i < v.recipient_vars.size() ? v.recipient_vars[i] : std::string_view();
  };
  for (size_t i = 0; i < b->recipients.size(); ++i) {
    FUZZ_CHECK(vars_of(*b, i) == vars_of(*b2, i));
  }
}

void ack(std::string_view payload) {
  Result<Ack> a = decode_ack(payload);
  if (!a.ok()) {
    return;
  }
  FUZZ_CHECK(static_cast<uint8_t>(a->status) <= 3);
  std::string again;
  encode_ack(again, *a);
  Result<Ack> a2 = decode_ack(again);
  FUZZ_CHECK(a2.ok());
  FUZZ_CHECK(a2->seq == a->seq && a2->batch_id == a->batch_id && a2->status == a->status &&
             a2->accepted == a->accepted && a2->reason == a->reason &&
             a2->rejections.size() == a->rejections.size());
  for (size_t i = 0; i < a->rejections.size(); ++i) {
    FUZZ_CHECK(a2->rejections[i].index == a->rejections[i].index &&
               a2->rejections[i].reason == a->rejections[i].reason &&
               a2->rejections[i].text == a->rejections[i].text);
  }
}

void hello(std::string_view payload) {
  Result<Hello> h = decode_hello(payload);
  if (!h.ok()) {
    return;
  }
  FUZZ_CHECK(h->version_min <= h->version_max);
  FUZZ_CHECK(inside(h->peer_name, payload));
  std::string again;
  encode_hello(again, *h);
  Result<Hello> h2 = decode_hello(again);
  FUZZ_CHECK(h2.ok() && h2->version_min == h->version_min && h2->version_max == h->version_max &&
             h2->version == h->version && h2->peer_name == h->peer_name &&
             h2->max_frame == h->max_frame && h2->max_message == h->max_message &&
             h2->max_recipients == h->max_recipients);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::string_view all(bytes);
  Result<FrameHeader> h =
      decode_frame_header(std::span<const char>(all.data(), all.size()), 1u << 20);
  if (h.ok()) {
    FUZZ_CHECK(all.size() >= kFrameHeaderSize && h->length <= (1u << 20));
  }
  // The payload is everything after a header-sized prefix (or the whole input).
  std::string payload(all.size() >= kFrameHeaderSize ? all.substr(kFrameHeaderSize) : all);
  BatchLimits small;
  small.max_message = 64;
  small.max_recipients = 4;
  small.max_unsubscribed = 3;
  batch(payload, BatchLimits{});
  batch(payload, small);
  ack(payload);
  hello(payload);
  FieldReader reader(payload);
  Field f;
  size_t fields = 0;
  while (true) {
    Result<bool> more = reader.next(&f);
    if (!more.ok() || !*more) {
      break;
    }
    FUZZ_CHECK(inside(f.value, payload));
    FUZZ_CHECK(++fields <= payload.size() / 6);
  }
  return 0;
}
