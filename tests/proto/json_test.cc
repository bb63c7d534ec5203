#include "proto/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ringmail::proto {
namespace {

std::string json(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST(JsonString, Escapes) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "\"\""},
      {"plain text", "\"plain text\""},
      {"quote\"back\\slash", "\"quote\\\"back\\\\slash\""},
      {"a\nb\rc\td\be\ff", "\"a\\nb\\rc\\td\\be\\ff\""},
      {std::string("nul\0x", 5), "\"nul\\u0000x\""},
      {"\x01\x1f", "\"\\u0001\\u001f\""},
      {"\x7f", "\"\\u007f\""},  // DEL is escaped too: logs stay printable
      {"/", "\"/\""},
  };
  for (const auto& [in, expect] : cases) {
    EXPECT_EQ(json(in), expect);
  }
}

TEST(JsonString, ValidUtf8PassesThrough) {
  const std::string valid[] = {
      "caf\xc3\xa9",  "\xe2\x82\xac", "\xf0\x9f\x98\x80",
      "\xed\x9f\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf",
  };
  for (const std::string& s : valid) {
    EXPECT_EQ(json(s), "\"" + s + "\"");
  }
}

TEST(JsonString, InvalidUtf8BecomesReplacementCharacter) {
  const std::string fffd = "\xef\xbf\xbd";
  const std::pair<std::string, std::string> cases[] = {
      {"\xff", fffd},
      {"a\x80z", "a" + fffd + "z"},
      {"\xc3", fffd},                                   // truncated
      {"\xc3(", fffd + "("},                            // bad continuation
      {"\xc0\xaf", fffd + fffd},                        // overlong
      {"\xe0\x80\xaf", fffd + fffd + fffd},             // overlong
      {"\xed\xa0\x80", fffd + fffd + fffd},             // surrogate
      {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},  // > U+10FFFF
      {"\xf8\x88\x80\x80\x80", fffd + fffd + fffd + fffd + fffd},
      {"\xe2\x82", fffd + fffd},
      {"ok\xe2\x82\"", "ok" + fffd + fffd + "\\\""},
  };
  for (const auto& [in, expect] : cases) {
    EXPECT_EQ(json(in), "\"" + expect + "\"") << ::testing::PrintToString(in);
  }
}

TEST(JsonString, AppendsToExistingBuffer) {
  std::string out = "{";
  append_json_key(out, "k");
  append_json_string(out, "v");
  out.push_back('}');
  EXPECT_EQ(out, "{\"k\":\"v\"}");
}

TEST(JsonNumber, Integers) {
  std::string out;
  append_json_uint(out, 0);
  out.push_back(',');
  append_json_uint(out, UINT64_MAX);
  out.push_back(',');
  append_json_int(out, -42);
  out.push_back(',');
  append_json_int(out, INT64_MIN);
  EXPECT_EQ(out, "0,18446744073709551615,-42,-9223372036854775808");
}

TEST(JsonNumber, Doubles) {
  struct Case {
    double v;
    int decimals;
    std::string expect;
  };
  const Case cases[] = {
      {1.5, 3, "1.5"},
      {2.0, 3, "2"},
      {0.1234, 3, "0.123"},
      {0.0005, 3, "0.001"},
      {-0.0001, 3, "0"},
      {-1.25, 1, "-1.2"},
      {100.0, 0, "100"},
      {123.456, 20, "123.45600000000000307"},  // clamped to 17 decimals
      {1e15, 3, "1000000000000000"},
      {std::numeric_limits<double>::quiet_NaN(), 3, "null"},
      {std::numeric_limits<double>::infinity(), 3, "null"},
      {-std::numeric_limits<double>::infinity(), 3, "null"},
  };
  for (const Case& c : cases) {
    std::string out;
    append_json_double(out, c.v, c.decimals);
    EXPECT_EQ(out, c.expect) << c.v;
  }
}

}  // namespace
}  // namespace ringmail::proto
