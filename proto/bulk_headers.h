/// bulk_headers.h — header fields ringmail adds to a batch's message once,
/// at acceptance, before it is signed: what bulk senders need (RFC 2369
/// List-Unsubscribe, RFC 8058 one-click unsubscription, Feedback-ID) and
/// the Date and Message-ID fields RFC 5322 3.6 wants when the platform
/// sent none.
///
/// Placement: the fields go at the end of the header section, just before
/// the empty line, in this order: Date, Message-ID, List-Unsubscribe,
/// List-Unsubscribe-Post, Feedback-ID. Nothing else of the message changes.
/// A List-Unsubscribe URI may hold template placeholders ({{token}}, see
/// proto/template.h): they are ordinary bytes here and rendered per
/// recipient later.
///
/// Values come from batch options (untrusted platform input): the
/// validators below refuse anything that could break a header line (CR,
/// LF, NUL, controls, '<' and '>' in URIs) and bound the lengths so the
/// added lines stay under RFC 5322's 998-octet limit.
/// Thread safety: pure functions.
/// See also: docs/protocol.md (batch options), engine/message.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proto/result.h"

namespace ringmail::proto {

/// Longest List-Unsubscribe URI accepted (each goes on its own line).
inline constexpr size_t kMaxUnsubscribeUri = 900;
/// Longest Feedback-ID value accepted.
inline constexpr size_t kMaxFeedbackId = 200;

struct BulkHeaderOptions {
  /// Date: added when the message has no Date field (`date_s`: seconds
  /// since the epoch, written in UTC).
  bool add_date = false;
  int64_t date_s = 0;
  /// Message-ID: added when the message has none ("<...>", see
  /// make_message_id()).
  std::string_view message_id;
  /// List-Unsubscribe with these URIs (either may be empty), and with an
  /// https URI also "List-Unsubscribe-Post: List-Unsubscribe=One-Click".
  std::string_view list_unsubscribe;         // https://...
  std::string_view list_unsubscribe_mailto;  // mailto:...
  std::string_view feedback_id;
};

/// An https URI for List-Unsubscribe (RFC 8058 2: one-click needs HTTPS):
/// "https://" then 1..kMaxUnsubscribeUri printable ASCII bytes in all,
/// without SP, '<', '>' or '"'.
Result<void> validate_unsubscribe_https(std::string_view uri);
/// A mailto URI for List-Unsubscribe: "mailto:" and the same byte rules.
Result<void> validate_unsubscribe_mailto(std::string_view uri);
/// A Feedback-ID value: 1..kMaxFeedbackId printable ASCII bytes (SP
/// allowed inside), no leading or trailing SP.
Result<void> validate_feedback_id(std::string_view value);

/// Adds the fields `o` asks for to the CRLF-normalised message `msg`, in
/// place, and returns the number of bytes added. Errors: the header
/// section does not parse (a line that is neither a field nor a
/// continuation), or the message already has a List-Unsubscribe,
/// List-Unsubscribe-Post or Feedback-ID field while `o` adds that field
/// (two would be ambiguous, and a verifier would see the wrong one). With
/// only Date and Message-ID to add, an unparsable header section is left
/// alone and 0 returned: those two are courtesy, not a request.
Result<size_t> add_bulk_headers(std::string& msg, const BulkHeaderOptions& o);

/// RFC 5322 3.3 date-time in UTC: "Thu, 01 Jan 2026 00:00:00 +0000".
std::string format_rfc5322_date(int64_t unix_s);

/// "<left.TOKEN@domain>": `left` is `id` with every byte other than
/// [A-Za-z0-9_-] replaced by '_' (at most 64 bytes of it), TOKEN is
/// `token` in 16 hex digits; `domain` must be an ASCII host name (else
/// "ringmail.invalid" is used).
std::string make_message_id(std::string_view id, uint64_t token, std::string_view domain);

}  // namespace ringmail::proto
