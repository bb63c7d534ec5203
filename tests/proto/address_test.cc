#include "proto/address.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

struct Valid {
  std::string address;
  std::string local;
  std::string domain;
  bool utf8;
  bool literal;
};

TEST(ParseMailbox, ValidTable) {
  const std::string local64(64, 'a');
  const std::string label63(63, 'b');
  // 64 + 1 + 189 = 254 octets.
  const std::string domain189 =
      std::string(63, 'c') + "." + std::string(63, 'd') + "." + std::string(61, 'e');
  const Valid cases[] = {
      {"user@example.com", "user", "example.com", false, false},
      {"First.Last@Example.COM", "First.Last", "Example.COM", false, false},
      {"a@b", "a", "b", false, false},
      {"user+tag@sub.example.co.uk", "user+tag", "sub.example.co.uk", false, false},
      {"!#$%&'*+-/=?^_`{|}~@x.example", "!#$%&'*+-/=?^_`{|}~", "x.example", false, false},
      {"\"john doe\"@example.com", "\"john doe\"", "example.com", false, false},
      {"\"a\\\"b\"@example.com", "\"a\\\"b\"", "example.com", false, false},
      {"\"a@b\"@example.com", "\"a@b\"", "example.com", false, false},
      {"\"\"@example.com", "\"\"", "example.com", false, false},
      {"\"..\"@example.com", "\"..\"", "example.com", false, false},
      {"user@[192.0.2.1]", "user", "[192.0.2.1]", false, true},
      {"user@[255.255.255.255]", "user", "[255.255.255.255]", false, true},
      {"user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", false, true},
      {"user@[IPv6:::1]", "user", "[IPv6:::1]", false, true},
      {"user@[IPv6:::]", "user", "[IPv6:::]", false, true},
      {"user@[IPv6:1:2:3:4:5:6:7:8]", "user", "[IPv6:1:2:3:4:5:6:7:8]", false, true},
      {"user@[IPv6:1::]", "user", "[IPv6:1::]", false, true},
      {"user@[IPv6:::ffff:192.0.2.1]", "user", "[IPv6:::ffff:192.0.2.1]", false, true},
      {"user@[ipv6:1:2:3:4:5:6:1.2.3.4]", "user", "[ipv6:1:2:3:4:5:6:1.2.3.4]", false, true},
      {"\xc3\xa9l\xc3\xa8ve@example.com", "\xc3\xa9l\xc3\xa8ve", "example.com", true, false},
      {"user@b\xc3\xbc\x63her.example", "user", "b\xc3\xbc\x63her.example", true, false},
      {"\"\xe2\x82\xac\"@example.com", "\"\xe2\x82\xac\"", "example.com", true, false},
      {"\xf0\x9f\x98\x80@example.com", "\xf0\x9f\x98\x80", "example.com", true, false},
      {"a-b@x-y.example", "a-b", "x-y.example", false, false},
      {"1@123.example", "1", "123.example", false, false},
      {local64 + "@example.com", local64, "example.com", false, false},
      {"a@" + label63 + ".example", "a", label63 + ".example", false, false},
      {local64 + "@" + domain189, local64, domain189, false, false},
  };
  for (const Valid& c : cases) {
    test::HeapBytes bytes(c.address);
    Result<Mailbox> m = parse_mailbox(bytes.view());
    ASSERT_TRUE(m.ok()) << c.address << ": " << m.error().message;
    EXPECT_EQ(m->local, c.local) << c.address;
    EXPECT_EQ(m->domain, c.domain) << c.address;
    EXPECT_EQ(m->utf8, c.utf8) << c.address;
    EXPECT_EQ(m->domain_literal, c.literal) << c.address;
    EXPECT_EQ(m->str(), c.address);
  }
}

TEST(ParseMailbox, InvalidTable) {
  const std::string local65(65, 'a');
  const std::string label64(64, 'b');
  const std::string long_domain = std::string(63, 'c') + "." + std::string(63, 'd') + "." +
                                  std::string(63, 'e') + "." + std::string(63, 'f');  // 255
  struct Invalid {
    std::string address;
    std::string message;  // substring of the error message
  };
  const Invalid cases[] = {
      {"", "empty address"},
      {"user", "missing @"},
      {"@example.com", "empty local part"},
      {"user@", "empty domain"},
      {local65 + "@example.com", "local part longer than 64 octets"},
      {"a@" + label64 + ".example", "label longer than 63"},
      {"a@" + long_domain, "address longer than 254"},
      {local65 + "@" + std::string(190, 'x'), "address longer than 254"},
      {".user@example.com", "starts or ends with a dot"},
      {"user.@example.com", "starts or ends with a dot"},
      {"us..er@example.com", "consecutive dots"},
      {"us er@example.com", "invalid character in local part"},
      {"us(er@example.com", "invalid character in local part"},
      {"us,er@example.com", "invalid character in local part"},
      {"user@exa mple.com", "invalid character in domain"},
      {"user@exam_ple.com", "invalid character in domain"},
      {"user@example.com.", "empty label"},
      {"user@.example.com", "empty label"},
      {"user@exa..mple.com", "empty label"},
      {"user@-example.com", "hyphen"},
      {"user@example-.com", "hyphen"},
      {"a@b@example.com", "invalid character in domain"},
      {"user@example.com\r\nRSET", "control character"},
      {"user\n@example.com", "control character"},
      {"user@exam\rple.com", "control character"},
      {std::string("user\0@example.com", 17), "control character"},
      {"user\t@example.com", "control character"},
      {"user\x7f@example.com", "control character"},
      {"<user@example.com>", "angle bracket"},
      {"user@example.com>", "angle bracket"},
      {"\"a<b\"@example.com", "angle bracket"},
      {"\"unterminated@example.com", "quoted"},
      {"\"a\"b@example.com", "quoted"},
      {"\"a\"\"@example.com", "quoted"},
      {"\"a\\", "quoted"},
      {"\xc3@example.com", "invalid character in local part"},
      {"\xc0\xaf@example.com", "invalid character in local part"},          // overlong
      {"\xed\xa0\x80@example.com", "invalid character in local part"},      // surrogate
      {"\xf4\x90\x80\x80@example.com", "invalid character in local part"},  // > U+10FFFF
      {"\"\xff\"@example.com", "invalid UTF-8"},
      {"user@\xff.example", "invalid character in domain"},
      {"user@[192.0.2.256]", "invalid address literal"},
      {"user@[192.0.2]", "invalid address literal"},
      {"user@[192.0.2.1.5]", "invalid address literal"},
      {"user@[1234.0.2.1]", "invalid address literal"},
      {"user@[example.com]", "invalid address literal"},
      {"user@[]", "malformed address literal"},
      {"user@[192.0.2.1", "malformed address literal"},
      {"user@[IPv6:1:2:3:4:5:6:7]", "invalid IPv6"},
      {"user@[IPv6:1:2:3:4:5:6:7:8:9]", "invalid IPv6"},
      {"user@[IPv6:1::2::3]", "invalid IPv6"},
      {"user@[IPv6:12345::]", "invalid IPv6"},
      {"user@[IPv6:1:]", "invalid IPv6"},
      {"user@[IPv6::1]", "invalid IPv6"},
      {"user@[IPv6:g::1]", "invalid IPv6"},
      {"user@[IPv6:1:2:3:4:5:6:7:1.2.3.4]", "invalid IPv6"},
      {"user@[tag:content]", "invalid address literal"},
  };
  for (const Invalid& c : cases) {
    test::HeapBytes bytes(c.address);
    Result<Mailbox> m = parse_mailbox(bytes.view());
    ASSERT_FALSE(m.ok()) << c.address;
    EXPECT_EQ(m.error().code, Errc::kInvalidArgument);
    EXPECT_NE(m.error().message.find(c.message), std::string::npos)
        << c.address << " -> " << m.error().message;
  }
}

TEST(ValidateDomain, Table) {
  EXPECT_TRUE(validate_domain("example.com").ok());
  EXPECT_TRUE(validate_domain("localhost").ok());
  EXPECT_TRUE(validate_domain("xn--bcher-kva.example").ok());
  EXPECT_TRUE(validate_domain(std::string(63, 'a') + ".com").ok());
  EXPECT_FALSE(validate_domain("").ok());
  EXPECT_FALSE(validate_domain("[192.0.2.1]").ok());
  EXPECT_FALSE(validate_domain("example.com.").ok());
  EXPECT_FALSE(validate_domain(std::string(64, 'a') + ".com").ok());
  std::string d256;
  while (d256.size() < 256) {
    d256 += "abcdefg.";
  }
  d256.resize(256);
  EXPECT_FALSE(validate_domain(d256).ok());
}

TEST(NormalizeDomain, LowercasesAndStripsOneTrailingDot) {
  EXPECT_EQ(normalize_domain("Example.COM."), "example.com");
  EXPECT_EQ(normalize_domain("example.com"), "example.com");
  EXPECT_EQ(normalize_domain("B\xc3\x9c.Example"), "b\xc3\x9c.example");  // non-ASCII kept
  EXPECT_EQ(normalize_domain(""), "");
  EXPECT_EQ(normalize_domain("."), "");
}

}  // namespace
}  // namespace ringmail::proto
