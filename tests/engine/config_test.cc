#include "engine/config.h"

#include <gtest/gtest.h>

namespace ringmail::engine {
namespace {

TEST(Config, EmbeddedDefaultParses) {
  auto c = parse_config("", "<test>");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->delivery.max_rcpts_per_txn, 100u);
  EXPECT_EQ(c->delivery.timeouts.data_done, Millis(600'000));
  EXPECT_EQ(c->retry.max_age, Millis(5LL * 24 * 3600 * 1000));
  ASSERT_EQ(c->routing.default_route.hosts.size(), 1u);
  EXPECT_EQ(c->routing.default_route.hosts[0].port, 2525);
  EXPECT_FALSE(c->delivery.ehlo_name.empty());
}

TEST(Config, OverridesMergeOverDefaults) {
  auto c = parse_config(R"(
[delivery]
max_rcpts_per_txn = 50
[delivery.timeouts]
connect = "2s"
[routing]
default = "[::1]:2600, 127.0.0.2:26"
[routing.domains]
"example.org" = "127.0.0.3:2700"
"*.example.net" = "127.0.0.4"
[ingest]
max_message_bytes = "1MiB"
)",
                        "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->delivery.max_rcpts_per_txn, 50u);
  EXPECT_EQ(c->delivery.max_msgs_per_conn, 1000u);  // untouched default
  EXPECT_EQ(c->delivery.timeouts.connect, Millis(2000));
  EXPECT_EQ(c->ingest.max_message_bytes, 1u << 20);
  ASSERT_EQ(c->routing.default_route.hosts.size(), 2u);
  EXPECT_EQ(c->routing.default_route.hosts[0].port, 2600);
  EXPECT_EQ(c->routing.route_for("example.org").hosts[0].host, "127.0.0.3");
  EXPECT_EQ(c->routing.route_for("mx.example.net").hosts[0].port, 25);
  EXPECT_EQ(c->routing.route_for("example.net").hosts[0].host, "::1");  // wildcard needs a label
  EXPECT_EQ(c->routing.route_for("other.test").hosts[0].host, "::1");
}

struct BadCase {
  const char* toml;
  const char* expect;  // substring of the error
};

TEST(Config, ErrorsNameTheKeyAndTheProblem) {
  const BadCase cases[] = {
      {"[delivery]\nmax_rcpts_per_txn = 0\n", "delivery.max_rcpts_per_txn: must be between 1"},
      {"[delivery]\nmax_rcpt = 5\n", "unknown key 'delivery.max_rcpt'"},
      {"bogus = 1\n", "unknown key 'bogus'"},
      {"[delivery.timeouts]\nconnect = \"30\"\n", "delivery.timeouts.connect"},
      {"[delivery.timeouts]\nconnect = 30\n", "must be a duration string"},
      {"[routing]\ndefault = \"mail.example.com:25\"\n", "routing.default"},
      {"[routing]\ndefault = \"127.0.0.1:99999\"\n", "bad port"},
      {"[ingest]\nsocket_mode = \"999\"\n", "ingest.socket_mode"},
      {"[ingest]\nmax_message_bytes = \"12XB\"\n", "ingest.max_message_bytes"},
      {"[retry]\nschedule = []\n", "retry.schedule"},
      {"log_level = \"loud\"\n", "log_level"},
      {"[delivery]\nehlo_name = \"bad name\"\n", "delivery.ehlo_name"},
      {"[delivery\n", "t.toml:1"},
      {"[routing.domains]\n\"not a domain\" = \"127.0.0.1\"\n", "routing.domains.not a domain"},
  };
  for (const auto& bc : cases) {
    auto c = parse_config(bc.toml, "t.toml");
    ASSERT_FALSE(c.ok()) << bc.toml;
    EXPECT_NE(c.error().message.find(bc.expect), std::string::npos)
        << "input: " << bc.toml << "\nerror: " << c.error().message;
    EXPECT_EQ(c.error().code, Errc::kConfig);
  }
}

TEST(Config, Durations) {
  EXPECT_EQ(*parse_duration("250ms"), Millis(250));
  EXPECT_EQ(*parse_duration("30s"), Millis(30'000));
  EXPECT_EQ(*parse_duration("5m"), Millis(300'000));
  EXPECT_EQ(*parse_duration("2h"), Millis(7'200'000));
  EXPECT_EQ(*parse_duration("5d"), Millis(432'000'000));
  EXPECT_FALSE(parse_duration("").ok());
  EXPECT_FALSE(parse_duration("5").ok());
  EXPECT_FALSE(parse_duration("m5").ok());
  EXPECT_FALSE(parse_duration("99999999999999d").ok());
}

TEST(Config, Endpoints) {
  auto a = parse_endpoint("127.0.0.1:2525", 25);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->port, 2525);
  EXPECT_EQ(a->addr.ss_family, AF_INET);
  auto b = parse_endpoint("[::1]", 25);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->port, 25);
  EXPECT_EQ(b->addr.ss_family, AF_INET6);
  EXPECT_FALSE(parse_endpoint("[::1", 25).ok());
  EXPECT_FALSE(parse_endpoint("1.2.3.4:0", 25).ok());
}

}  // namespace
}  // namespace ringmail::engine
