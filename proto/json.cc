#include "proto/json.h"

#include <charconv>
#include <cmath>

#include "proto/text_util.h"

namespace ringmail::proto {

namespace {

constexpr char kHex[] = "0123456789abcdef";
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

void append_control(std::string& out, unsigned char c) {
  switch (c) {
    case '\n':
      out.append("\\n");
      return;
    case '\r':
      out.append("\\r");
      return;
    case '\t':
      out.append("\\t");
      return;
    case '\b':
      out.append("\\b");
      return;
    case '\f':
      out.append("\\f");
      return;
    default:
      out.append("\\u00");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
  }
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.reserve(out.size() + s.size() + 2);
  out.push_back('"');
  size_t run = 0;  // start of the pending run of bytes that need no escaping
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      size_t n = internal::utf8_sequence_length(s, i);
      if (n != 0) {
        i += n;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x80) {
      out.append(kReplacement);  // one U+FFFD per byte that starts no valid sequence
    } else {
      append_control(out, c);
    }
    ++i;
    run = i;
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

void append_json_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

void append_json_int(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

void append_json_double(std::string& out, double v, int decimals) {
  if (!std::isfinite(v)) {
    out.append("null");  // JSON has no NaN or infinity
    return;
  }
  if (decimals < 0) {
    decimals = 0;
  } else if (decimals > 17) {
    decimals = 17;
  }
  char buf[400];  // fixed notation of DBL_MAX needs 309 digits plus decimals
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, decimals);
  if (r.ec != std::errc()) {
    out.append("null");
    return;
  }
  char* end = r.ptr;
  if (decimals > 0) {
    while (end[-1] == '0') {
      --end;
    }
    if (end[-1] == '.') {
      --end;
    }
  }
  std::string_view text(buf, static_cast<size_t>(end - buf));
  if (text == "-0") {
    text = "0";
  }
  out.append(text);
}

}  // namespace ringmail::proto
