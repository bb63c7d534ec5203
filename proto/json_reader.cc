// Bounded JSON reader (see json_reader.h).
#include "proto/json_reader.h"

#include <limits>

namespace ringmail::proto {

class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonLimits& limits, JsonDocument* doc)
      : s_(text), limits_(limits), doc_(doc) {}

  Result<void> run() {
    if (s_.size() >= std::numeric_limits<uint32_t>::max()) {
      return make_error(Errc::kLimit, "JSON text too large");
    }
    skip_ws();
    RM_TRY(value(0));
    skip_ws();
    if (pos_ != s_.size()) {
      return bad("unexpected data after the JSON value");
    }
    return ok_result();
  }

 private:
  Error bad(std::string_view what) const {
    return make_error(Errc::kSyntax,
                      "JSON: " + std::string(what) + " at byte " + std::to_string(pos_));
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  Result<uint32_t> add(JsonType t, size_t begin) {
    if (doc_->nodes_.size() >= limits_.max_nodes) {
      return make_error(Errc::kLimit,
                        "JSON: more than " + std::to_string(limits_.max_nodes) + " values");
    }
    doc_->nodes_.push_back(JsonDocument::Node{t, static_cast<uint32_t>(begin), 0, 0, 0});
    return static_cast<uint32_t>(doc_->nodes_.size() - 1);
  }

  void close(uint32_t idx, size_t end) {
    auto& n = doc_->nodes_[idx];
    n.len = static_cast<uint32_t>(end - n.begin);
    n.next = static_cast<uint32_t>(doc_->nodes_.size());
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) {
      return false;
    }
    pos_ += word.size();
    return true;
  }

  Result<void> value(uint32_t depth) {
    if (pos_ >= s_.size()) {
      return bad("unexpected end of input");
    }
    char c = s_[pos_];
    size_t begin = pos_;
    if (c == '{' || c == '[') {
      if (depth >= limits_.max_depth) {
        return make_error(Errc::kLimit, "JSON: nested deeper than " +
                                            std::to_string(limits_.max_depth) + " levels");
      }
      return c == '{' ? object(depth + 1) : array(depth + 1);
    }
    if (c == '"') {
      return string();
    }
    JsonType t;
    if (literal("null")) {
      t = JsonType::kNull;
    } else if (literal("true")) {
      t = JsonType::kTrue;
    } else if (literal("false")) {
      t = JsonType::kFalse;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      RM_TRY(number());
      t = JsonType::kNumber;
    } else {
      return bad("unexpected character");
    }
    auto idx = add(t, begin);
    RM_TRY(idx);
    close(*idx, pos_);
    return ok_result();
  }

  bool digit() const { return pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; }

  Result<void> number() {
    if (s_[pos_] == '-') {
      ++pos_;
    }
    if (!digit()) {
      return bad("malformed number");
    }
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (digit()) {
        ++pos_;
      }
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!digit()) {
        return bad("malformed number");
      }
      while (digit()) {
        ++pos_;
      }
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) {
        ++pos_;
      }
      if (!digit()) {
        return bad("malformed number");
      }
      while (digit()) {
        ++pos_;
      }
    }
    return ok_result();
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  }

  /// Reads 4 hex digits at pos_; -1 when malformed.
  int32_t u4() {
    if (pos_ + 4 > s_.size()) {
      return -1;
    }
    int32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      int h = hex(s_[pos_ + i]);
      if (h < 0) {
        return -1;
      }
      v = v * 16 + h;
    }
    pos_ += 4;
    return v;
  }

  /// Length of the valid UTF-8 sequence at pos_ (RFC 3629), 0 when invalid.
  size_t utf8_seq() const {
    auto at = [&](size_t k) { return static_cast<unsigned char>(s_[pos_ + k]); };
    unsigned char c = at(0);
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return 0;
    }
    if (pos_ + n > s_.size() || at(1) < lo || at(1) > hi) {
      return 0;
    }
    for (size_t k = 2; k < n; ++k) {
      if (at(k) < 0x80 || at(k) > 0xBF) {
        return 0;
      }
    }
    return n;
  }

  Result<void> string() {
    ++pos_;  // the quote
    auto idx = add(JsonType::kString, pos_);
    RM_TRY(idx);
    for (;;) {
      if (pos_ >= s_.size()) {
        return bad("unterminated string");
      }
      auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        close(*idx, pos_);
        ++pos_;
        return ok_result();
      }
      if (c < 0x20) {
        return bad("control character in a string");
      }
      if (c == '\\') {
        RM_TRY(escape());
      } else if (c < 0x80) {
        ++pos_;
      } else {
        size_t n = utf8_seq();
        if (n == 0) {
          return bad("invalid UTF-8 in a string");
        }
        pos_ += n;
      }
    }
  }

  Result<void> escape() {
    ++pos_;  // the backslash
    if (pos_ >= s_.size()) {
      return bad("unterminated escape");
    }
    char e = s_[pos_++];
    switch (e) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        return ok_result();
      case 'u':
        break;
      default:
        return bad("invalid escape");
    }
    int32_t u = u4();
    if (u < 0) {
      return bad("malformed \\u escape");
    }
    if (u >= 0xDC00 && u <= 0xDFFF) {
      return bad("lone low surrogate");
    }
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (s_.substr(pos_, 2) != "\\u") {
        return bad("high surrogate without its low surrogate");
      }
      pos_ += 2;
      int32_t low = u4();
      if (low < 0xDC00 || low > 0xDFFF) {
        return bad("high surrogate without its low surrogate");
      }
    }
    return ok_result();
  }

  Result<void> array(uint32_t depth) {
    auto idx = add(JsonType::kArray, pos_);
    RM_TRY(idx);
    ++pos_;
    skip_ws();
    uint32_t n = 0;
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      close(*idx, pos_);
      return ok_result();
    }
    for (;;) {
      skip_ws();
      RM_TRY(value(depth));
      ++n;
      skip_ws();
      if (pos_ >= s_.size()) {
        return bad("unterminated array");
      }
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] != ']') {
        return bad("expected ',' or ']'");
      }
      ++pos_;
      doc_->nodes_[*idx].children = n;
      close(*idx, pos_);
      return ok_result();
    }
  }

  Result<void> object(uint32_t depth) {
    auto idx = add(JsonType::kObject, pos_);
    RM_TRY(idx);
    ++pos_;
    skip_ws();
    uint32_t n = 0;
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      close(*idx, pos_);
      return ok_result();
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        return bad("expected a member name");
      }
      RM_TRY(string());
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') {
        return bad("expected ':'");
      }
      ++pos_;
      skip_ws();
      RM_TRY(value(depth));
      n += 2;
      skip_ws();
      if (pos_ >= s_.size()) {
        return bad("unterminated object");
      }
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] != '}') {
        return bad("expected ',' or '}'");
      }
      ++pos_;
      doc_->nodes_[*idx].children = n;
      close(*idx, pos_);
      return ok_result();
    }
  }

  std::string_view s_;
  const JsonLimits& limits_;
  JsonDocument* doc_;
  size_t pos_ = 0;
};

Result<JsonDocument> JsonDocument::parse(std::string_view text, const JsonLimits& limits) {
  JsonDocument doc;
  doc.text_ = text;
  JsonParser p(text, limits, &doc);
  RM_TRY(p.run());
  return doc;
}

void append_json_unescaped(std::string& out, std::string_view s) {
  auto put = [&out](uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  };
  auto u4 = [&s](size_t at) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4 && at + k < s.size(); ++k) {
      char c = s[at + k];
      v = v * 16 + static_cast<uint32_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out.push_back(s[i]);
      continue;
    }
    char e = s[++i];
    switch (e) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        uint32_t cp = u4(i + 1);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < s.size() && s[i + 1] == '\\') {
          uint32_t low = u4(i + 3);
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          i += 6;
        }
        put(cp);
        break;
      }
      default:  // '"', '\\', '/'
        out.push_back(e);
    }
  }
}

JsonType JsonValue::type() const {
  return doc_->nodes_[idx_].type;
}

std::string_view JsonValue::raw() const {
  const auto& n = doc_->nodes_[idx_];
  return doc_->text_.substr(n.begin, n.len);
}

std::string JsonValue::str() const {
  std::string out;
  if (is_string()) {
    append_json_unescaped(out, raw());
  }
  return out;
}

uint32_t JsonValue::size() const {
  const auto& n = doc_->nodes_[idx_];
  return n.type == JsonType::kObject ? n.children / 2 : n.children;
}

std::vector<JsonValue> JsonValue::items() const {
  std::vector<JsonValue> out;
  if (!is_array()) {
    return out;
  }
  uint32_t c = idx_ + 1;
  for (uint32_t i = 0; i < size(); ++i) {
    out.push_back(JsonValue(doc_, c));
    c = doc_->nodes_[c].next;
  }
  return out;
}

std::vector<std::pair<JsonValue, JsonValue>> JsonValue::members() const {
  std::vector<std::pair<JsonValue, JsonValue>> out;
  if (!is_object()) {
    return out;
  }
  uint32_t c = idx_ + 1;
  for (uint32_t m = 0; m < size(); ++m) {
    uint32_t v = doc_->nodes_[c].next;
    out.emplace_back(JsonValue(doc_, c), JsonValue(doc_, v));
    c = doc_->nodes_[v].next;
  }
  return out;
}

bool JsonValue::equals(std::string_view s) const {
  if (!is_string()) {
    return false;
  }
  std::string_view r = raw();
  if (r.find('\\') == std::string_view::npos) {
    return r == s;
  }
  return str() == s;
}

std::optional<JsonValue> JsonValue::find(std::string_view key) const {
  for (const auto& [k, v] : members()) {
    if (k.equals(key)) {
      return v;
    }
  }
  return std::nullopt;
}

uint32_t JsonValue::count(std::string_view key) const {
  uint32_t n = 0;
  for (const auto& [k, v] : members()) {
    n += k.equals(key) ? 1 : 0;
  }
  return n;
}

}  // namespace ringmail::proto
