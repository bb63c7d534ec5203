/// text_util.h — small byte-level helpers shared by the proto/ codecs
/// (internal to proto/; not part of the public API).
///
/// Pure functions over bytes; no allocation; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringmail::proto::internal {

inline char ascii_upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}
inline char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
inline bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_upper(a[i]) != ascii_upper(b[i])) {
      return false;
    }
  }
  return true;
}

/// Length (1..4) of the well-formed UTF-8 sequence starting at s[pos], or 0
/// when the bytes there are not well-formed UTF-8 (RFC 3629: no overlong
/// forms, no surrogates, nothing above U+10FFFF). Precondition: pos < s.size().
inline size_t utf8_sequence_length(std::string_view s, size_t pos) {
  auto byte = [&](size_t i) -> unsigned { return static_cast<unsigned char>(s[pos + i]); };
  auto cont = [&](size_t i) { return pos + i < s.size() && (byte(i) & 0xC0u) == 0x80u; };
  unsigned b0 = byte(0);
  if (b0 < 0x80) {
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    return cont(1) ? 2 : 0;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) {
      return 0;
    }
    unsigned b1 = byte(1);
    if ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 > 0x9F)) {
      return 0;  // overlong, or a UTF-16 surrogate
    }
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) {
      return 0;
    }
    unsigned b1 = byte(1);
    if ((b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 > 0x8F)) {
      return 0;  // overlong, or above U+10FFFF
    }
    return 4;
  }
  return 0;
}

/// Parses a decimal number of at most 20 digits into *out. Returns false on
/// an empty string, a non-digit, or overflow of uint64_t.
inline bool parse_u64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) {
    return false;
  }
  uint64_t n = 0;
  for (char c : s) {
    if (!is_digit(c)) {
      return false;
    }
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - d) / 10) {
      return false;
    }
    n = n * 10 + d;
  }
  *out = n;
  return true;
}

}  // namespace ringmail::proto::internal
