/// json.h — a minimal JSON writer for event lines and tool output.
///
/// append_json_string writes a quoted, escaped JSON string: '"', '\\' and
/// control characters are escaped, valid UTF-8 passes through, and invalid
/// UTF-8 bytes become U+FFFD, so any peer-supplied text yields valid JSON.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringmail::proto {

void append_json_string(std::string& out, std::string_view s);

/// Appends `"key":` (key is trusted, already a valid JSON identifier text).
inline void append_json_key(std::string& out, std::string_view key) {
  out.push_back('"');
  out.append(key);
  out.append("\":");
}

void append_json_uint(std::string& out, uint64_t v);
void append_json_int(std::string& out, int64_t v);
/// Appends a number with up to `decimals` digits after the point.
void append_json_double(std::string& out, double v, int decimals = 3);

}  // namespace ringmail::proto
