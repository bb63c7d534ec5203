/// batch_wire.h — the ringmail batch protocol codec (docs/protocol.md is
/// the normative description; this header mirrors it).
///
/// Frames: an 8-byte header (u32 big-endian payload length, u8 type,
/// u8 flags = 0, u16 reserved = 0) followed by the payload. Most payloads
/// are a sequence of fields: u16 tag, u32 length, bytes (big-endian). A tag
/// with bit 0x8000 set is optional: receivers skip it when unknown; any
/// other unknown tag makes the frame invalid.
///
/// Decoding never copies: views point into the caller's payload buffer,
/// which must outlive them. Every length is checked against the payload
/// bounds before use (threat: a length prefix of 2^32-1, or a count that
/// does not match the bytes, must be a typed error, not an over-read).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderSize = 8;

enum class FrameType : uint8_t {
  kHello = 0x01,         // both directions
  kBatch = 0x02,         // client -> server
  kAck = 0x03,           // server -> client, one per batch, in order
  kSubscribe = 0x04,     // client -> server
  kEvent = 0x05,         // server -> client, payload: one JSON object
  kError = 0x06,         // server -> client, payload: UTF-8 text; server closes
  kControl = 0x07,       // client -> server, payload: command line text
  kControlReply = 0x08,  // server -> client, payload: one JSON object
};

namespace tag {
inline constexpr uint16_t kVersionMin = 0x0001;     // u16
inline constexpr uint16_t kVersionMax = 0x0002;     // u16
inline constexpr uint16_t kPeerName = 0x0003;       // text
inline constexpr uint16_t kVersion = 0x0004;        // u16 (server's choice)
inline constexpr uint16_t kMaxFrame = 0x0005;       // u32
inline constexpr uint16_t kMaxMessage = 0x0006;     // u32
inline constexpr uint16_t kMaxRecipients = 0x0007;  // u32
inline constexpr uint16_t kBatchId = 0x0010;        // text, 1..128 printable ASCII
inline constexpr uint16_t kSender = 0x0011;         // bare address, may be empty
inline constexpr uint16_t kMessage = 0x0012;        // raw RFC 5322 bytes
inline constexpr uint16_t kRecipient = 0x0013;      // bare address, repeated
inline constexpr uint16_t kOption = 0x0014;         // "name=value", repeated
inline constexpr uint16_t kRecipientVars = 0x0015;  // the preceding recipient's variables
inline constexpr uint16_t kUnsubscribed = 0x0016;   // bare address, repeated
inline constexpr uint16_t kSeq = 0x0020;            // u64
inline constexpr uint16_t kStatus = 0x0021;         // u8 AckStatus
inline constexpr uint16_t kAccepted = 0x0022;       // u32
inline constexpr uint16_t kRejected = 0x0023;       // u32 index, u16 reason, text
inline constexpr uint16_t kReason = 0x0024;         // text
inline constexpr uint16_t kScope = 0x0030;          // u8 SubscribeScope
inline constexpr uint16_t kOptionalBit = 0x8000;
}  // namespace tag

inline constexpr size_t kMaxBatchId = 128;

struct FrameHeader {
  uint32_t length = 0;
  uint8_t type = 0;  // FrameType value; unknown types are the caller's decision
};

/// Decodes a frame header; error when flags/reserved are not zero or the
/// length exceeds `max_length`.
Result<FrameHeader> decode_frame_header(std::span<const char> header, uint32_t max_length);
void append_frame_header(std::string& out, FrameType type, uint32_t length);
/// Appends a complete frame whose payload is `payload`.
void append_frame(std::string& out, FrameType type, std::string_view payload);

struct Field {
  uint16_t tag = 0;
  std::string_view value;
};

/// Iterates the fields of a payload.
class FieldReader {
 public:
  explicit FieldReader(std::string_view payload) : rest_(payload) {}
  /// true and fills `field` when one is available; false at the clean end;
  /// an error when the remaining bytes cannot hold the announced field.
  Result<bool> next(Field* field);

 private:
  std::string_view rest_;
};

void append_field(std::string& out, uint16_t tag, std::string_view value);
void append_field_u8(std::string& out, uint16_t tag, uint8_t v);
void append_field_u16(std::string& out, uint16_t tag, uint16_t v);
void append_field_u32(std::string& out, uint16_t tag, uint32_t v);
void append_field_u64(std::string& out, uint16_t tag, uint64_t v);
/// Fixed-width big-endian field values; error when the size is wrong.
Result<uint64_t> field_uint(const Field& f, size_t width);

struct Hello {
  uint16_t version_min = kProtocolVersion;
  uint16_t version_max = kProtocolVersion;
  uint16_t version = 0;  // server reply only
  std::string_view peer_name;
  uint32_t max_frame = 0;       // server reply only
  uint32_t max_message = 0;     // server reply only
  uint32_t max_recipients = 0;  // server reply only
};
/// Payload only (no frame header).
void encode_hello(std::string& out, const Hello& hello);
Result<Hello> decode_hello(std::string_view payload);

struct BatchLimits {
  uint32_t max_message = 32u << 20;
  uint32_t max_recipients = 1'000'000;
  /// Unsubscribed addresses per batch. Threat: each one is a suppression
  /// list write; bounded like recipients.
  uint32_t max_unsubscribed = 1'000'000;
};

struct BatchView {
  std::string_view batch_id;  // empty when the client sent none
  std::string_view sender;
  bool has_sender = false;
  std::string_view message;
  std::vector<std::string_view> recipients;
  /// Per-recipient personalisation variables (proto/template.h encoding),
  /// parallel to `recipients`: empty when the batch has no recipient_vars
  /// field at all; otherwise one entry per recipient, empty for a recipient
  /// without one. The codec does not look inside the values.
  std::vector<std::string_view> recipient_vars;
  /// Addresses the platform reports as unsubscribed (suppressed for future
  /// batches). Not validated here.
  std::vector<std::string_view> unsubscribed;
  std::vector<std::string_view> options;  // "name=value"
};

/// Decodes a BATCH payload. Structural errors (missing sender or message,
/// message over the limit, no recipients, too many recipients, bad batch id,
/// unknown mandatory field, truncated field) are returned as errors whose
/// message is fit for the ACK's reason text. Addresses are NOT validated
/// here; the engine does that per recipient. A recipient_vars field belongs
/// to the last recipient field before it: one with no recipient before it,
/// or a second one for the same recipient, is an error.
Result<BatchView> decode_batch(std::string_view payload, const BatchLimits& limits);
void encode_batch(std::string& out, const BatchView& batch);

enum class AckStatus : uint8_t {
  kAccepted = 0,          // some or all recipients accepted (see accepted/rejected)
  kRejected = 1,          // the whole batch was refused (reason says why)
  kTryLater = 2,          // back-pressure: nothing accepted, send again later
  kSpoolUnavailable = 3,  // the spool cannot make it durable now; nothing accepted
};

enum class RejectReason : uint16_t {
  kInvalidAddress = 1,
  kDuplicate = 2,
  kSuppressed = 3,
  kPolicy = 4,
  kTemplate = 5,  // personalisation: a missing or malformed variable
};

struct Rejection {
  uint32_t index = 0;  // position of the recipient in the batch
  RejectReason reason = RejectReason::kInvalidAddress;
  std::string text;
};

struct Ack {
  uint64_t seq = 0;
  std::string batch_id;
  AckStatus status = AckStatus::kAccepted;
  uint32_t accepted = 0;
  std::vector<Rejection> rejections;
  std::string reason;
};

void encode_ack(std::string& out, const Ack& ack);
Result<Ack> decode_ack(std::string_view payload);

std::string_view ack_status_name(AckStatus s);
std::string_view reject_reason_name(RejectReason r);

}  // namespace ringmail::proto
