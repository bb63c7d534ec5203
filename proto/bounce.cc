#include "proto/bounce.h"

#include <span>

#include "proto/bulk_headers.h"

namespace ringmail::proto {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

bool has_any(const std::string& text, std::span<const std::string_view> words) {
  for (std::string_view w : words) {
    if (text.find(w) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// Phrases receivers put in otherwise generic replies (550 5.0.0, 554 ...).
constexpr std::string_view kNoMailbox[] = {"user unknown",
                                           "unknown user",
                                           "no such user",
                                           "does not exist",
                                           "mailbox unavailable",
                                           "recipient unknown",
                                           "unknown recipient",
                                           "no mailbox",
                                           "invalid recipient",
                                           "address rejected",
                                           "not found",
                                           "no longer available",
                                           "disabled",
                                           "inactive"};
constexpr std::string_view kFull[] = {"mailbox full",    "quota",
                                      "over quota",      "insufficient storage",
                                      "mailbox is full", "exceeded storage"};
constexpr std::string_view kThrottle[] = {
    "too many",  "rate limit",           "ratelimit", "throttl",           "try again later",
    "try later", "temporarily deferred", "slow down", "exceeded the rate", "too fast",
    "[ts0"};
constexpr std::string_view kPolicy[] = {
    "spam",        "blocked",    "blacklist", "blocklist", "block list", "black list",
    "policy",      "reputation", "dmarc",     "spf",       "dkim",       "authentication",
    "not allowed", "denied",     "listed",    "rbl",       "abuse"};
constexpr std::string_view kContent[] = {
    "content",    "virus",    "malware",   "attachment", "message rejected",
    "suspicious", "phishing", "too large", "size"};

}  // namespace

std::string_view failure_class_name(FailureClass c) {
  switch (c) {
    case FailureClass::kNone:
      return "none";
    case FailureClass::kInvalidRecipient:
      return "invalid_recipient";
    case FailureClass::kInvalidDomain:
      return "invalid_domain";
    case FailureClass::kMailboxFull:
      return "mailbox_full";
    case FailureClass::kPolicyBlock:
      return "policy_block";
    case FailureClass::kContentRejected:
      return "content_rejected";
    case FailureClass::kRateLimited:
      return "rate_limited";
    case FailureClass::kDnsFailure:
      return "dns_failure";
    case FailureClass::kTlsFailure:
      return "tls_failure";
    case FailureClass::kConnection:
      return "connection";
    case FailureClass::kExpired:
      return "expired";
    case FailureClass::kDropped:
      return "dropped";
    case FailureClass::kOther:
      return "other";
  }
  return "other";
}

bool is_throttling_reply(uint16_t code, std::string_view enhanced, std::string_view text) {
  if (code == 421) {
    return true;
  }
  if (code < 400 || code >= 600) {
    return false;
  }
  std::string t = lower(text);
  if (has_any(t, kThrottle)) {
    return true;
  }
  // 4.7.0/4.7.1 are what Gmail and Outlook use for "unusual rate" deferrals.
  return code < 500 && (enhanced == "4.7.0" || enhanced == "4.7.1" || enhanced == "4.7.28");
}

bool is_greylisting_reply(uint16_t code, std::string_view text) {
  if (code < 400 || code >= 500) {
    return false;
  }
  static constexpr std::string_view kGrey[] = {"greylist",  "graylist",  "grey-list",
                                               "gray-list", "grey list", "gray list"};
  return has_any(lower(text), kGrey);
}

FailureClass classify_failure(uint16_t code, std::string_view enhanced, std::string_view text,
                              FailureStage stage) {
  switch (stage) {
    case FailureStage::kExpiry:
      return FailureClass::kExpired;
    case FailureStage::kOperator:
      return FailureClass::kDropped;
    case FailureStage::kTls:
      return FailureClass::kTlsFailure;
    case FailureStage::kDns:
      return code >= 500 ? FailureClass::kInvalidDomain : FailureClass::kDnsFailure;
    case FailureStage::kConnection:
      return is_throttling_reply(code, enhanced, text) ? FailureClass::kRateLimited
                                                       : FailureClass::kConnection;
    case FailureStage::kSmtp:
      break;
  }
  if (code >= 200 && code < 300) {
    return FailureClass::kNone;
  }
  std::string t = lower(text);
  // Enhanced status subjects and details (RFC 3463).
  if (enhanced.size() >= 5 && enhanced[1] == '.') {
    std::string_view sd = enhanced.substr(2);  // "1.1"
    if (sd == "1.1" || sd == "1.0" || sd == "1.6" || sd == "2.1" || sd == "1.3") {
      return sd == "2.1" && has_any(t, kFull) ? FailureClass::kMailboxFull
                                              : FailureClass::kInvalidRecipient;
    }
    // RFC 3463 X.4.1 "no answer from host", X.4.2 "bad connection", and
    // protocol errors (X.5.x said to be one): the connection failed,
    // whatever step the session was at.
    if (sd == "4.1" || sd == "4.2" ||
        (enhanced[2] == '5' && t.find("protocol error") != std::string::npos)) {
      return FailureClass::kConnection;
    }
    if (sd == "1.2" || sd == "1.10" || sd == "4.4") {
      return FailureClass::kInvalidDomain;
    }
    if (sd == "2.2" || (sd == "2.3" && has_any(t, kFull))) {
      return FailureClass::kMailboxFull;
    }
    if (sd == "4.7") {
      return FailureClass::kExpired;
    }
    if (enhanced[2] == '6' || sd == "3.4") {
      return FailureClass::kContentRejected;
    }
    if (enhanced[2] == '7') {
      if (is_throttling_reply(code, enhanced, text)) {
        return FailureClass::kRateLimited;
      }
      if (has_any(t, kContent) && !has_any(t, kPolicy)) {
        return FailureClass::kContentRejected;
      }
      if (sd == "7.28" || has_any(t, kThrottle)) {
        return FailureClass::kRateLimited;
      }
      return FailureClass::kPolicyBlock;
    }
  }
  // Generic codes: the words decide.
  if (is_throttling_reply(code, enhanced, text)) {
    return FailureClass::kRateLimited;
  }
  if (has_any(t, kFull)) {
    return FailureClass::kMailboxFull;
  }
  if (has_any(t, kNoMailbox)) {
    return FailureClass::kInvalidRecipient;
  }
  if (has_any(t, kPolicy)) {
    return FailureClass::kPolicyBlock;
  }
  if (has_any(t, kContent)) {
    return FailureClass::kContentRejected;
  }
  if (code == 552) {
    return FailureClass::kContentRejected;  // RFC 5321: exceeded storage allocation / size
  }
  return FailureClass::kOther;
}

std::string_view header_section(std::string_view message, size_t max) {
  size_t end = message.find("\r\n\r\n");
  size_t len = end == std::string_view::npos ? message.size() : end + 4;
  if (len > max) {
    // Cut at the last complete line within the cap.
    size_t cut = message.rfind("\r\n", max);
    len = cut == std::string_view::npos ? 0 : cut + 2;
  }
  return message.substr(0, len);
}

std::string rfc5322_date(int64_t unix_seconds) {
  // Not strftime: its %a and %b follow LC_TIME, which an embedding
  // application may have set to a language other than English.
  return format_rfc5322_date(unix_seconds);
}

void build_dsn(std::string& out, const DsnInput& in) {
  auto line = [&out](std::string_view a, std::string_view b = {}) {
    out.append(a);
    out.append(b);
    out.append("\r\n");
  };
  line("From: Mail Delivery System <MAILER-DAEMON@", in.reporting_mta + ">");
  line("To: <", in.to + ">");
  line("Subject: Undelivered Mail Returned to Sender");
  line("Date: ", in.date);
  line("Message-ID: ", in.message_id);
  line("Auto-Submitted: auto-replied");
  line("MIME-Version: 1.0");
  line("Content-Type: multipart/report; report-type=delivery-status;");
  line("\tboundary=\"", in.boundary + "\"");
  line("");
  line("This is a MIME-encapsulated message.");
  line("");
  line("--", in.boundary);
  line("Content-Description: Notification");
  line("Content-Type: text/plain; charset=utf-8");
  line("");
  line("This is the mail system at host ", in.reporting_mta + ".");
  line("");
  line("Your message could not be delivered to one or more recipients.");
  line("");
  for (const auto& r : in.recipients) {
    line("<", r.recipient + ">: " + (r.diagnostic.empty() ? r.status : r.diagnostic));
  }
  line("");
  line("--", in.boundary);
  line("Content-Description: Delivery report");
  line("Content-Type: message/delivery-status");
  line("");
  line("Reporting-MTA: dns; ", in.reporting_mta);
  if (!in.envelope_id.empty()) {
    line("X-Ringmail-Batch: ", in.envelope_id);
  }
  if (!in.arrival_date.empty()) {
    line("Arrival-Date: ", in.arrival_date);
  }
  for (const auto& r : in.recipients) {
    line("");
    line("Final-Recipient: rfc822; ", r.recipient);
    line("Action: ", r.action);
    line("Status: ", r.status);
    if (!r.remote_mta.empty()) {
      line("Remote-MTA: dns; ", r.remote_mta);
    }
    if (!r.diagnostic.empty()) {
      line("Diagnostic-Code: smtp; ", r.diagnostic);
    }
    if (!r.last_attempt_date.empty()) {
      line("Last-Attempt-Date: ", r.last_attempt_date);
    }
  }
  line("");
  line("--", in.boundary);
  line("Content-Description: Undelivered Message Headers");
  line("Content-Type: text/rfc822-headers");
  line("");
  std::string_view headers = header_section(in.original);
  out.append(headers);
  if (!headers.ends_with("\r\n")) {
    out.append("\r\n");
  }
  line("");
  line("--", in.boundary + "--");
}

}  // namespace ringmail::proto
