// The order in which one connection tries a destination's candidates:
// equal-preference MX hosts take turns being first; preference order,
// route-element order and each host's own addresses stay as resolved.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/resolver.h"

namespace ringmail::engine {
namespace {

Candidate cand(const std::string& mx, const std::string& ip, uint32_t tier) {
  Candidate c;
  c.mx = mx;
  auto* sin = reinterpret_cast<sockaddr_in*>(&c.addr);
  sin->sin_family = AF_INET;
  ::inet_pton(AF_INET, ip.c_str(), &sin->sin_addr);
  c.addr_len = sizeof(sockaddr_in);
  c.tier = tier;
  return c;
}

std::string order(const std::vector<Candidate>& cs) {
  std::string out;
  for (const auto& c : cs) {
    char buf[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&c.addr)->sin_addr, buf, sizeof buf);
    out += (out.empty() ? "" : " ") + c.mx + "=" + buf;
  }
  return out;
}

TEST(RouteOrder, EqualPreferenceHostsTakeTurnsBeingFirst) {
  // Two hosts at preference 10 (the first with two addresses), one at 20.
  std::vector<Candidate> base = {cand("a", "10.0.0.1", 10), cand("a", "10.0.0.2", 10),
                                 cand("b", "10.0.0.3", 10), cand("c", "10.0.0.4", 20)};
  std::vector<std::string> seen;
  for (uint64_t turn = 0; turn < 4; ++turn) {
    std::vector<Candidate> cs = base;
    rotate_equal_preference(cs, turn);
    seen.push_back(order(cs));
  }
  EXPECT_EQ(seen[0], "a=10.0.0.1 a=10.0.0.2 b=10.0.0.3 c=10.0.0.4");
  EXPECT_EQ(seen[1], "b=10.0.0.3 a=10.0.0.1 a=10.0.0.2 c=10.0.0.4");
  EXPECT_EQ(seen[2], seen[0]);
  EXPECT_EQ(seen[3], seen[1]);
}

TEST(RouteOrder, DifferentTiersAreNeverMixed) {
  // Route elements (tier high bits) and preferences keep their order; a
  // lone host in a tier is left alone.
  std::vector<Candidate> cs = {cand("x", "10.0.1.1", 0), cand("y", "10.0.1.2", 1u << 16),
                               cand("p", "10.0.1.3", (2u << 16) | 5),
                               cand("q", "10.0.1.4", (2u << 16) | 5)};
  rotate_equal_preference(cs, 1);
  EXPECT_EQ(order(cs), "x=10.0.1.1 y=10.0.1.2 q=10.0.1.4 p=10.0.1.3");
  std::vector<Candidate> empty;
  rotate_equal_preference(empty, 7);
  EXPECT_TRUE(empty.empty());
}

}  // namespace
}  // namespace ringmail::engine
