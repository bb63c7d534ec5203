#include "proto/bulk_headers.h"

#include <time.h>

#include <cstdio>

#include "proto/dkim.h"
#include "proto/text_util.h"

namespace ringmail::proto {
namespace {

using internal::iequals;

Result<void> validate_uri(std::string_view uri, std::string_view scheme, std::string_view what) {
  if (uri.size() <= scheme.size() || !iequals(uri.substr(0, scheme.size()), scheme)) {
    return make_error(Errc::kInvalidArgument,
                      std::string(what) + " must start with \"" + std::string(scheme) + "\"");
  }
  if (uri.size() > kMaxUnsubscribeUri) {
    return make_error(Errc::kLimit, std::string(what) + " is longer than " +
                                        std::to_string(kMaxUnsubscribeUri) + " bytes");
  }
  for (char c : uri) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '<' || c == '>' || c == '"') {
      return make_error(Errc::kInvalidArgument,
                        std::string(what) +
                            " may only hold printable ASCII without spaces, '<', '>' or '\"' "
                            "(percent-encode them)");
    }
  }
  return ok_result();
}

bool has_field(const SplitMessage& m, std::string_view name) {
  for (const HeaderField& f : m.fields) {
    if (iequals(f.name, name)) {
      return true;
    }
  }
  return false;
}

// Where new fields go: before the empty line, or at the end of a message
// that has none.
size_t insert_at(std::string_view msg, const SplitMessage& m) {
  size_t bo = m.body_offset;
  bool blank_line = bo >= 2 && msg.compare(bo - 2, 2, "\r\n") == 0 &&
                    (bo == 2 || msg.compare(bo - 4, 2, "\r\n") == 0);
  return blank_line ? bo - 2 : msg.size();
}

bool ascii_host(std::string_view d) {
  if (d.empty() || d.size() > 253) {
    return false;
  }
  for (char c : d) {
    if (!internal::is_alpha(c) && !internal::is_digit(c) && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<void> validate_unsubscribe_https(std::string_view uri) {
  return validate_uri(uri, "https://", "list_unsubscribe");
}

Result<void> validate_unsubscribe_mailto(std::string_view uri) {
  return validate_uri(uri, "mailto:", "list_unsubscribe_mailto");
}

Result<void> validate_feedback_id(std::string_view value) {
  if (value.empty() || value.size() > kMaxFeedbackId) {
    return make_error(Errc::kInvalidArgument,
                      "feedback_id must be 1 to " + std::to_string(kMaxFeedbackId) + " bytes");
  }
  if (value.front() == ' ' || value.back() == ' ') {
    return make_error(Errc::kInvalidArgument, "feedback_id may not start or end with a space");
  }
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      return make_error(Errc::kInvalidArgument, "feedback_id may only hold printable ASCII");
    }
  }
  return ok_result();
}

Result<size_t> add_bulk_headers(std::string& msg, const BulkHeaderOptions& o) {
  const bool unsubscribe = !o.list_unsubscribe.empty() || !o.list_unsubscribe_mailto.empty();
  const bool requested = unsubscribe || !o.feedback_id.empty();
  if (!requested && !o.add_date && o.message_id.empty()) {
    return size_t{0};
  }
  auto split = split_header(msg);
  if (!split.ok()) {
    if (!requested) {
      return size_t{0};
    }
    return make_error(Errc::kInvalidArgument,
                      "cannot add header fields: the header section does not parse (" +
                          split.error().message + ")");
  }
  auto refuse_existing = [&](std::string_view name) -> Result<void> {
    if (has_field(*split, name)) {
      return make_error(Errc::kInvalidArgument, "the message already has a " + std::string(name) +
                                                    " field; the batch options would add another");
    }
    return ok_result();
  };
  std::string add;
  if (o.add_date && !has_field(*split, "Date")) {
    add += "Date: " + format_rfc5322_date(o.date_s) + "\r\n";
  }
  if (!o.message_id.empty() && !has_field(*split, "Message-ID")) {
    add += "Message-ID: ";
    add += o.message_id;
    add += "\r\n";
  }
  if (unsubscribe) {
    RM_TRY(refuse_existing("List-Unsubscribe"));
    RM_TRY(refuse_existing("List-Unsubscribe-Post"));
    add += "List-Unsubscribe: ";
    if (!o.list_unsubscribe.empty()) {
      add += "<";
      add += o.list_unsubscribe;
      add += ">";
    }
    if (!o.list_unsubscribe_mailto.empty()) {
      add += o.list_unsubscribe.empty() ? "<" : ",\r\n <";  // one URI per line
      add += o.list_unsubscribe_mailto;
      add += ">";
    }
    add += "\r\n";
    if (!o.list_unsubscribe.empty()) {
      add += "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    }
  }
  if (!o.feedback_id.empty()) {
    RM_TRY(refuse_existing("Feedback-ID"));
    add += "Feedback-ID: ";
    add += o.feedback_id;
    add += "\r\n";
  }
  msg.insert(insert_at(msg, *split), add);
  return add.size();
}

std::string format_rfc5322_date(int64_t unix_s) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t t = static_cast<time_t>(unix_s);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday % 7],
                tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string make_message_id(std::string_view id, uint64_t token, std::string_view domain) {
  std::string out = "<";
  for (char c : id.substr(0, 64)) {
    bool keep = internal::is_alpha(c) || internal::is_digit(c) || c == '-' || c == '_';
    out.push_back(keep ? c : '_');
  }
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(token));
  if (out.size() > 1) {
    out.push_back('.');
  }
  out += hex;
  out.push_back('@');
  out += ascii_host(domain) ? domain : std::string_view("ringmail.invalid");
  out.push_back('>');
  return out;
}

}  // namespace ringmail::proto
