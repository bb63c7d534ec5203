#include "proto/batch_wire.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::HeapBytes;

std::string raw_field(uint16_t t, std::string_view value) {
  std::string out;
  append_field(out, t, value);
  return out;
}

TEST(FrameHeader, RoundTrip) {
  std::string out;
  append_frame_header(out, FrameType::kBatch, 0x01020304);
  ASSERT_EQ(out.size(), kFrameHeaderSize);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\x02\x00\x00\x00", 8));
  HeapBytes bytes(out);
  Result<FrameHeader> h = decode_frame_header(bytes.span(), UINT32_MAX);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->length, 0x01020304u);
  EXPECT_EQ(h->type, static_cast<uint8_t>(FrameType::kBatch));
}

TEST(FrameHeader, Errors) {
  std::string ok;
  append_frame_header(ok, FrameType::kAck, 100);
  HeapBytes short_bytes(ok.substr(0, 7));
  EXPECT_FALSE(decode_frame_header(short_bytes.span(), 1000).ok());
  for (size_t i : {5u, 6u, 7u}) {
    std::string bad = ok;
    bad[i] = 1;
    HeapBytes b(bad);
    Result<FrameHeader> h = decode_frame_header(b.span(), 1000);
    ASSERT_FALSE(h.ok()) << i;
    EXPECT_EQ(h.error().code, Errc::kSyntax);
  }
  HeapBytes b(ok);
  Result<FrameHeader> too_long = decode_frame_header(b.span(), 99);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, Errc::kLimit);
  EXPECT_TRUE(decode_frame_header(b.span(), 100).ok());
  std::string huge;
  append_frame_header(huge, FrameType::kBatch, UINT32_MAX);
  HeapBytes hb(huge);
  EXPECT_FALSE(decode_frame_header(hb.span(), 64u << 20).ok());
}

TEST(Frame, AppendFrame) {
  std::string out;
  append_frame(out, FrameType::kEvent, "{}");
  EXPECT_EQ(out, std::string("\x00\x00\x00\x02\x05\x00\x00\x00{}", 10));
}

TEST(FieldReader, IteratesAndDetectsTruncation) {
  std::string payload = raw_field(1, "ab") + raw_field(0x8001, "") + raw_field(2, "xyz");
  // Every strict prefix that cuts a field is an error; the full payload is fine.
  for (size_t len = 0; len <= payload.size(); ++len) {
    HeapBytes bytes(payload.substr(0, len));
    FieldReader reader(bytes.view());
    Field f;
    size_t fields = 0;
    bool error = false;
    while (true) {
      Result<bool> more = reader.next(&f);
      if (!more.ok()) {
        error = true;
        break;
      }
      if (!*more) {
        break;
      }
      ++fields;
    }
    bool boundary = len == 0 || len == 8 || len == 14 || len == payload.size();
    EXPECT_EQ(error, !boundary) << len;
    if (len == payload.size()) {
      EXPECT_EQ(fields, 3u);
    }
  }
}

TEST(FieldReader, HugeLengthIsAnErrorNotAnOverRead) {
  std::string payload(
      "\x00\x01\xff\xff\xff\xff"
      "abc",
      9);
  HeapBytes bytes(payload);
  FieldReader reader(bytes.view());
  Field f;
  Result<bool> r = reader.next(&f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kSyntax);
}

TEST(FieldUint, Widths) {
  std::string p;
  append_field_u8(p, 1, 0xab);
  append_field_u16(p, 2, 0xabcd);
  append_field_u32(p, 3, 0xdeadbeef);
  append_field_u64(p, 4, 0x0102030405060708ull);
  FieldReader reader(p);
  Field f;
  const std::pair<size_t, uint64_t> expect[] = {
      {1, 0xab}, {2, 0xabcd}, {4, 0xdeadbeef}, {8, 0x0102030405060708ull}};
  for (const auto& [width, value] : expect) {
    ASSERT_TRUE(*reader.next(&f));
    Result<uint64_t> v = field_uint(f, width);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, value);
    EXPECT_FALSE(field_uint(f, width == 8 ? 4 : width * 2).ok());
  }
  EXPECT_FALSE(field_uint(Field{1, "abc"}, 3).ok());
}

TEST(Hello, RoundTrip) {
  Hello h;
  h.version_min = 1;
  h.version_max = 3;
  h.version = 2;
  h.peer_name = "platform-7";
  h.max_frame = 1u << 26;
  h.max_message = 1u << 25;
  h.max_recipients = 100000;
  std::string payload;
  encode_hello(payload, h);
  HeapBytes bytes(payload);
  Result<Hello> d = decode_hello(bytes.view());
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->version_min, 1);
  EXPECT_EQ(d->version_max, 3);
  EXPECT_EQ(d->version, 2);
  EXPECT_EQ(d->peer_name, "platform-7");
  EXPECT_EQ(d->max_frame, 1u << 26);
  EXPECT_EQ(d->max_message, 1u << 25);
  EXPECT_EQ(d->max_recipients, 100000u);
}

TEST(Hello, Errors) {
  std::string dup;
  append_field_u16(dup, tag::kVersionMin, 1);
  append_field_u16(dup, tag::kVersionMin, 1);
  EXPECT_FALSE(decode_hello(dup).ok());
  std::string wrong_width;
  append_field_u32(wrong_width, tag::kVersionMin, 1);
  EXPECT_FALSE(decode_hello(wrong_width).ok());
  std::string empty_range;
  append_field_u16(empty_range, tag::kVersionMin, 3);
  append_field_u16(empty_range, tag::kVersionMax, 2);
  EXPECT_FALSE(decode_hello(empty_range).ok());
  std::string unknown = raw_field(0x0099, "x");
  Result<Hello> u = decode_hello(unknown);
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message.find("0x0099"), std::string::npos);
  std::string optional = raw_field(0x8099, "x");
  EXPECT_TRUE(decode_hello(optional).ok());
}

BatchView sample_batch() {
  BatchView b;
  b.batch_id = "batch-42";
  b.sender = "bounce@example.com";
  b.has_sender = true;
  b.message = "Subject: hi\r\n\r\nbody\r\n";
  b.recipients = {"a@example.org", "b@example.net", ""};
  b.options = {"campaign=7", "priority=high"};
  return b;
}

TEST(Batch, RoundTrip) {
  BatchView b = sample_batch();
  std::string payload;
  encode_batch(payload, b);
  HeapBytes bytes(payload);
  Result<BatchView> d = decode_batch(bytes.view(), BatchLimits{});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->batch_id, b.batch_id);
  EXPECT_EQ(d->sender, b.sender);
  EXPECT_TRUE(d->has_sender);
  EXPECT_EQ(d->message, b.message);
  EXPECT_EQ(d->recipients, b.recipients);
  EXPECT_EQ(d->options, b.options);
  // Views point into the payload buffer, never into copies.
  EXPECT_GE(d->message.data(), bytes.view().data());
  EXPECT_LE(d->message.data() + d->message.size(), bytes.view().data() + bytes.view().size());
}

TEST(Batch, NullSenderAndNoBatchId) {
  BatchView b;
  b.has_sender = true;
  b.message = "";
  b.recipients = {"x@y.example"};
  std::string payload;
  encode_batch(payload, b);
  Result<BatchView> d = decode_batch(payload, BatchLimits{});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->has_sender);
  EXPECT_TRUE(d->sender.empty());
  EXPECT_TRUE(d->batch_id.empty());
}

TEST(Batch, StructuralErrors) {
  struct Case {
    const char* name;
    std::string payload;
    const char* message;
  };
  std::string sender = raw_field(tag::kSender, "s@x.example");
  std::string message = raw_field(tag::kMessage, "body");
  std::string rcpt = raw_field(tag::kRecipient, "r@x.example");
  const Case cases[] = {
      {"missing sender", message + rcpt, "missing sender"},
      {"missing message", sender + rcpt, "missing message"},
      {"no recipients", sender + message, "no recipients"},
      {"duplicate sender", sender + sender + message + rcpt, "duplicate"},
      {"duplicate message", sender + message + message + rcpt, "duplicate"},
      {"duplicate batch id",
       raw_field(tag::kBatchId, "a") + raw_field(tag::kBatchId, "b") + sender + message + rcpt,
       "duplicate"},
      {"empty batch id", raw_field(tag::kBatchId, "") + sender + message + rcpt, "batch id"},
      {"long batch id", raw_field(tag::kBatchId, std::string(129, 'a')) + sender + message + rcpt,
       "batch id"},
      {"batch id with space", raw_field(tag::kBatchId, "a b") + sender + message + rcpt,
       "batch id"},
      {"batch id with newline", raw_field(tag::kBatchId, "a\n") + sender + message + rcpt,
       "batch id"},
      {"unknown mandatory", sender + message + rcpt + raw_field(0x0777, "x"), "0x0777"},
      {"ack field in batch", sender + message + rcpt + raw_field(tag::kSeq, "12345678"), "0x0020"},
      {"truncated field", sender + message + rcpt.substr(0, rcpt.size() - 1), "exceeds"},
      {"truncated header", sender + message + rcpt + std::string("\x00\x13\x00", 3), "truncated"},
  };
  for (const Case& c : cases) {
    HeapBytes bytes(c.payload);
    Result<BatchView> d = decode_batch(bytes.view(), BatchLimits{});
    ASSERT_FALSE(d.ok()) << c.name;
    EXPECT_NE(d.error().message.find(c.message), std::string::npos)
        << c.name << ": " << d.error().message;
  }
  EXPECT_TRUE(decode_batch(sender + message + rcpt + raw_field(0x8777, "x"), BatchLimits{}).ok());
  EXPECT_TRUE(
      decode_batch(raw_field(tag::kBatchId, std::string(128, 'a')) + sender + message + rcpt,
                   BatchLimits{})
          .ok());
}

TEST(Batch, Limits) {
  BatchLimits limits;
  limits.max_message = 4;
  limits.max_recipients = 2;
  std::string base = raw_field(tag::kSender, "");
  std::string r = raw_field(tag::kRecipient, "x@y");
  EXPECT_TRUE(decode_batch(base + raw_field(tag::kMessage, "1234") + r + r, limits).ok());
  Result<BatchView> big = decode_batch(base + raw_field(tag::kMessage, "12345") + r, limits);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::kLimit);
  Result<BatchView> many = decode_batch(base + raw_field(tag::kMessage, "1") + r + r + r, limits);
  ASSERT_FALSE(many.ok());
  EXPECT_EQ(many.error().code, Errc::kLimit);
  EXPECT_NE(many.error().message.find("more than 2 recipients"), std::string::npos);
}

TEST(Batch, RecipientVarsAndUnsubscribedRoundTrip) {
  BatchView b = sample_batch();
  // Variables for the first and third recipient only; values are opaque bytes.
  b.recipient_vars = {std::string_view("\x04name\x00\x00\x00\x03"
                                       "Ann",
                                       12),
                      "", std::string_view("\x01x\x00\x00\x00\x00", 6)};
  b.unsubscribed = {"gone@example.org", "left@example.net"};
  std::string payload;
  encode_batch(payload, b);
  HeapBytes bytes(payload);
  Result<BatchView> d = decode_batch(bytes.view(), BatchLimits{});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->recipients, b.recipients);
  ASSERT_EQ(d->recipient_vars.size(), 3u);
  EXPECT_EQ(d->recipient_vars[0], b.recipient_vars[0]);
  EXPECT_TRUE(d->recipient_vars[1].empty());
  EXPECT_EQ(d->recipient_vars[2], b.recipient_vars[2]);
  EXPECT_EQ(d->unsubscribed, b.unsubscribed);
  EXPECT_EQ(d->options, b.options);
  // Without any variables the parallel vector stays empty.
  BatchView plain = sample_batch();
  std::string p2;
  encode_batch(p2, plain);
  Result<BatchView> d2 = decode_batch(p2, BatchLimits{});
  ASSERT_TRUE(d2.ok());
  EXPECT_TRUE(d2->recipient_vars.empty());
  EXPECT_TRUE(d2->unsubscribed.empty());
}

TEST(Batch, RecipientVarsBelongToThePrecedingRecipient) {
  std::string head = raw_field(tag::kSender, "") + raw_field(tag::kMessage, "m");
  std::string r1 = raw_field(tag::kRecipient, "a@x");
  std::string r2 = raw_field(tag::kRecipient, "b@x");
  std::string v1 = raw_field(tag::kRecipientVars, "V1");
  std::string v2 = raw_field(tag::kRecipientVars, "V2");
  // Vars after the second recipient only: the first gets an empty entry.
  // The views point into the payload: keep each payload alive.
  const std::string p1 = head + r1 + r2 + v2;
  Result<BatchView> d = decode_batch(p1, BatchLimits{});
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_EQ(d->recipient_vars.size(), 2u);
  EXPECT_EQ(d->recipient_vars[0], "");
  EXPECT_EQ(d->recipient_vars[1], "V2");
  // Other fields may come between a recipient and its vars.
  const std::string p2 = head + r1 + raw_field(tag::kOption, "template=on") + v1 + r2;
  d = decode_batch(p2, BatchLimits{});
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_EQ(d->recipient_vars.size(), 2u);
  EXPECT_EQ(d->recipient_vars[0], "V1");
  EXPECT_EQ(d->recipient_vars[1], "");
  Result<BatchView> first = decode_batch(head + v1 + r1, BatchLimits{});
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.error().message.find("before any recipient"), std::string::npos);
  Result<BatchView> twice = decode_batch(head + r1 + v1 + v2 + r2, BatchLimits{});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message.find("second recipient_vars field for recipient #0"),
            std::string::npos)
      << twice.error().message;
  // A new recipient resets the rule.
  EXPECT_TRUE(decode_batch(head + r1 + v1 + r2 + v2, BatchLimits{}).ok());
  // Split at every byte: each strict prefix is an error or a shorter batch,
  // never an over-read (ASan checks the exact-size buffers).
  std::string full = head + r1 + v1 + r2 + v2 + raw_field(tag::kUnsubscribed, "u@x");
  for (size_t len = 0; len < full.size(); ++len) {
    HeapBytes part(full.substr(0, len));
    (void)decode_batch(part.view(), BatchLimits{});
  }
}

TEST(Batch, UnsubscribedLimit) {
  BatchLimits limits;
  limits.max_unsubscribed = 2;
  std::string base = raw_field(tag::kSender, "") + raw_field(tag::kMessage, "m") +
                     raw_field(tag::kRecipient, "a@x");
  std::string u = raw_field(tag::kUnsubscribed, "u@x");
  const std::string p2 = base + u + u;
  Result<BatchView> two = decode_batch(p2, limits);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->unsubscribed.size(), 2u);
  Result<BatchView> three = decode_batch(base + u + u + u, limits);
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.error().code, Errc::kLimit);
}

TEST(Ack, RoundTrip) {
  Ack a;
  a.seq = 0x1122334455667788ull;
  a.batch_id = "b-1";
  a.status = AckStatus::kAccepted;
  a.accepted = 2;
  a.rejections = {{1, RejectReason::kInvalidAddress, "local part longer than 64 octets"},
                  {3, RejectReason::kSuppressed, ""}};
  a.reason = "partial";
  std::string payload;
  encode_ack(payload, a);
  HeapBytes bytes(payload);
  Result<Ack> d = decode_ack(bytes.view());
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->seq, a.seq);
  EXPECT_EQ(d->batch_id, a.batch_id);
  EXPECT_EQ(d->status, a.status);
  EXPECT_EQ(d->accepted, 2u);
  ASSERT_EQ(d->rejections.size(), 2u);
  EXPECT_EQ(d->rejections[0].index, 1u);
  EXPECT_EQ(d->rejections[0].reason, RejectReason::kInvalidAddress);
  EXPECT_EQ(d->rejections[0].text, "local part longer than 64 octets");
  EXPECT_EQ(d->rejections[1].index, 3u);
  EXPECT_EQ(d->rejections[1].reason, RejectReason::kSuppressed);
  EXPECT_EQ(d->reason, "partial");
}

TEST(Ack, Errors) {
  std::string seq;
  append_field_u64(seq, tag::kSeq, 1);
  std::string status;
  append_field_u8(status, tag::kStatus, 0);
  EXPECT_TRUE(decode_ack(seq + status).ok());
  EXPECT_FALSE(decode_ack(status).ok());
  EXPECT_FALSE(decode_ack(seq).ok());
  EXPECT_FALSE(decode_ack(seq + seq + status).ok());
  std::string bad_status;
  append_field_u8(bad_status, tag::kStatus, 9);
  EXPECT_FALSE(decode_ack(seq + bad_status).ok());
  EXPECT_FALSE(decode_ack(seq + status + raw_field(tag::kRejected, "12345")).ok());
  EXPECT_FALSE(decode_ack(seq + status + raw_field(0x0042, "")).ok());
  EXPECT_TRUE(decode_ack(seq + status + raw_field(0x8042, "")).ok());
  std::string seq_short = raw_field(tag::kSeq, "1234");
  EXPECT_FALSE(decode_ack(seq_short + status).ok());
}

TEST(Names, AckStatusAndRejectReason) {
  EXPECT_EQ(ack_status_name(AckStatus::kAccepted), "accepted");
  EXPECT_EQ(ack_status_name(AckStatus::kRejected), "rejected");
  EXPECT_EQ(ack_status_name(AckStatus::kTryLater), "try_later");
  EXPECT_EQ(ack_status_name(AckStatus::kSpoolUnavailable), "spool_unavailable");
  EXPECT_EQ(ack_status_name(static_cast<AckStatus>(77)), "unknown");
  EXPECT_EQ(reject_reason_name(RejectReason::kInvalidAddress), "invalid_address");
  EXPECT_EQ(reject_reason_name(RejectReason::kDuplicate), "duplicate");
  EXPECT_EQ(reject_reason_name(RejectReason::kSuppressed), "suppressed");
  EXPECT_EQ(reject_reason_name(RejectReason::kPolicy), "policy");
  EXPECT_EQ(reject_reason_name(RejectReason::kTemplate), "template");
  EXPECT_EQ(reject_reason_name(static_cast<RejectReason>(999)), "unknown");
}

}  // namespace
}  // namespace ringmail::proto
