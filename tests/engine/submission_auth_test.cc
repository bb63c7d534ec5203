// Credentials file, PBKDF2, AUTH failure limiting and trusted networks.
#include "engine/submission_auth.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace ringmail::engine {
namespace {

sockaddr_storage v4(const char* ip) {
  sockaddr_storage ss{};
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  ::inet_pton(AF_INET, ip, &a->sin_addr);
  return ss;
}

sockaddr_storage v6(const char* ip) {
  sockaddr_storage ss{};
  auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
  a->sin6_family = AF_INET6;
  ::inet_pton(AF_INET6, ip, &a->sin6_addr);
  return ss;
}

TEST(Pbkdf2, MatchesRfc7914TestVector) {
  // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64); the
  // first 32 bytes.
  const uint8_t salt[] = {'s', 'a', 'l', 't'};
  auto h = pbkdf2_sha256("passwd", salt, 1);
  ASSERT_TRUE(h.ok());
  const uint8_t expect[] = {0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f, 0xec, 0x16, 0x91,
                            0xc2, 0x25, 0x44, 0xb6, 0x05, 0xf9, 0x41, 0x85, 0x21, 0x6d, 0xde,
                            0x04, 0x65, 0xe6, 0x8b, 0x9d, 0x57, 0xc2, 0x0d, 0xac, 0xbc};
  EXPECT_TRUE(std::equal(h->begin(), h->end(), std::begin(expect)));
}

TEST(Credentials, LineRoundTripsAndVerifies) {
  auto line = make_credential_line("alice@example.test", "correct horse", 1000);
  ASSERT_TRUE(line.ok()) << line.error().message;
  EXPECT_EQ(std::count(line->begin(), line->end(), ':'), 3);
  EXPECT_EQ(line->find("correct"), std::string::npos);  // never the password itself
  auto line2 = make_credential_line("alice@example.test", "correct horse", 1000);
  EXPECT_NE(*line, *line2);  // fresh salt every time

  auto store = CredentialStore::parse("# users\n\n" + *line + "\n", "creds");
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->size(), 1u);
  EXPECT_TRUE(store->verify("alice@example.test", "correct horse"));
  EXPECT_FALSE(store->verify("alice@example.test", "correct horse "));
  EXPECT_FALSE(store->verify("alice@example.test", ""));
  EXPECT_FALSE(store->verify("mallory", "correct horse"));
  EXPECT_FALSE(store->verify("", ""));
}

TEST(Credentials, UnknownUserCostsAsMuchAsAWrongPassword) {
  auto line = make_credential_line("u", "p", 200'000);
  ASSERT_TRUE(line.ok());
  auto store = CredentialStore::parse(*line, "creds");
  ASSERT_TRUE(store.ok());
  auto time = [&](const char* user) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
      EXPECT_FALSE(store->verify(user, "wrong"));
    }
    return std::chrono::steady_clock::now() - t0;
  };
  auto known = time("u");
  auto unknown = time("nobody");
  // Same PBKDF2 work: within a factor of two either way on a noisy machine
  // (a skipped hash would be thousands of times faster).
  EXPECT_GT(unknown * 2, known);
  EXPECT_GT(known * 2, unknown);
}

TEST(Credentials, MalformedFilesNameTheLine) {
  auto good = make_credential_line("u", "p", 1000);
  ASSERT_TRUE(good.ok());
  const std::string zeros(64, '0');
  const std::string bad[] = {
      "u:p",                                      // field count
      "u:100:0011223344556677:" + zeros,          // iterations too low
      "u:99999999999:0011223344556677:" + zeros,  // iterations too high
      "u:1000:0011:" + zeros,                     // salt too short
      "u:1000:zz11223344556677:" + zeros,         // salt not hex
      "u:1000:0011223344556677:abcd",             // hash length
      "u s:1000:0011223344556677:" + zeros,       // space in the user name
      ":1000:0011223344556677:" + zeros,          // no user
  };
  for (const std::string& b : bad) {
    auto s = CredentialStore::parse("# c\n" + b + "\n", "creds.txt");
    ASSERT_FALSE(s.ok()) << b;
    EXPECT_NE(s.error().message.find("creds.txt:2:"), std::string::npos) << s.error().message;
  }
  auto dup = CredentialStore::parse(*good + "\n" + *good + "\n", "c");
  EXPECT_FALSE(dup.ok());
  EXPECT_FALSE(make_credential_line("a:b", "p", 1000).ok());
  EXPECT_FALSE(make_credential_line("", "p", 1000).ok());
  EXPECT_FALSE(make_credential_line("u", "p", 10).ok());
}

TEST(AuthFailureLimiter, BlocksAfterTheLimitUntilTheWindowEnds) {
  AuthFailureLimiter l(3, Millis(60'000));
  TimePoint t{};
  EXPECT_FALSE(l.blocked("192.0.2.1", t));
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(l.blocked("192.0.2.1", t));
    l.record_failure("192.0.2.1", t + Millis(i));
  }
  EXPECT_TRUE(l.blocked("192.0.2.1", t + Millis(10)));
  EXPECT_FALSE(l.blocked("192.0.2.2", t + Millis(10)));  // per address
  EXPECT_TRUE(l.blocked("192.0.2.1", t + Millis(59'999)));
  EXPECT_FALSE(l.blocked("192.0.2.1", t + Millis(60'000)));
}

TEST(AuthFailureLimiter, PendingChecksCountBeforeTheirResult) {
  AuthFailureLimiter l(3, Millis(60'000));
  TimePoint t{};
  const std::string a = "192.0.2.1";
  // Three checks start at once; the fourth is refused before any result.
  EXPECT_TRUE(l.begin(a, t));
  EXPECT_TRUE(l.begin(a, t));
  EXPECT_TRUE(l.begin(a, t));
  EXPECT_FALSE(l.begin(a, t));
  EXPECT_TRUE(l.blocked(a, t));
  EXPECT_TRUE(l.begin("192.0.2.2", t));  // per address
  // A success gives its count back; a failure keeps it.
  l.end(a, t + Millis(1), /*failed=*/false);
  EXPECT_FALSE(l.blocked(a, t + Millis(1)));
  EXPECT_TRUE(l.begin(a, t + Millis(2)));
  l.end(a, t + Millis(3), /*failed=*/true);
  l.end(a, t + Millis(3), /*failed=*/true);
  l.end(a, t + Millis(3), /*failed=*/true);
  EXPECT_TRUE(l.blocked(a, t + Millis(4)));  // three failures
  EXPECT_FALSE(l.blocked(a, t + Millis(60'000)));
}

TEST(AuthFailureLimiter, APendingCheckOutlivesItsWindow) {
  AuthFailureLimiter l(1, Millis(60'000));
  TimePoint t{};
  const std::string a = "192.0.2.1";
  ASSERT_TRUE(l.begin(a, t));
  // The window ends while the check runs: the address is still held, and
  // the failure counts in the new window.
  EXPECT_TRUE(l.blocked(a, t + Millis(60'001)));
  l.end(a, t + Millis(60'002), /*failed=*/true);
  EXPECT_TRUE(l.blocked(a, t + Millis(60'003)));
  EXPECT_FALSE(l.blocked(a, t + Millis(120'002)));
}

TEST(AuthFailureLimiter, FullTableFailsClosed) {
  AuthFailureLimiter l(1, Millis(60'000));
  TimePoint t{};
  for (size_t i = 0; i < AuthFailureLimiter::kMaxTracked; ++i) {
    l.record_failure("a" + std::to_string(i), t);
  }
  EXPECT_EQ(l.tracked(), AuthFailureLimiter::kMaxTracked);
  EXPECT_TRUE(l.blocked("newcomer", t + Millis(1)));  // cannot be tracked: refused
  EXPECT_FALSE(l.begin("newcomer", t + Millis(1)));
  EXPECT_FALSE(l.blocked("newcomer", t + Millis(60'000)));  // old windows ended: room again
  EXPECT_LE(l.tracked(), AuthFailureLimiter::kMaxTracked);
}

TEST(Cidr, MatchesV4V6AndMappedAddresses) {
  auto lo = parse_cidr("127.0.0.0/8");
  auto net = parse_cidr("192.0.2.128/25");
  auto v6net = parse_cidr("2001:db8::/32");
  auto host = parse_cidr("10.1.2.3");
  ASSERT_TRUE(lo.ok() && net.ok() && v6net.ok() && host.ok());
  EXPECT_TRUE(cidr_contains(*lo, v4("127.9.9.9")));
  EXPECT_FALSE(cidr_contains(*lo, v4("128.0.0.1")));
  EXPECT_TRUE(cidr_contains(*net, v4("192.0.2.200")));
  EXPECT_FALSE(cidr_contains(*net, v4("192.0.2.127")));
  EXPECT_TRUE(cidr_contains(*v6net, v6("2001:db8:1::5")));
  EXPECT_FALSE(cidr_contains(*v6net, v6("2001:db9::5")));
  EXPECT_TRUE(cidr_contains(*lo, v6("::ffff:127.0.0.1")));  // a dual-stack listener
  EXPECT_FALSE(cidr_contains(*v6net, v4("127.0.0.1")));
  EXPECT_TRUE(cidr_contains(*host, v4("10.1.2.3")));
  EXPECT_FALSE(cidr_contains(*host, v4("10.1.2.4")));
  EXPECT_FALSE(parse_cidr("10.0.0.0/33").ok());
  EXPECT_FALSE(parse_cidr("example.com/8").ok());
}

TEST(ClientKey, GroupsIpv6By64AndUnmapsIpv4) {
  EXPECT_EQ(client_key(v4("192.0.2.1")), "192.0.2.1");
  EXPECT_EQ(client_key(v6("::ffff:192.0.2.1")), "192.0.2.1");
  EXPECT_EQ(client_key(v6("2001:db8:1:2:aaaa::1")), client_key(v6("2001:db8:1:2:bbbb::2")));
  EXPECT_NE(client_key(v6("2001:db8:1:2::1")), client_key(v6("2001:db8:1:3::1")));
}

}  // namespace
}  // namespace ringmail::engine
