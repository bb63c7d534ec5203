/// bounce.h — what a failure means for the sender, and the RFC 3464
/// delivery status notification that reports it.
///
/// classify_failure() maps an SMTP reply (code, RFC 3463 enhanced status,
/// text) and the stage it came from to one of a fixed set of classes that
/// platforms act on: suppress invalid recipients and domains, slow down on
/// rate limiting, look at content on content rejections. Order of evidence:
/// the stage (DNS, TLS, expiry are decided by where the failure happened),
/// then the enhanced status code (RFC 3463 subjects and details), then
/// well-known phrases of the big receivers when the code is generic.
///
/// build_dsn() writes a complete multipart/report message (RFC 3464, RFC
/// 6522) with one per-recipient block per failed recipient and the
/// original message's headers (text/rfc822-headers), ready to be queued to
/// the envelope sender from the null reverse-path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::proto {

enum class FailureClass : uint8_t {
  kNone,              // not a failure (delivered)
  kInvalidRecipient,  // 5.1.1 and friends: the mailbox does not exist
  kInvalidDomain,     // NXDOMAIN, null MX, no usable mail server, 5.1.2
  kMailboxFull,       // 4.2.2 / 5.2.2, quota
  kPolicyBlock,       // 5.7.x, spam, blocklists, authentication (DMARC/SPF)
  kContentRejected,   // 5.6.x, message content, virus, size (5.3.4)
  kRateLimited,       // 421, 4.7.0/4.7.1 with throttling words, "too many"
  kDnsFailure,        // temporary DNS trouble
  kTlsFailure,        // TLS required but not possible, handshake failure
  kConnection,        // refused, reset, timeout, protocol error
  kExpired,           // gave up after retry.max_age (5.4.7)
  kDropped,           // removed by an operator
  kOther,
};

std::string_view failure_class_name(FailureClass c);

enum class FailureStage : uint8_t { kSmtp, kDns, kTls, kConnection, kExpiry, kOperator };

/// `enhanced` is "x.y.z" or empty. `text` is the reply text (any case).
FailureClass classify_failure(uint16_t code, std::string_view enhanced, std::string_view text,
                              FailureStage stage);

/// True when a reply says "slow down" rather than "no": 421, or 4xx/5xx
/// with throttling words or 4.7.x codes that the big receivers use for
/// rate limits. Input to adaptive backoff.
bool is_throttling_reply(uint16_t code, std::string_view enhanced, std::string_view text);

/// True when a temporary reply says the recipient is greylisted ("greylisted",
/// "graylisted", "grey-listed", …): a verdict on one sender/recipient pair
/// that a later retry passes, never a reason to slow the whole destination.
bool is_greylisting_reply(uint16_t code, std::string_view text);

struct DsnRecipient {
  std::string recipient;          // final recipient address
  std::string status;             // RFC 3463, e.g. "5.1.1"
  std::string remote_mta;         // host name of the server that answered, or empty
  std::string diagnostic;         // the reply, e.g. "550 5.1.1 user unknown", or empty
  std::string action = "failed";  // failed | delayed
  std::string last_attempt_date;  // RFC 5322 date of the last attempt; empty: none was made
};

struct DsnInput {
  std::string reporting_mta;  // our host name
  std::string to;             // the envelope sender the report goes to
  std::string envelope_id;    // batch id (X-Ringmail-Batch)
  std::string arrival_date;   // RFC 5322 date of acceptance
  std::string date;           // RFC 5322 date now (the report's Date field)
  std::string message_id;     // "<...@host>"
  std::string boundary;       // unique MIME boundary (no quotes, no spaces)
  std::vector<DsnRecipient> recipients;
  std::string_view original;  // the original message (headers are copied)
};

/// Appends the complete report message (CRLF line ends) to `out`.
void build_dsn(std::string& out, const DsnInput& in);

/// The header section of a message (up to and including the empty line),
/// or all of it when there is no body; capped at `max` bytes.
std::string_view header_section(std::string_view message, size_t max = 64 * 1024);

/// RFC 5322 date-time for a Unix time in seconds (UTC): "Thu, 26 Nov 2026
/// 10:00:00 +0000". English names whatever the process's locale.
std::string rfc5322_date(int64_t unix_seconds);

}  // namespace ringmail::proto
