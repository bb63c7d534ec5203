#include "proto/json_reader.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::HeapBytes;

Result<JsonDocument> parse(const HeapBytes& b, const JsonLimits& l = {}) {
  return JsonDocument::parse(b.view(), l);
}

TEST(JsonReader, InjectShape) {
  HeapBytes b(
      R"( {"envelope_sender":"a@example.com","content":"Subject: x\r\n\r\nhi \u00e9\ud83d\ude00",
    "recipients":[{"email":"b@example.com","substitutions":{"name":"B\"ob","n":12}},
                  {"email":"c@example.com"}], "flag": true, "none": null, "x": -1.5e3 } )");
  auto d = parse(b);
  ASSERT_TRUE(d.ok()) << d.error().message;
  JsonValue root = d->root();
  ASSERT_TRUE(root.is_object());
  EXPECT_EQ(root.size(), 6u);
  EXPECT_EQ(root.find("envelope_sender")->str(), "a@example.com");
  EXPECT_EQ(root.find("content")->str(), "Subject: x\r\n\r\nhi \xc3\xa9\xf0\x9f\x98\x80");
  auto rcpts = root.find("recipients")->items();
  ASSERT_EQ(rcpts.size(), 2u);
  EXPECT_EQ(rcpts[0].find("email")->str(), "b@example.com");
  auto subs = rcpts[0].find("substitutions")->members();
  ASSERT_EQ(subs.size(), 2u);
  EXPECT_EQ(subs[0].first.str(), "name");
  EXPECT_EQ(subs[0].second.str(), "B\"ob");
  EXPECT_EQ(subs[1].second.type(), JsonType::kNumber);
  EXPECT_EQ(subs[1].second.raw(), "12");
  EXPECT_FALSE(rcpts[1].find("substitutions").has_value());
  EXPECT_EQ(root.find("flag")->type(), JsonType::kTrue);
  EXPECT_TRUE(root.find("none")->is_null());
  EXPECT_EQ(root.find("x")->raw(), "-1.5e3");
  EXPECT_FALSE(root.find("missing").has_value());
}

TEST(JsonReader, EscapedKeysAndDuplicates) {
  HeapBytes b(R"({"a\u0062":1,"ab":2,"c":[]})");
  auto d = parse(b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->root().count("ab"), 2u);
  EXPECT_EQ(d->root().find("ab")->raw(), "1");
  EXPECT_EQ(d->root().find("c")->size(), 0u);
}

TEST(JsonReader, Scalars) {
  for (const char* ok : {"0", "-0", "1.25", "1e5", "1E-5", "\"\"", "true", "false", "null", "[]",
                         "{}", " [ 1 , [ 2 ] ] "}) {
    HeapBytes b(ok);
    EXPECT_TRUE(parse(b).ok()) << ok;
  }
}

TEST(JsonReader, Refusals) {
  const std::vector<std::string> bad = {
      "",
      " ",
      "01",
      "-",
      "1.",
      ".5",
      "1e",
      "+1",
      "NaN",
      "[1,]",
      "{\"a\":1,}",
      "{\"a\" 1}",
      "{a:1}",
      "[1 2]",
      "\"abc",
      "\"a\\x\"",
      "\"\\u12\"",
      "\"\\ud800\"",
      "\"\\udc00\"",
      "\"\\ud800\\u0041\"",
      std::string("\"a\x01\""),
      "\"\xff\"",
      "\"\xc0\xaf\"",
      "\"\xed\xa0\x80\"",
      "\"\xf4\x90\x80\x80\"",
      "\"\xe2\x82\"",
      "1 2",
      "{} x",
      "tru",
      "nul",
      "[",
      "{",
  };
  for (const auto& s : bad) {
    HeapBytes b(s);
    EXPECT_FALSE(parse(b).ok()) << s;
  }
}

TEST(JsonReader, Limits) {
  JsonLimits l;
  l.max_depth = 3;
  l.max_nodes = 5;
  HeapBytes deep("[[[1]]]");
  EXPECT_TRUE(parse(deep, l).ok());
  HeapBytes deeper("[[[[1]]]]");
  auto r = parse(deeper, l);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kLimit);
  HeapBytes wide("[1,2,3,4]");
  EXPECT_TRUE(parse(wide, l).ok());
  HeapBytes wider("[1,2,3,4,5]");
  r = parse(wider, l);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kLimit);
  // The default depth limit holds the stack for a hostile nesting.
  std::string nest(100000, '[');
  HeapBytes n(nest);
  EXPECT_FALSE(parse(n).ok());
}

TEST(JsonReader, ErrorsNameTheOffset) {
  HeapBytes b("{\"a\":tx}");
  auto r = parse(b);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("byte 5"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace ringmail::proto
