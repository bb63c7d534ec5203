/// cli_number.h — numbers in the tools' command-line options, read
/// strictly: decimal digits only (no sign, spaces, exponent or suffix),
/// within a stated range. A typo ("12abc", "-1", "1e3", "nan") is a usage
/// error whose message names the option and the value; it never becomes a
/// different number or an exception.
///
/// Header-only and dependency-free: used by ringmail-inject,
/// ringmail-bench and ringmail-passwd before anything else runs.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace ringmail::tools {

/// "--count: expected a whole number from 1 to 100, got \"abc\"".
inline std::string whole_number_error(std::string_view option, std::string_view text, uint64_t min,
                                      uint64_t max) {
  return std::string(option) + ": expected a whole number from " + std::to_string(min) + " to " +
         std::to_string(max) + ", got \"" + std::string(text) + "\"";
}

/// Reads a whole number in [min, max] (max is capped at T's largest value)
/// into *out. On failure *out is unchanged and *error says why.
template <class T>
bool parse_whole_number(std::string_view option, std::string_view text, uint64_t min, uint64_t max,
                        T* out, std::string* error) {
  static_assert(std::is_unsigned_v<T>);
  if (max > std::numeric_limits<T>::max()) {
    max = std::numeric_limits<T>::max();
  }
  uint64_t v = 0;
  bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
  if (digits) {
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    digits = ec == std::errc() && p == text.data() + text.size();
  }
  if (!digits || v < min || v > max) {
    *error = whole_number_error(option, text, min, max);
    return false;
  }
  *out = static_cast<T>(v);
  return true;
}

/// Reads a number of seconds in (0, max] such as "30" or "2.5" into *out.
/// On failure *out is unchanged and *error says why.
inline bool parse_seconds(std::string_view option, std::string_view text, double max, double* out,
                          std::string* error) {
  double v = 0;
  bool ok = !text.empty() && text.find_first_not_of("0123456789.") == std::string_view::npos;
  if (ok) {
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    ok = ec == std::errc() && p == text.data() + text.size() && std::isfinite(v) && v > 0 &&
         v <= max;
  }
  if (!ok) {
    *error = std::string(option) + ": expected a number of seconds above 0 and at most " +
             std::to_string(static_cast<uint64_t>(max)) + ", got \"" + std::string(text) + "\"";
    return false;
  }
  *out = v;
  return true;
}

}  // namespace ringmail::tools
