#include "proto/template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proto/message_body.h"

namespace ringmail::proto {
namespace {

std::string vars(std::initializer_list<std::pair<std::string_view, std::string_view>> kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    append_var(out, k, v);
  }
  return out;
}

Template parse_ok(std::string_view text) {
  auto t = Template::parse(text);
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
  return std::move(t).value();
}

std::string render_str(const Template& t, const std::string& encoded, bool stuffed = false) {
  auto b = bind_vars(t, encoded, "rcpt@example.com");
  EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().message);
  return render_to_string(t, *b, stuffed);
}

// Records pieces, checking that shared ones point into the template.
class CheckingSink final : public RenderSink {
 public:
  explicit CheckingSink(const Template& t) : t_(t) {}
  void shared(std::string_view b) override {
    auto inside = [&](std::string_view whole) {
      return b.data() >= whole.data() && b.data() + b.size() <= whole.data() + whole.size();
    };
    EXPECT_TRUE(inside(t_.text()) || inside(t_.stuffed_text()));
    out += b;
    shared_bytes += b.size();
  }
  void copied(std::string_view b) override {
    out += b;
    copied_bytes += b.size();
  }
  const Template& t_;
  std::string out;
  size_t shared_bytes = 0;
  size_t copied_bytes = 0;
};

constexpr std::string_view kMsg =
    "From: News <news@example.com>\r\n"
    "To: {{name}} <{{email}}>\r\n"
    "Subject: Hello {{name}}\r\n"
    "\r\n"
    "Dear {{name}},\r\n"
    "your code is {{code}}.\r\n"
    "{{{{literal}} and }} stay.\r\n";

TEST(Template, ParsesSlotsAndContexts) {
  Template t = parse_ok(kMsg);
  EXPECT_EQ(t.names(), (std::vector<std::string>{"code", "email", "name"}));
  EXPECT_TRUE(t.slot_in_header(1));   // email
  EXPECT_TRUE(t.slot_in_header(2));   // name: also used in the body, header rules win
  EXPECT_FALSE(t.slot_in_header(0));  // code
  EXPECT_TRUE(t.header_has_vars());
  EXPECT_TRUE(t.body_has_vars());
  EXPECT_EQ(t.body_offset(), kMsg.find("Dear"));
  size_t slots = 0;
  for (const auto& p : t.parts()) {
    slots += p.slot >= 0 ? 1 : 0;
  }
  EXPECT_EQ(slots, 5u);
}

TEST(Template, RendersEachRecipientsValues) {
  Template t = parse_ok(kMsg);
  std::string got = render_str(t, vars({{"name", "Ana"}, {"email", "ana@x.test"}, {"code", "42"}}));
  EXPECT_EQ(got,
            "From: News <news@example.com>\r\n"
            "To: Ana <ana@x.test>\r\n"
            "Subject: Hello Ana\r\n"
            "\r\n"
            "Dear Ana,\r\n"
            "your code is 42.\r\n"
            "{{literal}} and }} stay.\r\n");
}

TEST(Template, SharedPartsAreReferencedNotCopied) {
  Template t = parse_ok(kMsg);
  // Bound values are views into the encoded vars: keep them alive.
  const std::string enc = vars({{"name", "Bo"}, {"email", "b@x.test"}, {"code", "7"}});
  auto b = bind_vars(t, enc, "r@x.test");
  ASSERT_TRUE(b.ok());
  CheckingSink sink(t);
  RenderInfo info = render(t, *b, false, sink);
  EXPECT_EQ(sink.copied_bytes, 2u * 3 + 8 + 1);  // "Bo" x3, "b@x.test", "7"
  EXPECT_EQ(sink.shared_bytes, t.static_size());
  EXPECT_EQ(info.size, sink.out.size());
  EXPECT_EQ(rendered_size(t, *b), sink.out.size());
}

TEST(Template, EscapesAndLiteralBraces) {
  EXPECT_EQ(render_str(parse_ok("\r\n{{{{"), ""), "\r\n{{");
  EXPECT_EQ(render_str(parse_ok("\r\n{{{{{"), ""), "\r\n{{{");
  EXPECT_EQ(render_str(parse_ok("\r\n{{{{{{{{x}}"), ""), "\r\n{{{{x}}");
  EXPECT_EQ(render_str(parse_ok("\r\n}} { } {x}"), ""), "\r\n}} { } {x}");
  EXPECT_EQ(render_str(parse_ok("\r\n{{{{{{a}}"), vars({{"a", "v"}})), "\r\n{{v");
  Template none = parse_ok("Subject: plain\r\n\r\nbody\r\n");
  EXPECT_FALSE(none.has_vars());
  EXPECT_EQ(render_str(none, ""), "Subject: plain\r\n\r\nbody\r\n");
}

TEST(Template, ParseErrorsHaveOffsets) {
  struct Case {
    std::string text;
    const char* needle;
  } cases[] = {
      {"\r\nab{{", "offset 4"},
      {"\r\nab{{}}", "not followed by a variable name"},
      {"\r\n{{{x}}}", "not followed by a variable name"},
      {"\r\n{{na me}}", "not closed"},
      {"\r\n{{name}", "not closed"},
      {"\r\n{{" + std::string(65, 'a') + "}}", "longer than 64"},
      {"X-{{h}}: v\r\n\r\n", "header field name"},
      {"{{h}}\r\n\r\n", "header field name"},
  };
  for (const Case& c : cases) {
    auto t = Template::parse(c.text);
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_NE(t.error().message.find(c.needle), std::string::npos) << t.error().message;
  }
  // A 64-byte name is fine; continuation lines may hold placeholders.
  EXPECT_TRUE(Template::parse("\r\n{{" + std::string(64, 'a') + "}}").ok());
  EXPECT_TRUE(Template::parse("Subject: a\r\n {{b}}\r\n\r\n").ok());
}

TEST(Template, Limits) {
  TemplateLimits lim;
  lim.max_placeholders = 3;
  EXPECT_TRUE(Template::parse("\r\n{{a}}{{a}}{{a}}", lim).ok());
  EXPECT_FALSE(Template::parse("\r\n{{a}}{{a}}{{a}}{{a}}", lim).ok());
  lim = TemplateLimits{};
  lim.max_names = 2;
  EXPECT_TRUE(Template::parse("\r\n{{a}}{{b}}{{a}}", lim).ok());
  EXPECT_FALSE(Template::parse("\r\n{{a}}{{b}}{{c}}", lim).ok());
}

TEST(TemplateVars, EncodeDecode) {
  std::string enc = vars({{"a", ""}, {"long.name-x_1", std::string(300, 'v')}, {"z", "\r\n\0"}});
  auto d = decode_vars(enc);
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0].name, "a");
  EXPECT_EQ((*d)[0].value, "");
  EXPECT_EQ((*d)[1].value.size(), 300u);
  EXPECT_TRUE(decode_vars("").ok());
  // Every truncation of a valid encoding is an error (or a shorter valid one
  // exactly at a boundary).
  for (size_t n = 1; n < enc.size(); ++n) {
    auto part = decode_vars(std::string_view(enc).substr(0, n));
    if (part.ok()) {
      EXPECT_TRUE(n == 6 || n == 6 + 1 + 13 + 4 + 300) << n;
    }
  }
}

TEST(TemplateVars, DecodeErrors) {
  EXPECT_FALSE(decode_vars(std::string("\0", 1)).ok());  // empty name
  EXPECT_FALSE(decode_vars(vars({{"a", "1"}, {"a", "2"}})).ok());
  EXPECT_FALSE(decode_vars(vars({{"bad name", "1"}})).ok());
  std::string huge_len =
      "\x01"
      "a"
      "\xff\xff\xff\xff";
  EXPECT_FALSE(decode_vars(huge_len).ok());
  VarsLimits lim;
  lim.max_vars = 1;
  EXPECT_FALSE(decode_vars(vars({{"a", "1"}, {"b", "2"}}), lim).ok());
  lim = VarsLimits{};
  lim.max_value = 3;
  EXPECT_FALSE(decode_vars(vars({{"a", "1234"}}), lim).ok());
  lim = VarsLimits{};
  lim.max_total = 10;
  EXPECT_FALSE(decode_vars(vars({{"a", "123456"}}), lim).ok());
}

TEST(TemplateVars, MissingVariableNamesItAndTheRecipient) {
  Template t = parse_ok(kMsg);
  auto b = bind_vars(t, vars({{"name", "Ana"}, {"email", "a@x.test"}}), "ana@x.test");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().message, "recipient ana@x.test: missing variable \"code\"");
  // Unused variables are ignored; empty values are values.
  auto ok = bind_vars(t, vars({{"name", ""}, {"email", ""}, {"code", ""}, {"unused", "x"}}), "r");
  EXPECT_TRUE(ok.ok());
}

TEST(TemplateVars, HeaderValuesCannotBreakLines) {
  Template t = parse_ok(kMsg);
  const std::vector<std::string_view> bads = {"a\r\nBcc: x@evil.test", "a\nb", "a\rb",
                                              std::string_view("a\0b", 3)};
  for (std::string_view bad : bads) {
    auto b = bind_vars(t, vars({{"name", bad}, {"email", "e"}, {"code", "1"}}), "r@x.test");
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.error().message.find("\"name\" is used in the header section"), std::string::npos);
  }
  auto nul = bind_vars(
      t, vars({{"name", "n"}, {"email", "e"}, {"code", std::string_view("1\0", 2)}}), "r@x.test");
  ASSERT_FALSE(nul.ok());
  EXPECT_NE(nul.error().message.find("NUL"), std::string::npos);
}

TEST(TemplateRender, BodyValuesAreNormalisedAndStuffed) {
  Template t = parse_ok("Subject: s\r\n\r\n{{a}}\r\nx{{b}}.end\r\n");
  std::string enc = vars({{"a", ".dot\nline\r.two\r\n..three"}, {"b", "1\n"}});
  std::string plain = render_str(t, enc, false);
  EXPECT_EQ(plain, "Subject: s\r\n\r\n.dot\r\nline\r\n.two\r\n..three\r\nx1\r\n.end\r\n");
  std::string stuffed = render_str(t, enc, true);
  std::string want;
  append_dot_stuffed(plain, want);
  EXPECT_EQ(stuffed, want);
  EXPECT_EQ(stuffed, "Subject: s\r\n\r\n..dot\r\nline\r\n..two\r\n...three\r\nx1\r\n..end\r\n");
  auto b = bind_vars(t, enc, "r");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(rendered_size(t, *b), plain.size());
}

TEST(TemplateRender, StuffedEqualsStuffingTheRendering) {
  const std::string texts[] = {
      ".start\r\n\r\n.b\r\n{{v}}\r\n",
      "Subject: {{v}}\r\n\r\n{{v}}.x\r\n.{{v}}\r\n..\r\n",
      "\r\n{{v}}{{v}}{{v}}",
      "\r\n{{{{\r\n.{{v}}",
  };
  const std::string values[] = {"", ".", "\r\n", "a\n.", "\r\n.\r\n", ".\r", "x"};
  for (const std::string& text : texts) {
    auto t = Template::parse(text);
    ASSERT_TRUE(t.ok()) << t.error().message;
    for (const std::string& v : values) {
      std::string enc = vars({{"v", v}});
      auto b = bind_vars(*t, enc, "r");
      if (!b.ok()) {
        continue;  // header values with CR/LF
      }
      std::string plain = render_to_string(*t, *b, false);
      std::string normalised;
      normalize_body(plain, normalised);
      if (!plain.empty() && plain.ends_with("\r\n")) {
        EXPECT_EQ(normalised, plain) << "rendered output is normalised";
      }
      std::string want;
      append_dot_stuffed(plain, want);
      EXPECT_EQ(render_to_string(*t, *b, true), want) << text << " / " << v;
      EXPECT_EQ(rendered_size(*t, *b), plain.size());
    }
  }
}

TEST(TemplateRender, ReportsEightBitValues) {
  Template t = parse_ok("Subject: {{s}}\r\n\r\nx\r\n");
  const std::string enc8 = vars({{"s", "caf\xc3\xa9"}});
  auto b = bind_vars(t, enc8, "r");
  ASSERT_TRUE(b.ok());
  std::string out;
  class Sink final : public RenderSink {
   public:
    void shared(std::string_view) override {}
    void copied(std::string_view) override {}
  } sink;
  EXPECT_TRUE(render(t, *b, false, sink).eight_bit);
  const std::string enc7 = vars({{"s", "cafe"}});
  auto plain = bind_vars(t, enc7, "r");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(render(t, *plain, false, sink).eight_bit);
}

}  // namespace
}  // namespace ringmail::proto
