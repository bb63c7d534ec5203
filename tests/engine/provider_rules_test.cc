// Provider shaping rules: the KumoMTA-shaped file format, how blocks merge,
// how a destination finds its provider by MX name, and how the layers
// combine with the main configuration.
#include "engine/provider_rules.h"

#include <gtest/gtest.h>

#include "engine/config.h"

namespace ringmail::engine {
namespace {

std::shared_ptr<const ProviderRules> rules(const std::string& text,
                                           const std::string& second = "") {
  std::vector<std::pair<std::string, std::string>> texts = {{"one.toml", text}};
  if (!second.empty()) {
    texts.emplace_back("two.toml", second);
  }
  auto r = ProviderRules::parse(texts);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : nullptr;
}

std::string error_of(const std::string& text) {
  auto r = ProviderRules::parse({{"bad.toml", text}});
  return r.ok() ? "" : r.error().message;
}

TEST(ProviderRules, HumanQuantities) {
  EXPECT_EQ(parse_human_duration("2 hours").value(), Millis(7'200'000));
  EXPECT_EQ(parse_human_duration("30 minutes").value(), Millis(1'800'000));
  EXPECT_EQ(parse_human_duration("90s").value(), Millis(90'000));
  EXPECT_EQ(parse_human_duration("1 day").value(), Millis(86'400'000));
  EXPECT_FALSE(parse_human_duration("soon").ok());
  EXPECT_FALSE(parse_human_duration("5 fortnights").ok());
  EXPECT_FALSE(parse_human_duration("100000 days").ok());
  EXPECT_DOUBLE_EQ(parse_human_rate("100/min").value().per_second, 100.0 / 60);
  EXPECT_DOUBLE_EQ(parse_human_rate("10,000 per hour").value().per_second, 10000.0 / 3600);
  EXPECT_DOUBLE_EQ(parse_human_rate("2/hr").value().per_second, 2.0 / 3600);
  EXPECT_DOUBLE_EQ(parse_human_rate("50/s").value().per_second, 50);
  EXPECT_FALSE(parse_human_rate("0/s").ok());
  EXPECT_FALSE(parse_human_rate("nan/s").ok());
  EXPECT_FALSE(parse_human_rate("5").ok());
  EXPECT_FALSE(parse_human_rate("2000000/s").ok());
  auto t = parse_threshold("2/hr");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->first, 2u);
  EXPECT_EQ(t->second, Millis(3'600'000));
  t = parse_threshold("5/10min");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->first, 5u);
  EXPECT_EQ(t->second, Millis(600'000));
  EXPECT_FALSE(parse_threshold("0/h").ok());
  EXPECT_FALSE(parse_threshold("3").ok());
}

TEST(ProviderRules, ProvidersMatchOnMxNamesAndDomainsOnTheirName) {
  auto r = rules(R"(
["default"]
connection_limit = 7
[provider."big"]
match = [{MXSuffix = ".bigmail.test"}, {MXHostname = "relay.other.test"}]
connection_limit = 3
max_message_rate = "100/min"
enable_tls = "Required"
mx_rollup = false
some_kumo_key = 5
["corp.test"]
max_recipients_per_batch = 20
)");
  ASSERT_NE(r, nullptr);
  std::vector<std::string> big = {"mx2.bigmail.test"};
  auto m = r->match("corp.test", big);
  EXPECT_EQ(m.provider, "big");
  EXPECT_EQ(m.limits.max_connections, 3u);
  EXPECT_EQ(m.limits.max_rcpts_per_txn, 20u);
  EXPECT_EQ(m.limits.tls, TlsPolicy::kVerify);
  ASSERT_TRUE(m.limits.msg_rate);
  EXPECT_DOUBLE_EQ(m.limits.msg_rate->per_second, 100.0 / 60);
  std::vector<std::string> exact = {"relay.other.test"};
  EXPECT_EQ(r->match("x.test", exact).provider, "big");
  // A suffix matches below it, never the bare name or a look-alike.
  for (std::string host : {"bigmail.test", "notbigmail.test", "mx.bigmail.test.evil"}) {
    std::vector<std::string> h = {host};
    EXPECT_EQ(r->match("x.test", h).provider, "") << host;
    EXPECT_EQ(r->match("x.test", h).limits.max_connections, 7u) << host;
  }
  // Before the route is known only "default" and the domain block apply.
  EXPECT_EQ(r->match("corp.test", {}).limits.max_connections, 7u);
  ASSERT_EQ(r->warnings().size(), 1u);
  EXPECT_NE(r->warnings()[0].find("some_kumo_key"), std::string::npos) << r->warnings()[0];
}

TEST(ProviderRules, LaterFilesMergeOrReplace) {
  auto r = rules(R"(
["a.test"]
connection_limit = 5
max_deliveries_per_connection = 50
["b.test"]
connection_limit = 5
max_deliveries_per_connection = 50
)",
                 R"(
["a.test"]
connection_limit = 9
["b.test"]
replace_base = true
connection_limit = 9
)");
  ASSERT_NE(r, nullptr);
  auto a = r->match("a.test", {}).limits;
  EXPECT_EQ(a.max_connections, 9u);
  EXPECT_EQ(a.max_msgs_per_conn, 50u);  // kept from the first file
  auto b = r->match("b.test", {}).limits;
  EXPECT_EQ(b.max_connections, 9u);
  EXPECT_FALSE(b.max_msgs_per_conn);  // replaced
}

TEST(ProviderRules, AutomationRules) {
  auto r = rules(R"(
[provider."y"]
match = [{MXSuffix = ".y.test"}]
[[provider."y".automation]]
regex = "\\[TS04\\]"
action = "Suspend"
duration = "2 hours"
["c.test"]
[["c.test".automation]]
regex = "RL0000"
action = {SetConfig = {name = "max_connection_rate", value = "10000/h"}}
trigger = {Threshold = "2/hr"}
duration = "2 hours"
[["c.test".automation]]
regex = "blocked"
action = "Bounce"
duration = "30 minutes"
)");
  ASSERT_NE(r, nullptr);
  std::vector<std::string> y = {"mx.y.test"};
  auto m = r->match("c.test", y);
  ASSERT_EQ(m.automation.size(), 3u);
  EXPECT_EQ(m.automation[0]->action, AutomationAction::kSuspend);
  EXPECT_EQ(m.automation[0]->origin, "provider y #1");
  EXPECT_TRUE(std::regex_search("421 4.7.0 [TS04] deferred", m.automation[0]->regex));
  EXPECT_EQ(m.automation[0]->threshold, 1u);
  EXPECT_EQ(m.automation[1]->action, AutomationAction::kSetConfig);
  EXPECT_EQ(m.automation[1]->threshold, 2u);
  EXPECT_EQ(m.automation[1]->window, Millis(3'600'000));
  EXPECT_EQ(m.automation[1]->set.describe(), "max_connection_rate=10000/h");
  EXPECT_EQ(m.automation[2]->action, AutomationAction::kBounce);
  EXPECT_EQ(m.automation[2]->duration, Millis(1'800'000));
}

TEST(ProviderRules, MistakesAreNamed) {
  EXPECT_NE(error_of("[provider.\"p\"]\nconnection_limit = 3\n").find("needs match"),
            std::string::npos);
  EXPECT_NE(error_of("[\"a.test\"]\n[[\"a.test\".automation]]\nregex = \"(\"\naction = "
                     "\"Suspend\"\nduration = \"1h\"\n")
                .find("does not compile"),
            std::string::npos);
  EXPECT_NE(error_of("[\"a.test\"]\n[[\"a.test\".automation]]\nregex = \"x\"\naction = "
                     "\"SuspendTenant\"\nduration = \"1h\"\n")
                .find("not supported"),
            std::string::npos);
  EXPECT_NE(error_of("[\"a.test\"]\n[[\"a.test\".automation]]\nregex = \"x\"\naction = "
                     "\"Suspend\"\n")
                .find("needs regex, action and duration"),
            std::string::npos);
  EXPECT_NE(error_of("[\"a.test\"]\nconnection_limit = 0\n").find("a.test"), std::string::npos);
  EXPECT_NE(error_of("[\"a.test\"]\nenable_tls = \"Maybe\"\n").find("enable_tls"),
            std::string::npos);
  EXPECT_NE(error_of("not toml [").find("bad.toml:1"), std::string::npos);
}

TEST(ProviderRules, TheBuiltInRulesLoadAndKnowTheBigProviders) {
  auto r = ProviderRules::parse({{"builtin", std::string(builtin_shaping_rules())}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*r)->warnings().empty());
  std::vector<std::pair<std::string, std::string>> cases = {
      {"gmail-smtp-in.l.google.com", "google"},
      {"mta7.am0.yahoodns.net", "yahoo"},
      {"hotmail-com.olc.protection.outlook.com", "microsoft"},
      {"mx01.mail.icloud.com", "apple"},
      {"mx.example.test", ""}};
  for (const auto& [mx, provider] : cases) {
    std::vector<std::string> h = {mx};
    EXPECT_EQ((*r)->match("somewhere.test", h).provider, provider) << mx;
  }
}

TEST(ProviderRules, LayersUnderTheMainConfiguration) {
  auto cfg = parse_config(R"(
[delivery]
max_conns_per_destination = 40
[[shaping]]
match = "pinned.test"
max_connections = 2
)",
                          "test.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  // The built-in rules are on by default: a Google-hosted domain gets the
  // provider's limit, a rule of the main file still wins over it, and a
  // domain nobody names keeps [delivery].
  std::vector<std::string> google = {"aspmx.l.google.com"};
  EXPECT_EQ(cfg->shaping_for("corp.test", google).max_connections, 10u);
  EXPECT_EQ(cfg->shaping_for("pinned.test", google).max_connections, 2u);
  EXPECT_EQ(cfg->shaping_for("corp.test", {}).max_connections, 40u);
  auto off = parse_config("[provider_shaping]\nbuiltin = false\n", "test.toml");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->provider_shaping.rules, nullptr);
  auto missing = parse_config("[provider_shaping]\nfiles = [\"/nonexistent/rules.toml\"]\n", "t");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("provider_shaping.files"), std::string::npos);
}

}  // namespace
}  // namespace ringmail::engine
