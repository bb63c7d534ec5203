#include "engine/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

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
  // The submission listeners' deadlines and slots.
  EXPECT_EQ(c->submission.command_timeout, Millis(60'000));
  EXPECT_EQ(c->submission.data_min_rate, 1024u);
  EXPECT_EQ(c->submission.data_rate_grace, Millis(30'000));
  EXPECT_EQ(c->submission.reclaim_idle_after, Millis(10'000));
  EXPECT_EQ(c->submission.tls_handshake_timeout, Millis(10'000));
  EXPECT_EQ(c->submission.max_tls_handshakes, 100u);
  EXPECT_EQ(c->tls.handshake_timeout, Millis(30'000));
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
      {"[routing]\ndefault = \"bad_host!:25\"\n", "routing.default"},
      {"[[shaping]]\nmatch = \"gmail.com\"\nmsg_rate = \"fast\"\n", "shaping[0].msg_rate"},
      {"[[shaping]]\nmax_connections = 5\n", "shaping[0].match"},
      {"[[pools]]\nname = \"p\"\nsources = [\"nope\"]\n", "pools[0].sources"},
      {"[[sources]]\nname = \"a\"\nbind = \"::1\"\n", "sources[0].bind"},
      {"[[pool_rules]]\nsender_domain = \"x.test\"\npool = \"nope\"\n", "pool_rules[0].pool"},
      {"[limits]\nmax_queued_bytes = 5\n", "limits.max_queued_bytes"},
      {"[routing]\ndefault = \"127.0.0.1:99999\"\n", "bad port"},
      {"[ingest]\nsocket_mode = \"999\"\n", "ingest.socket_mode"},
      {"[ingest]\nmax_message_bytes = \"12XB\"\n", "ingest.max_message_bytes"},
      {"[retry]\nschedule = []\n", "retry.schedule"},
      {"log_level = \"loud\"\n", "log_level"},
      {"[delivery]\nehlo_name = \"bad name\"\n", "delivery.ehlo_name"},
      {"[delivery\n", "t.toml:1"},
      {"[routing.domains]\n\"not a domain\" = \"127.0.0.1\"\n", "routing.domains.not a domain"},
      {"[submission]\ncommand_timeout = \"10ms\"\n", "submission.command_timeout"},
      {"[submission]\ndata_min_rate = 0\n", "submission.data_min_rate: must be between 1"},
      {"[submission]\ndata_min_rate = \"fast\"\n", "submission.data_min_rate"},
      {"[submission]\ndata_rate_grace = \"2h\"\n", "submission.data_rate_grace"},
      {"[submission]\nreclaim_idle_after = \"-1s\"\n", "submission.reclaim_idle_after"},
      {"[submission]\ntls_handshake_timeout = \"11m\"\n", "submission.tls_handshake_timeout"},
      {"[submission]\nmax_tls_handshakes = 0\n", "submission.max_tls_handshakes"},
  };
  for (const auto& bc : cases) {
    auto c = parse_config(bc.toml, "t.toml");
    ASSERT_FALSE(c.ok()) << bc.toml;
    EXPECT_NE(c.error().message.find(bc.expect), std::string::npos)
        << "input: " << bc.toml << "\nerror: " << c.error().message;
    EXPECT_EQ(c.error().code, Errc::kConfig);
  }
}

TEST(Config, ShapingRulesPickTheBestMatch) {
  auto c = parse_config(R"(
[delivery]
max_conns_per_destination = 7
msg_rate = "10/s"
[[shaping]]
match = "*"
max_connections = 3
[[shaping]]
match = "*.yahoo.com"
max_connections = 2
msg_rate = "600/m"
[[shaping]]
match = "mail.yahoo.com"
max_rcpts_per_txn = 5
retry_schedule = ["2m"]
)",
                        "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  Shaping other = c->shaping_for("example.org");
  EXPECT_EQ(other.max_connections, 3u);  // "*" rule
  EXPECT_DOUBLE_EQ(other.msg_rate.per_second, 10.0);
  Shaping sub = c->shaping_for("eu.yahoo.com");
  EXPECT_EQ(sub.max_connections, 2u);
  EXPECT_DOUBLE_EQ(sub.msg_rate.per_second, 10.0);  // 600/m
  Shaping exact = c->shaping_for("mail.yahoo.com");
  EXPECT_EQ(exact.max_rcpts_per_txn, 5u);
  EXPECT_EQ(exact.max_connections, 7u);  // an exact rule only overrides what it sets
  ASSERT_EQ(exact.retry_schedule.size(), 1u);
  EXPECT_EQ(exact.retry_schedule[0], Millis(120'000));
}

TEST(Config, SourcesPoolsAndRules) {
  auto c = parse_config(R"(
[[sources]]
name = "a"
bind = "127.0.0.2"
ehlo_name = "a.example.com"
[[sources]]
name = "b"
bind6 = "::1"
[[pools]]
name = "default"
sources = ["a"]
[[pools]]
name = "bulk"
sources = ["a", "b"]
[[pool_rules]]
sender_domain = "*.news.example"
pool = "bulk"
)",
                        "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const EgressConfig& e = c->egress;
  ASSERT_EQ(e.sources.size(), 2u);
  EXPECT_TRUE(e.sources[0].has_v4);
  EXPECT_TRUE(e.sources[1].has_v6);
  EXPECT_EQ(e.sources[1].ehlo_name, c->delivery.ehlo_name);
  EXPECT_EQ(*e.pool_for("", "example.org"), 0u);
  EXPECT_EQ(*e.pool_for("", "a.news.example"), 1u);
  EXPECT_EQ(*e.pool_for("bulk", "example.org"), 1u);
  EXPECT_FALSE(e.pool_for("missing", "example.org").has_value());
}

TEST(Config, Rates) {
  EXPECT_DOUBLE_EQ(parse_rate("100/s")->per_second, 100.0);
  EXPECT_DOUBLE_EQ(parse_rate("60/m")->per_second, 1.0);
  EXPECT_DOUBLE_EQ(parse_rate("7200/h")->per_second, 2.0);
  EXPECT_FALSE(parse_rate("")->limited());
  EXPECT_FALSE(parse_rate("10").ok());
  EXPECT_FALSE(parse_rate("0/s").ok());
  EXPECT_FALSE(parse_rate("x/s").ok());
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

TEST(Config, RatesMustBeFiniteAndWithinBounds) {
  for (const char* bad : {"nan/s", "NaN/m", "inf/s", "-inf/s", "infinity/h", "1e400/s", "1e-300/s",
                          "2000000/s", "0.5/d", "-5/s", "5/y", "/s"}) {
    auto r = parse_rate(bad);
    ASSERT_FALSE(r.ok()) << bad << " parsed as " << r->per_second << "/s";
    EXPECT_NE(r.error().message.find(bad), std::string::npos) << r.error().message;
  }
  EXPECT_DOUBLE_EQ(parse_rate("1000000/s")->per_second, 1e6);
  EXPECT_DOUBLE_EQ(parse_rate("1/d")->per_second, 1.0 / 86400);
  EXPECT_DOUBLE_EQ(parse_rate("0.5/s")->per_second, 0.5);
  // Every place a rate is read names its key.
  const BadCase cases[] = {
      {"[delivery]\nmsg_rate = \"nan/s\"\n", "delivery.msg_rate"},
      {"[delivery]\nconnect_rate = \"inf/s\"\n", "delivery.connect_rate"},
      {"[[shaping]]\nmatch = \"*\"\nmsg_rate = \"inf/s\"\n", "shaping[0].msg_rate"},
      {"[[shaping]]\nmatch = \"*\"\nconnect_rate = \"nan/m\"\n", "shaping[0].connect_rate"},
  };
  for (const auto& bc : cases) {
    auto c = parse_config(bc.toml, "t.toml");
    ASSERT_FALSE(c.ok()) << bc.toml;
    EXPECT_NE(c.error().message.find(bc.expect), std::string::npos) << c.error().message;
  }
}

TEST(Config, FractionalDurations) {
  auto ms = [](std::string_view text) -> int64_t {
    auto d = parse_duration(text);
    EXPECT_TRUE(d.ok()) << text << ": " << d.error().message;
    return d.ok() ? d->count() : -1;
  };
  EXPECT_EQ(ms("1.5s"), 1'500);
  EXPECT_EQ(ms("0.5m"), 30'000);
  EXPECT_EQ(ms("2.25h"), 8'100'000);
  EXPECT_EQ(ms("1.5d"), 129'600'000);
  EXPECT_EQ(ms("0.001s"), 1);
  EXPECT_EQ(ms("0.0s"), 0);
  EXPECT_EQ(ms("250ms"), 250);
  EXPECT_EQ(ms("250.0ms"), 250);
  // Finer than a millisecond is refused, with a message that says so.
  for (const char* text : {"1.5ms", "0.0001s", "1.0000001s"}) {
    auto d = parse_duration(text);
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_NE(d.error().message.find("millisecond"), std::string::npos) << d.error().message;
  }
  for (const char* text : {"1.s", ".5s", "1.5", "1..5s", "1.5.5s", "1,5s", "-1.5s", "1.5 s",
                           "99999999999.5d", "1.00000000000000000001s"}) {
    EXPECT_FALSE(parse_duration(text).ok()) << text;
  }
  auto c = parse_config("[delivery.timeouts]\nconnect = \"1.5s\"\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->delivery.timeouts.connect, Millis(1'500));
}

TEST(Config, LoadingADirectoryOrAnUnreadableFileIsAnError) {
  std::string tmpl = "/tmp/ringmail-config-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl;
  auto c = load_config_file(dir);
  ASSERT_FALSE(c.ok()) << "a directory loaded as a configuration";
  EXPECT_EQ(c.error().code, Errc::kConfig);
  EXPECT_NE(c.error().message.find(dir), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("directory"), std::string::npos) << c.error().message;

  const std::string missing = dir + "/missing.toml";
  c = load_config_file(missing);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find(missing), std::string::npos) << c.error().message;

  const std::string file = dir + "/ok.toml";
  { std::ofstream(file) << "[delivery]\nmax_rcpts_per_txn = 7\n"; }
  c = load_config_file(file);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->delivery.max_rcpts_per_txn, 7u);
  if (::geteuid() != 0) {  // root reads any file
    ASSERT_EQ(::chmod(file.c_str(), 0), 0);
    c = load_config_file(file);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message.find(file), std::string::npos) << c.error().message;
  }
  ::unlink(file.c_str());
  ::rmdir(dir.c_str());
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

namespace ringmail::engine {
namespace {

TEST(Config, HttpListener) {
  auto d = parse_config("", "<test>");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->http.listen.empty()) << "off by default";
  EXPECT_EQ(d->http.max_connections, 64u);
  EXPECT_EQ(d->http.max_body_bytes, 32u << 20);
  EXPECT_EQ(d->http.header_timeout, Millis(10'000));
  EXPECT_EQ(d->http.body_min_rate, 64u * 1024);
  EXPECT_EQ(d->http.idle_timeout, Millis(60'000));
  EXPECT_EQ(d->http.metrics_destinations, 50u);
  auto c = parse_config(
      "[http]\nlisten = \"127.0.0.1:9100\"\napi_tokens_file = \"tokens\"\n"
      "max_body_bytes = \"1MiB\"\nmetrics_destinations = 0\n",
      "<test>");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->http.addr.ss_family, AF_INET);
  EXPECT_EQ(c->http.max_body_bytes, 1u << 20);
  EXPECT_EQ(c->http.metrics_destinations, 0u);
  const std::pair<std::string, std::string> bad[] = {
      {"[http]\nlisten = \"localhost:9100\"\n", "http.listen: must be an address with a port"},
      {"[http]\nlisten = \"127.0.0.1\"\n", "http.listen: must be an address with a port"},
      {"[http]\nlisten = \"127.0.0.1:0\"\n", "http.listen: must be an address with a port"},
      {"[http]\nmax_connections = 0\n", "http.max_connections: must be between 1"},
      {"[http]\nmax_body_bytes = 10\n", "http.max_body_bytes: must be between"},
      {"[http]\nheader_timeout = \"10ms\"\n", "http.header_timeout: must be between"},
      {"[http]\nbody_min_rate = 0\n", "http.body_min_rate: must be between 1"},
      {"[http]\nidle_timeout = \"2h\"\n", "http.idle_timeout: must be between"},
      {"[http]\nmetrics_destinations = 1001\n", "http.metrics_destinations: must be between 0"},
      {"[http]\nlisen = \"127.0.0.1:9100\"\n", "unknown key 'http.lisen'"},
  };
  for (const auto& [toml, want] : bad) {
    auto r = parse_config(toml, "<test>");
    ASSERT_FALSE(r.ok()) << toml;
    EXPECT_NE(r.error().message.find(want), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace ringmail::engine
