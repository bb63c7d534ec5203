#include "proto/esmtp_caps.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

// Builds the Reply the way the delivery session gets it: through the parser.
Reply parse(std::string_view wire) {
  test::HeapBytes bytes(wire);
  ReplyParser p;
  ParseResult r = p.parse(bytes.span());
  EXPECT_EQ(r.status, ParseStatus::kDone) << wire;
  return p.take_reply();
}

Capabilities caps_of(std::string_view wire) {
  return parse_ehlo_capabilities(parse(wire));
}

TEST(EhloCaps, TypicalPostfixReply) {
  Capabilities c = caps_of(
      "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
      "250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
      "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n");
  EXPECT_TRUE(c.pipelining);
  EXPECT_TRUE(c.size_advertised);
  EXPECT_EQ(c.size_limit, 10240000u);
  EXPECT_TRUE(c.starttls);
  EXPECT_TRUE(c.enhanced_status_codes);
  EXPECT_TRUE(c.eightbitmime);
  EXPECT_TRUE(c.dsn);
  EXPECT_TRUE(c.smtputf8);
  EXPECT_TRUE(c.chunking);
  EXPECT_FALSE(c.binarymime);
  EXPECT_EQ(c.auth, 0u);
}

TEST(EhloCaps, SingleLineReplyHasNoCapabilities) {
  Capabilities c = caps_of("250 mx.example.com PIPELINING\r\n");
  EXPECT_FALSE(c.pipelining);
  EXPECT_FALSE(c.size_advertised);
}

TEST(EhloCaps, FirstLineIsNeverACapability) {
  Capabilities c = caps_of("250-PIPELINING\r\n250 8BITMIME\r\n");
  EXPECT_FALSE(c.pipelining);
  EXPECT_TRUE(c.eightbitmime);
}

TEST(EhloCaps, KeywordsAreCaseInsensitive) {
  Capabilities c = caps_of("250-x\r\n250-pipelining\r\n250-Size 2048\r\n250 binaryMIME\r\n");
  EXPECT_TRUE(c.pipelining);
  EXPECT_EQ(c.size_limit, 2048u);
  EXPECT_TRUE(c.binarymime);
}

TEST(EhloCaps, SizeEdgeCases) {
  struct Case {
    const char* line;
    bool advertised;
    uint64_t limit;
  };
  const Case cases[] = {
      {"SIZE", true, 0},
      {"SIZE 0", true, 0},
      {"SIZE 1", true, 0},     // not credible
      {"SIZE 1023", true, 0},  // just below kMinCredibleSize
      {"SIZE 1024", true, 1024},
      {"SIZE 18446744073709551615", true, UINT64_MAX},
      {"SIZE 18446744073709551616", true, 0},  // overflow
      {"SIZE 99999999999999999999", true, 0},
      {"SIZE 123456789012345678901234567890", true, 0},
      {"SIZE -5", true, 0},
      {"SIZE 10M", true, 0},
      {"SIZE  52428800", true, 52428800},  // extra space
      {"SIZEX 100000", false, 0},
  };
  for (const Case& c : cases) {
    Capabilities caps = caps_of("250-mx\r\n250 " + std::string(c.line) + "\r\n");
    EXPECT_EQ(caps.size_advertised, c.advertised) << c.line;
    EXPECT_EQ(caps.size_limit, c.limit) << c.line;
  }
}

TEST(EhloCaps, AuthMechanisms) {
  Capabilities c =
      caps_of("250-mx\r\n250 AUTH PLAIN login CRAM-MD5 XOAUTH2 SCRAM-SHA-256 GSSAPI\r\n");
  EXPECT_EQ(c.auth, kAuthPlain | kAuthLogin | kAuthCramMd5 | kAuthXoauth2 | kAuthScramSha256);
  Capabilities old = caps_of("250-mx\r\n250-AUTH=LOGIN PLAIN\r\n250 OK\r\n");
  EXPECT_EQ(old.auth, kAuthLogin | kAuthPlain);
  Capabilities none = caps_of("250-mx\r\n250 AUTH\r\n");
  EXPECT_EQ(none.auth, 0u);
}

TEST(EhloCaps, ThousandAuthMechanismsAreHarmless) {
  std::string line = "250-mx\r\n250 AUTH";
  for (int i = 0; i < 1000; ++i) {
    line += " X" + std::to_string(i);
  }
  line += " PLAIN\r\n";
  ReplyParser::Limits limits;
  limits.max_line = 16384;
  ReplyParser p(limits);
  test::HeapBytes bytes(line);
  ASSERT_EQ(p.parse(bytes.span()).status, ParseStatus::kDone);
  EXPECT_EQ(parse_ehlo_capabilities(p.reply()).auth, kAuthPlain);
}

TEST(EhloCaps, OnlyTheFirstCapabilitiesAreExamined) {
  Reply r;
  r.code = 250;
  r.text = "mx";
  for (size_t i = 0; i < Capabilities::kMaxCapabilities; ++i) {
    r.text += "\nX-JUNK";
  }
  r.text += "\nPIPELINING";
  EXPECT_FALSE(parse_ehlo_capabilities(r).pipelining);
  r.text = "mx\nPIPELINING";
  EXPECT_TRUE(parse_ehlo_capabilities(r).pipelining);
}

TEST(EhloCaps, UnknownAndGarbageLinesAreIgnored) {
  Capabilities c = caps_of("250-mx\r\n250-\r\n250-   \r\n250-X-FOO bar\r\n250 STARTTLS extra\r\n");
  EXPECT_TRUE(c.starttls);
  EXPECT_FALSE(c.pipelining);
}

}  // namespace
}  // namespace ringmail::proto
