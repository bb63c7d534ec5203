// JSON writer: any bytes, as string values and numbers, must yield valid
// JSON (RFC 8259), checked by a tiny validator written here.
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

#include "proto/json.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

namespace {

// Minimal RFC 8259 validator for the shapes we write: objects, strings,
// numbers, null. Returns the position after the value, or npos.
constexpr size_t kBad = std::string::npos;

size_t utf8_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) {
    return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
  };
  if (c < 0x80) {
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    return cont(1) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    unsigned char c1 = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (!cont(1) || !cont(2) || (c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F)) {
      return 0;
    }
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    unsigned char c1 = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (!cont(1) || !cont(2) || !cont(3) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) {
      return 0;
    }
    return 4;
  }
  return 0;
}

size_t string_end(std::string_view s, size_t i) {
  if (i >= s.size() || s[i] != '"') {
    return kBad;
  }
  for (++i; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      return i + 1;
    }
    if (c < 0x20) {
      return kBad;
    }
    if (c == '\\') {
      if (i + 1 >= s.size()) {
        return kBad;
      }
      char e = s[i + 1];
      if (e == 'u') {
        if (i + 6 > s.size()) {
          return kBad;
        }
        for (size_t k = 2; k < 6; ++k) {
          if (!std::isxdigit(static_cast<unsigned char>(s[i + k]))) {
            return kBad;
          }
        }
        i += 6;
      } else if (std::strchr("\"\\/bfnrt", e) != nullptr && e != '\0') {
        i += 2;
      } else {
        return kBad;
      }
      continue;
    }
    size_t n = utf8_len(s, i);
    if (n == 0) {
      return kBad;
    }
    i += n;
  }
  return kBad;
}

size_t number_end(std::string_view s, size_t i) {
  if (s.substr(i, 4) == "null") {
    return i + 4;
  }
  if (i < s.size() && s[i] == '-') {
    ++i;
  }
  if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) {
    return kBad;
  }
  if (s[i] == '0') {
    ++i;
  } else {
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
    }
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
    }
    if (i == start) {
      return kBad;
    }
  }
  return i;
}

bool valid_object(std::string_view s) {
  size_t i = 0;
  if (s.empty() || s[i++] != '{') {
    return false;
  }
  bool first = true;
  while (i < s.size() && s[i] != '}') {
    if (!first) {
      if (s[i++] != ',') {
        return false;
      }
    }
    first = false;
    i = string_end(s, i);
    if (i == kBad || i >= s.size() || s[i++] != ':') {
      return false;
    }
    size_t v = i < s.size() && s[i] == '"' ? string_end(s, i) : number_end(s, i);
    if (v == kBad) {
      return false;
    }
    i = v;
  }
  return i + 1 == s.size() && s[i] == '}';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ringmail::fuzz::FuzzInput in(data, size);
  uint64_t u = in.u64();
  uint64_t bits = in.u64();
  int decimals = in.byte() % 24 - 3;
  std::string_view text = in.rest();

  std::string s;
  append_json_string(s, text);
  FUZZ_CHECK(string_end(s, 0) == s.size());

  double d;
  static_assert(sizeof(d) == sizeof(bits));
  std::memcpy(&d, &bits, sizeof(d));
  std::string obj = "{";
  append_json_key(obj, "text");
  append_json_string(obj, text);
  obj.push_back(',');
  append_json_key(obj, "u");
  append_json_uint(obj, u);
  obj.push_back(',');
  append_json_key(obj, "i");
  append_json_int(obj, static_cast<int64_t>(u));
  obj.push_back(',');
  append_json_key(obj, "d");
  append_json_double(obj, d, decimals);
  obj.push_back('}');
  FUZZ_CHECK(valid_object(obj));
  // Printable ASCII without quote or backslash passes through unchanged.
  bool plain = true;
  for (char c : text) {
    plain &= c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  }
  if (plain) {
    FUZZ_CHECK(s == "\"" + std::string(text) + "\"");
  }
  return 0;
}
