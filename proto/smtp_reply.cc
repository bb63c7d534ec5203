#include "proto/smtp_reply.h"

#include <cstring>

namespace ringmail::proto {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Reads 1..3 digits at `pos`; returns the count (0 when none) and the value.
size_t read_number(std::string_view s, size_t pos, uint16_t* value) {
  size_t n = 0;
  uint16_t v = 0;
  while (pos + n < s.size() && n < 3 && is_digit(s[pos + n])) {
    v = static_cast<uint16_t>(v * 10 + (s[pos + n] - '0'));
    ++n;
  }
  *value = v;
  return n;
}

// Appends `line` with non-printable bytes replaced, within the text cap.
void append_sanitized(std::string& text, std::string_view line, size_t cap) {
  size_t room = cap > text.size() ? cap - text.size() : 0;
  size_t n = line.size() < room ? line.size() : room;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    text.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  }
}

EnhancedCode default_enhanced(uint16_t code) {
  uint8_t cls = static_cast<uint8_t>(code / 100);
  if (cls == 2 || cls == 4 || cls == 5) {
    return EnhancedCode{cls, 0, 0};
  }
  return EnhancedCode{};
}

// Keeps the peer's enhanced code only when its class matches the reply's.
void settle_enhanced(Reply& r, const EnhancedCode& from_text) {
  if (from_text.present() && from_text.cls == r.code / 100) {
    r.enhanced = from_text;
    r.enhanced_from_peer = true;
  } else {
    r.enhanced = default_enhanced(r.code);
    r.enhanced_from_peer = false;
  }
}

}  // namespace

std::string EnhancedCode::str() const {
  if (!present()) {
    return {};
  }
  return std::to_string(cls) + "." + std::to_string(subject) + "." + std::to_string(detail);
}

EnhancedCode parse_enhanced_code(std::string_view text, size_t* consumed) {
  if (consumed != nullptr) {
    *consumed = 0;
  }
  if (text.size() < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') || text[1] != '.') {
    return {};
  }
  uint16_t subject = 0;
  uint16_t detail = 0;
  size_t n1 = read_number(text, 2, &subject);
  if (n1 == 0 || 2 + n1 >= text.size() || text[2 + n1] != '.') {
    return {};
  }
  size_t pos = 3 + n1;
  size_t n2 = read_number(text, pos, &detail);
  if (n2 == 0) {
    return {};
  }
  pos += n2;
  if (pos < text.size() && text[pos] != ' ') {
    return {};  // "5.1.12345" or "5.1.1x": not a status code
  }
  if (consumed != nullptr) {
    *consumed = pos < text.size() ? pos + 1 : pos;
  }
  return EnhancedCode{static_cast<uint8_t>(text[0] - '0'), subject, detail};
}

std::string Reply::summary() const {
  std::string out = std::to_string(code);
  if (!text.empty()) {
    out.push_back(' ');
  }
  for (char c : text) {
    if (c == '\n') {
      out.append(" / ");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Reply make_reply(uint16_t code, std::string_view text) {
  Reply r;
  r.code = code;
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    std::string_view line = text.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (start != 0) {
      r.text.push_back('\n');
      r.multiline = true;
    }
    append_sanitized(r.text, line, ReplyParser::Limits{}.max_text);
    if (nl == std::string_view::npos) {
      break;
    }
    start = nl + 1;
  }
  settle_enhanced(r, parse_enhanced_code(r.text));
  return r;
}

ReplyParser::ReplyParser(Limits limits) : limits_(limits) {}

void ReplyParser::reset() {
  reply_ = Reply{};
  error_ = Error{};
  line_.clear();
  lines_ = 0;
  in_reply_ = false;
  failed_ = false;
}

ParseResult ReplyParser::fail(Errc code, std::string message) {
  failed_ = true;
  error_ = make_error(code, std::move(message));
  line_.clear();
  return ParseResult{ParseStatus::kError, 0};
}

// Handles one complete line (line end removed). Returns true when the reply is complete.
bool ReplyParser::take_line(std::string_view line, bool* failed) {
  *failed = false;
  if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2])) {
    fail(Errc::kSyntax, "reply line does not start with a 3-digit code");
    *failed = true;
    return false;
  }
  uint16_t code =
      static_cast<uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
  bool last = line.size() == 3 || line[3] == ' ';
  if (code < 200 || code > 599 || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
    fail(Errc::kSyntax, "malformed reply line");
    *failed = true;
    return false;
  }
  if (!in_reply_) {
    reply_ = Reply{};
    reply_.code = code;
    in_reply_ = true;
  } else if (code != reply_.code) {
    fail(Errc::kSyntax, "reply code changed between lines");
    *failed = true;
    return false;
  }
  if (++lines_ > limits_.max_lines) {
    fail(Errc::kLimit, "reply has more than " + std::to_string(limits_.max_lines) + " lines");
    *failed = true;
    return false;
  }
  if (lines_ > 1 && reply_.text.size() < limits_.max_text) {
    reply_.text.push_back('\n');
  }
  append_sanitized(reply_.text, line.size() > 4 ? line.substr(4) : std::string_view{},
                   limits_.max_text);
  if (lines_ == 1) {
    first_line_enhanced_ = parse_enhanced_code(line.size() > 4 ? line.substr(4) : "");
  }
  if (!last) {
    return false;
  }
  reply_.multiline = lines_ > 1;
  settle_enhanced(reply_, first_line_enhanced_);
  lines_ = 0;
  in_reply_ = false;
  return true;
}

ParseResult ReplyParser::parse(std::span<const char> in) {
  if (failed_) {
    return ParseResult{ParseStatus::kError, 0};
  }
  size_t pos = 0;
  while (pos < in.size()) {
    const char* start = in.data() + pos;
    size_t avail = in.size() - pos;
    const void* lf = std::memchr(start, '\n', avail);
    if (lf == nullptr) {
      // Threat: a line without end. The stash never exceeds max_line + 1 (a CR).
      if (line_.size() + avail > limits_.max_line + 1) {
        return fail(Errc::kLimit, "reply line longer than " + std::to_string(limits_.max_line));
      }
      line_.append(start, avail);
      return ParseResult{ParseStatus::kNeedMore, in.size()};
    }
    size_t piece = static_cast<size_t>(static_cast<const char*>(lf) - start);
    std::string_view line;
    if (line_.empty()) {
      line = std::string_view(start, piece);
    } else {
      if (line_.size() + piece > limits_.max_line + 1) {
        return fail(Errc::kLimit, "reply line longer than " + std::to_string(limits_.max_line));
      }
      line_.append(start, piece);
      line = line_;
    }
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.size() > limits_.max_line) {
      return fail(Errc::kLimit, "reply line longer than " + std::to_string(limits_.max_line));
    }
    pos += piece + 1;
    bool failed = false;
    bool done = take_line(line, &failed);
    line_.clear();
    if (failed) {
      return ParseResult{ParseStatus::kError, 0};
    }
    if (done) {
      return ParseResult{ParseStatus::kDone, pos};
    }
  }
  return ParseResult{ParseStatus::kNeedMore, in.size()};
}

}  // namespace ringmail::proto
