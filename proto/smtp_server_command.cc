// LineFramer, parse_command_line and CommandParser (see smtp_server.h).
#include <cstring>

#include "proto/smtp_server.h"
#include "proto/text_util.h"

namespace ringmail::proto {

namespace {

using internal::iequals;

constexpr size_t kMaxUnknownVerb = 32;
constexpr size_t kMaxHeloName = 255;
constexpr size_t kMaxEnvid = 100;    // RFC 3461 4.4
constexpr size_t kMaxAuthMech = 20;  // RFC 4422 3.1

struct VerbEntry {
  std::string_view name;
  SmtpVerb verb;
};

constexpr VerbEntry kVerbs[] = {
    {"EHLO", SmtpVerb::kEhlo}, {"HELO", SmtpVerb::kHelo}, {"MAIL", SmtpVerb::kMail},
    {"RCPT", SmtpVerb::kRcpt}, {"DATA", SmtpVerb::kData}, {"BDAT", SmtpVerb::kBdat},
    {"RSET", SmtpVerb::kRset}, {"NOOP", SmtpVerb::kNoop}, {"QUIT", SmtpVerb::kQuit},
    {"VRFY", SmtpVerb::kVrfy}, {"HELP", SmtpVerb::kHelp}, {"STARTTLS", SmtpVerb::kStartTls},
    {"AUTH", SmtpVerb::kAuth},
};

bool fail(CommandError* err, uint16_t code, std::string text, Errc errc = Errc::kSyntax) {
  err->errc = errc;
  err->code = code;
  err->text = std::move(text);
  return false;
}

bool syntax(CommandError* err, std::string_view usage) {
  return fail(err, 501, "5.5.4 Syntax: " + std::string(usage));
}

std::string_view trim_spaces(std::string_view s) {
  size_t b = s.find_first_not_of(' ');
  if (b == std::string_view::npos) {
    return {};
  }
  size_t e = s.find_last_not_of(' ');
  return s.substr(b, e - b + 1);
}

// Splits off the next space-separated token.
std::string_view next_token(std::string_view* rest) {
  *rest = trim_spaces(*rest);
  size_t sp = rest->find(' ');
  std::string_view tok = rest->substr(0, sp);
  rest->remove_prefix(sp == std::string_view::npos ? rest->size() : sp);
  return tok;
}

bool is_xtext(std::string_view v) {
  for (size_t i = 0; i < v.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    if (c == '+') {
      auto hex = [](char h) { return internal::is_digit(h) || (h >= 'A' && h <= 'F'); };
      if (i + 2 >= v.size() || !hex(v[i + 1]) || !hex(v[i + 2])) {
        return false;
      }
      i += 2;
    } else if (c < 0x21 || c > 0x7e || c == '=') {
      return false;
    }
  }
  return true;
}

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
bool is_keyword(std::string_view k) {
  if (k.empty() || !(internal::is_alpha(k[0]) || internal::is_digit(k[0]))) {
    return false;
  }
  for (char c : k) {
    if (!internal::is_alpha(c) && !internal::is_digit(c) && c != '-') {
      return false;
    }
  }
  return true;
}

// esmtp-value = 1*(%d33-60 / %d62-126)
bool is_value(std::string_view v) {
  if (v.empty()) {
    return false;
  }
  for (char ch : v) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

// Validates and strips an RFC 5321 source route ("@a,@b:"), which 4.1.1.3
// says to accept and ignore.
bool strip_source_route(std::string_view* inner) {
  if (inner->empty() || inner->front() != '@') {
    return true;
  }
  size_t colon = inner->find(':');
  if (colon == std::string_view::npos) {
    return false;
  }
  std::string_view route = inner->substr(0, colon);
  while (!route.empty()) {
    size_t comma = route.find(',');
    std::string_view hop = route.substr(0, comma);
    if (hop.size() < 2 || hop.front() != '@' || !validate_domain(hop.substr(1))) {
      return false;
    }
    route.remove_prefix(comma == std::string_view::npos ? route.size() : comma + 1);
  }
  inner->remove_prefix(colon + 1);
  return true;
}

// Parses "<path>" at the start of `rest`; leaves the parameters in *rest.
bool parse_path(std::string_view* rest, bool is_mail, Command* out, CommandError* err) {
  const char* usage = is_mail ? "MAIL FROM:<address>" : "RCPT TO:<address>";
  std::string_view s = trim_spaces(*rest);
  if (s.empty() || s.front() != '<') {
    return syntax(err, usage);
  }
  size_t close = s.find('>');
  if (close == std::string_view::npos) {
    return syntax(err, usage);
  }
  std::string_view inner = s.substr(1, close - 1);
  *rest = s.substr(close + 1);
  if (!rest->empty() && rest->front() != ' ') {
    return syntax(err, usage);
  }
  if (inner.empty()) {
    if (!is_mail) {
      return fail(err, 501, "5.1.3 Bad recipient address syntax: empty address");
    }
    out->null_path = true;
    return true;
  }
  const char* bad =
      is_mail ? "5.1.7 Bad sender address syntax: " : "5.1.3 Bad recipient address syntax: ";
  if (!strip_source_route(&inner)) {
    return fail(err, 501, std::string(bad) + "malformed source route");
  }
  if (!is_mail && iequals(inner, "postmaster")) {
    out->path.local.assign(inner);
    return true;
  }
  Result<Mailbox> m = parse_mailbox(inner);
  if (!m) {
    return fail(err, 501, bad + m.error().message);
  }
  out->path = std::move(m).value();
  return true;
}

bool parse_size_param(std::string_view v, MailFromParams* p, CommandError* err) {
  if (v.empty()) {
    return fail(err, 501, "5.5.4 Bad SIZE parameter");
  }
  for (char c : v) {
    if (!internal::is_digit(c)) {
      return fail(err, 501, "5.5.4 Bad SIZE parameter");
    }
  }
  uint64_t n = 0;
  p->size = internal::parse_u64(v, &n) ? n : UINT64_MAX;  // saturate: surely too big
  p->has_size = true;
  return true;
}

bool parse_mail_param(std::string_view key, std::string_view v, bool has_value, MailFromParams* p,
                      CommandError* err) {
  auto dup = [&] { return fail(err, 501, "5.5.4 Duplicate " + std::string(key) + " parameter"); };
  if (iequals(key, "SIZE")) {
    return p->has_size ? dup() : parse_size_param(v, p, err);
  }
  if (iequals(key, "BODY")) {
    if (p->body != BodyParam::kNone) {
      return dup();
    }
    if (iequals(v, "7BIT")) {
      p->body = BodyParam::k7Bit;
    } else if (iequals(v, "8BITMIME")) {
      p->body = BodyParam::k8BitMime;
    } else if (iequals(v, "BINARYMIME")) {
      p->body = BodyParam::kBinaryMime;
    } else {
      return fail(err, 501, "5.5.4 Bad BODY parameter");
    }
    return true;
  }
  if (iequals(key, "SMTPUTF8")) {
    if (has_value) {
      return fail(err, 501, "5.5.4 SMTPUTF8 takes no value");
    }
    return p->smtputf8 ? dup() : (p->smtputf8 = true);
  }
  if (iequals(key, "AUTH")) {
    if (!p->auth.empty()) {
      return dup();
    }
    if (v != "<>" && !is_xtext(v)) {
      return fail(err, 501, "5.5.4 Bad AUTH parameter");
    }
    p->auth.assign(v);
    return true;
  }
  if (iequals(key, "RET")) {
    if (p->ret != RetParam::kNone) {
      return dup();
    }
    p->ret = iequals(v, "FULL")   ? RetParam::kFull
             : iequals(v, "HDRS") ? RetParam::kHdrs
                                  : RetParam::kNone;
    return p->ret != RetParam::kNone || fail(err, 501, "5.5.4 Bad RET parameter");
  }
  if (iequals(key, "ENVID")) {
    if (!p->envid.empty()) {
      return dup();
    }
    if (v.size() > kMaxEnvid || !is_xtext(v)) {
      return fail(err, 501, "5.5.4 Bad ENVID parameter");
    }
    p->envid.assign(v);
    return true;
  }
  return fail(err, 555, "5.5.4 Unsupported parameter " + std::string(key));
}

bool parse_notify(std::string_view v, RcptToParams* p, CommandError* err) {
  uint8_t flags = 0;
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    v.remove_prefix(comma == std::string_view::npos ? v.size() : comma + 1);
    if (iequals(item, "NEVER")) {
      flags |= kNotifyNever;
    } else if (iequals(item, "SUCCESS")) {
      flags |= kNotifySuccess;
    } else if (iequals(item, "FAILURE")) {
      flags |= kNotifyFailure;
    } else if (iequals(item, "DELAY")) {
      flags |= kNotifyDelay;
    } else {
      return fail(err, 501, "5.5.4 Bad NOTIFY parameter");
    }
  }
  if (flags == 0 || ((flags & kNotifyNever) != 0 && flags != kNotifyNever)) {
    return fail(err, 501, "5.5.4 Bad NOTIFY parameter");
  }
  p->notify = flags;
  return true;
}

bool parse_rcpt_param(std::string_view key, std::string_view v, RcptToParams* p,
                      CommandError* err) {
  if (iequals(key, "NOTIFY")) {
    if (p->notify != 0) {
      return fail(err, 501, "5.5.4 Duplicate NOTIFY parameter");
    }
    return parse_notify(v, p, err);
  }
  if (iequals(key, "ORCPT")) {
    size_t semi = v.find(';');
    if (!p->orcpt.empty()) {
      return fail(err, 501, "5.5.4 Duplicate ORCPT parameter");
    }
    if (semi == std::string_view::npos || semi == 0 || !is_xtext(v.substr(semi + 1))) {
      return fail(err, 501, "5.5.4 Bad ORCPT parameter");
    }
    p->orcpt.assign(v);
    return true;
  }
  return fail(err, 555, "5.5.4 Unsupported parameter " + std::string(key));
}

// Parses " KEY[=VALUE]..." after the path.
bool parse_params(std::string_view rest, Command* out, CommandError* err) {
  size_t count = 0;
  std::string_view scan = rest;
  while (!next_token(&scan).empty()) {
    if (++count > kMaxParams) {
      return fail(err, 501, "5.5.4 Too many parameters");
    }
  }
  for (std::string_view tok = next_token(&rest); !tok.empty(); tok = next_token(&rest)) {
    size_t eq = tok.find('=');
    std::string_view key = tok.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : tok.substr(eq + 1);
    bool has_value = eq != std::string_view::npos;
    if (!is_keyword(key) || (has_value && !is_value(value))) {
      return fail(err, 501, "5.5.4 Syntax error in parameters");
    }
    bool ok = out->verb == SmtpVerb::kMail
                  ? parse_mail_param(key, value, has_value, &out->mail, err)
                  : parse_rcpt_param(key, value, &out->rcpt, err);
    if (!ok) {
      return false;
    }
  }
  return true;
}

bool parse_mail_rcpt(std::string_view rest, Command* out, CommandError* err) {
  bool is_mail = out->verb == SmtpVerb::kMail;
  std::string_view prefix = is_mail ? "FROM:" : "TO:";
  rest = trim_spaces(rest);
  if (rest.size() < prefix.size() || !iequals(rest.substr(0, prefix.size()), prefix)) {
    return syntax(err, is_mail ? "MAIL FROM:<address>" : "RCPT TO:<address>");
  }
  rest.remove_prefix(prefix.size());  // "MAIL FROM: <x>" is tolerated: spaces are trimmed
  return parse_path(&rest, is_mail, out, err) && parse_params(rest, out, err);
}

bool parse_helo(std::string_view rest, Command* out, CommandError* err) {
  std::string_view name = next_token(&rest);
  if (name.empty()) {
    return syntax(err, out->verb == SmtpVerb::kEhlo ? "EHLO hostname" : "HELO hostname");
  }
  if (name.size() > kMaxHeloName) {
    return fail(err, 501, "5.5.4 Hostname too long");
  }
  for (char ch : name) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x21 || c == 0x7f) {
      return fail(err, 501, "5.5.4 Invalid hostname");
    }
  }
  out->arg.assign(name);
  return true;
}

bool parse_bdat(std::string_view rest, Command* out, CommandError* err) {
  std::string_view size = next_token(&rest);
  std::string_view last = next_token(&rest);
  if (!internal::parse_u64(size, &out->bdat_size) || !trim_spaces(rest).empty() ||
      (!last.empty() && !iequals(last, "LAST"))) {
    return syntax(err, "BDAT chunk-size [LAST]");
  }
  out->bdat_last = !last.empty();
  return true;
}

bool parse_auth(std::string_view rest, Command* out, CommandError* err) {
  std::string_view mech = next_token(&rest);
  std::string_view initial = next_token(&rest);
  if (mech.empty() || mech.size() > kMaxAuthMech || !trim_spaces(rest).empty()) {
    return syntax(err, "AUTH mechanism [initial-response]");
  }
  for (char c : mech) {
    if (!internal::is_alpha(c) && !internal::is_digit(c) && c != '-' && c != '_') {
      return syntax(err, "AUTH mechanism [initial-response]");
    }
    out->arg.push_back(internal::ascii_upper(c));
  }
  if (!initial.empty()) {
    out->auth_initial.assign(initial);
    out->has_auth_initial = true;
  }
  return true;
}

bool parse_arguments(std::string_view rest, Command* out, CommandError* err) {
  switch (out->verb) {
    case SmtpVerb::kEhlo:
    case SmtpVerb::kHelo:
      return parse_helo(rest, out, err);
    case SmtpVerb::kMail:
    case SmtpVerb::kRcpt:
      return parse_mail_rcpt(rest, out, err);
    case SmtpVerb::kBdat:
      return parse_bdat(rest, out, err);
    case SmtpVerb::kAuth:
      return parse_auth(rest, out, err);
    case SmtpVerb::kData:
    case SmtpVerb::kRset:
    case SmtpVerb::kQuit:
    case SmtpVerb::kStartTls:
      if (!trim_spaces(rest).empty()) {
        return syntax(err, verb_name(out->verb));
      }
      return true;
    case SmtpVerb::kVrfy:
      if (trim_spaces(rest).empty()) {
        return syntax(err, "VRFY address");
      }
      out->arg.assign(trim_spaces(rest));
      return true;
    case SmtpVerb::kNoop:
    case SmtpVerb::kHelp:
    case SmtpVerb::kUnknown:
      out->arg.assign(trim_spaces(rest));
      return true;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------

LineFramer::LineFramer(Limits limits) : limits_(limits) {}

void LineFramer::reset() {
  stash_.clear();
  line_ = {};
  error_ = Error{};
  skipping_ = false;
  line_in_stash_ = false;
}

ParseResult LineFramer::line_error(Errc code, const char* what, size_t consumed) {
  stash_.clear();
  error_ = make_error(code, what);
  return ParseResult{ParseStatus::kError, consumed};
}

ParseResult LineFramer::feed(std::span<const char> in) {
  line_ = {};
  if (line_in_stash_) {
    stash_.clear();
    line_in_stash_ = false;
  }
  const void* lf = std::memchr(in.data(), '\n', in.size());
  if (lf == nullptr) {
    if (!skipping_) {
      if (stash_.size() + in.size() > limits_.max_line + 1) {  // +1: a CR before the LF
        stash_.clear();
        skipping_ = true;
      } else {
        stash_.append(in.data(), in.size());
      }
    }
    return ParseResult{ParseStatus::kNeedMore, in.size()};
  }
  size_t piece = static_cast<size_t>(static_cast<const char*>(lf) - in.data());
  size_t consumed = piece + 1;
  if (skipping_) {
    skipping_ = false;
    return line_error(Errc::kLimit, "line too long", consumed);
  }
  std::string_view line(in.data(), piece);
  if (stash_.size() + piece > limits_.max_line + 1) {  // checked first: same verdict at any split
    return line_error(Errc::kLimit, "line too long", consumed);
  }
  if (!stash_.empty()) {
    stash_.append(in.data(), piece);
    line = stash_;
    line_in_stash_ = true;
  }
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  } else if (!limits_.allow_bare_lf) {
    return line_error(Errc::kProtocol, "bare LF line end", consumed);
  }
  if (line.size() > limits_.max_line) {
    return line_error(Errc::kLimit, "line too long", consumed);
  }
  line_ = line;
  return ParseResult{ParseStatus::kDone, consumed};
}

std::string_view verb_name(SmtpVerb verb) {
  for (const VerbEntry& e : kVerbs) {
    if (e.verb == verb) {
      return e.name;
    }
  }
  return "UNKNOWN";
}

void Command::clear() {
  verb = SmtpVerb::kUnknown;
  arg.clear();
  path.local.clear();
  path.domain.clear();
  path.utf8 = false;
  path.domain_literal = false;
  null_path = false;
  mail = MailFromParams{};
  rcpt = RcptToParams{};
  bdat_size = 0;
  bdat_last = false;
  auth_initial.clear();
  has_auth_initial = false;
}

bool parse_command_line(std::string_view line, Command* out, CommandError* err) {
  out->clear();
  // Threat: a CR or NUL inside a line is either a smuggling probe or a
  // client that will desynchronise; nothing valid contains one.
  if (line.find_first_of(std::string_view("\r\0", 2)) != std::string_view::npos) {
    return fail(err, 500, "5.5.2 Error: bare <CR> or NUL received", Errc::kProtocol);
  }
  size_t sp = line.find(' ');
  std::string_view word = line.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  for (const VerbEntry& e : kVerbs) {
    if (iequals(word, e.name)) {
      out->verb = e.verb;
      return parse_arguments(rest, out, err);
    }
  }
  out->arg.assign(word.substr(0, kMaxUnknownVerb));
  return true;
}

ParseResult CommandParser::parse(std::span<const char> in) {
  ParseResult r = framer_.feed(in);
  if (r.status == ParseStatus::kError) {
    command_.clear();
    bool too_long = framer_.error().code == Errc::kLimit;
    error_.errc = framer_.error().code;
    error_.code = 500;
    error_.text = too_long ? "5.5.2 Error: line too long" : "5.5.2 Error: bare <LF> received";
    return r;
  }
  if (r.status == ParseStatus::kDone && !parse_command_line(framer_.line(), &command_, &error_)) {
    return ParseResult{ParseStatus::kError, r.consumed};
  }
  return r;
}

}  // namespace ringmail::proto
