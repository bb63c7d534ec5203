#include "proto/smtp_command.h"

#include <gtest/gtest.h>

namespace ringmail::proto {
namespace {

TEST(CommandWriter, FixedCommands) {
  std::string out = "x";
  EXPECT_EQ(append_data(out), 6u);
  EXPECT_EQ(append_rset(out), 6u);
  EXPECT_EQ(append_noop(out), 6u);
  EXPECT_EQ(append_quit(out), 6u);
  EXPECT_EQ(append_starttls(out), 10u);
  EXPECT_EQ(out, "xDATA\r\nRSET\r\nNOOP\r\nQUIT\r\nSTARTTLS\r\n");
}

TEST(CommandWriter, Bdat) {
  std::string out;
  EXPECT_EQ(append_bdat(out, 0, true), 13u);
  EXPECT_EQ(append_bdat(out, 18446744073709551615ull, false), 27u);
  EXPECT_EQ(out, "BDAT 0 LAST\r\nBDAT 18446744073709551615\r\n");
}

TEST(CommandWriter, EhloHelo) {
  std::string out;
  Result<size_t> n = append_ehlo(out, "client.example.com");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, out.size());
  EXPECT_EQ(out, "EHLO client.example.com\r\n");
  out.clear();
  ASSERT_TRUE(append_helo(out, "[192.0.2.1]").ok());
  EXPECT_EQ(out, "HELO [192.0.2.1]\r\n");
  out.clear();
  ASSERT_TRUE(append_ehlo(out, "[IPv6:2001:db8::1]").ok());
  EXPECT_EQ(out, "EHLO [IPv6:2001:db8::1]\r\n");
}

TEST(CommandWriter, MailFromWithParams) {
  struct Case {
    std::string path;
    MailParams params;
    std::string expect;
  };
  const Case cases[] = {
      {"a@b.example", {}, "MAIL FROM:<a@b.example>\r\n"},
      {"", {}, "MAIL FROM:<>\r\n"},
      {"a@b.example",
       {1234, BodyType::k8BitMime, false},
       "MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME\r\n"},
      {"a@b.example", {0, BodyType::k7Bit, true}, "MAIL FROM:<a@b.example> BODY=7BIT SMTPUTF8\r\n"},
      {"\xc3\xa9@b.example",
       {0, BodyType::kOmit, true},
       "MAIL FROM:<\xc3\xa9@b.example> SMTPUTF8\r\n"},
  };
  for (const Case& c : cases) {
    std::string out = "prefix";
    Result<size_t> n = append_mail_from(out, c.path, c.params);
    ASSERT_TRUE(n.ok()) << c.path;
    EXPECT_EQ(*n, c.expect.size());
    EXPECT_EQ(out, "prefix" + c.expect);
  }
}

TEST(CommandWriter, RcptTo) {
  std::string out;
  ASSERT_TRUE(append_rcpt_to(out, "\"john doe\"@example.com").ok());
  EXPECT_EQ(out, "RCPT TO:<\"john doe\"@example.com>\r\n");
}

// Threat: bpo-43124. Every argument with CR, LF or NUL is refused and
// nothing is appended.
TEST(CommandWriter, RefusesLineBreakersEverywhere) {
  const std::string bad[] = {
      "a@b.example>\r\nRSET\r\nMAIL FROM:<x",
      "a@b.example\n",
      "a@b.example\r",
      std::string("a@b.example\0", 12),
      std::string("a\0b@example.com", 15),
      "a\r\n@example.com",
  };
  for (const std::string& s : bad) {
    std::string out = "keep";
    EXPECT_FALSE(append_mail_from(out, s, {}).ok());
    EXPECT_FALSE(append_rcpt_to(out, s).ok());
    EXPECT_FALSE(append_ehlo(out, s).ok());
    EXPECT_FALSE(append_helo(out, s).ok());
    EXPECT_EQ(out, "keep");
  }
  std::string out = "keep";
  EXPECT_FALSE(append_auth_plain(out, std::string("u\0x", 3), "p").ok());
  EXPECT_FALSE(append_auth_plain(out, "u", std::string("p\0x", 3)).ok());
  EXPECT_EQ(out, "keep");
}

TEST(CommandWriter, RefusesInvalidArguments) {
  std::string out;
  EXPECT_FALSE(append_rcpt_to(out, "").ok());  // only MAIL allows the null path
  EXPECT_FALSE(append_rcpt_to(out, "not-an-address").ok());
  EXPECT_FALSE(append_rcpt_to(out, "a@b c").ok());
  EXPECT_FALSE(append_mail_from(out, "<a@b.example>", {}).ok());
  EXPECT_FALSE(append_ehlo(out, "").ok());
  EXPECT_FALSE(append_ehlo(out, "two words").ok());
  EXPECT_FALSE(append_ehlo(out, "[1.2.3.4").ok());
  EXPECT_FALSE(append_ehlo(out, "[a b]").ok());
  EXPECT_FALSE(append_auth_plain(out, "", "p").ok());
  EXPECT_TRUE(out.empty());
}

TEST(CommandWriter, AuthPlain) {
  std::string out;
  Result<size_t> n = append_auth_plain(out, "user", "pass");
  ASSERT_TRUE(n.ok());
  // base64("\0user\0pass")
  EXPECT_EQ(out, "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
  EXPECT_EQ(*n, out.size());
}

TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    std::string out;
    append_base64(out, plain);
    EXPECT_EQ(out, encoded);
    Result<std::string> back = decode_base64(encoded);
    ASSERT_TRUE(back.ok()) << encoded;
    EXPECT_EQ(*back, plain);
  }
}

TEST(Base64, AllByteValuesRoundTrip) {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all.push_back(static_cast<char>(i));
  }
  for (size_t len = 0; len <= all.size(); len += 7) {
    std::string enc;
    append_base64(enc, std::string_view(all).substr(0, len));
    Result<std::string> dec = decode_base64(enc);
    ASSERT_TRUE(dec.ok());
    EXPECT_EQ(*dec, all.substr(0, len));
  }
}

TEST(Base64, RejectsMalformed) {
  const char* bad[] = {"Zg=",      "Zg",   "Z===", "====",    "Zm9v YmFy", "Zm9v\r\n",
                       "Zg==Zg==", "Zm9*", "Zm=v", "Z\x80==", "Zm9vYmFy="};
  for (const char* b : bad) {
    EXPECT_FALSE(decode_base64(b).ok()) << b;
  }
}

}  // namespace
}  // namespace ringmail::proto
