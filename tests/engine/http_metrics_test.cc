// The HTTP listener's pieces that need no socket: bearer tokens, the
// per-shard destination counters and their bound, the fsync histogram and
// label escaping.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "engine/http_server.h"
#include "engine/metrics.h"

namespace ringmail::engine {
namespace {

TEST(ApiTokens, ParseAndCheck) {
  auto t =
      ApiTokens::parse("# comment\n\n  abcdefghijklmnop0123  \r\nZZZZyyyyXXXXwwww+/==\n", "tokens");
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_TRUE(t->check("abcdefghijklmnop0123"));
  EXPECT_TRUE(t->check("ZZZZyyyyXXXXwwww+/=="));
  EXPECT_FALSE(t->check("abcdefghijklmnop012"));
  EXPECT_FALSE(t->check("abcdefghijklmnop01234"));
  EXPECT_FALSE(t->check(""));
  EXPECT_FALSE(t->check("ABCDEFGHIJKLMNOP0123"));
}

TEST(ApiTokens, RefusesWeakOrMalformedFiles) {
  const std::pair<const char*, const char*> bad[] = {
      {"", "no token"},
      {"# only a comment\n", "no token"},
      {"short\n", "tokens:1: a token must be at least 16"},
      {"good-token-0123456789\nhas space in it 0123\n", "tokens:2: a token is letters"},
      {"abc=def0123456789xyz\n", "tokens:1: a token is letters"},
  };
  for (const auto& [text, want] : bad) {
    auto t = ApiTokens::parse(text, "tokens");
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.error().message.find(want), std::string::npos) << t.error().message;
    EXPECT_EQ(t.error().message.find("0123456789"), std::string::npos)
        << "a token never appears in an error";
  }
  auto missing = ApiTokens::load("/nonexistent/ringmail-tokens");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("http.api_tokens_file"), std::string::npos);
}

TEST(DestinationCounters, CountsPerDomainAndPoolWithinTheBound) {
  DestinationCounters c;
  c.count("a@one.test", 0, EventType::kDelivered);
  c.count("b@one.test", 0, EventType::kDelivered);
  c.count("c@one.test", 1, EventType::kBounced);
  c.count("d@two.test", 0, EventType::kDeferred);
  c.count("e@two.test", 0, EventType::kDropped);  // not an outcome counted here
  std::vector<DestinationCounters::Row> rows;
  c.snapshot(&rows);
  ASSERT_EQ(rows.size(), 3u);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::tie(a.domain, a.pool) < std::tie(b.domain, b.pool);
  });
  EXPECT_EQ(rows[0].domain, "one.test");
  EXPECT_EQ(rows[0].counts, (OutcomeCounts{2, 0, 0}));
  EXPECT_EQ(rows[1].pool, 1u);
  EXPECT_EQ(rows[1].counts, (OutcomeCounts{0, 0, 1}));
  EXPECT_EQ(rows[2].counts, (OutcomeCounts{0, 1, 0}));
  for (size_t i = 0; i < DestinationCounters::kMaxTracked; ++i) {
    c.count("x@d" + std::to_string(i) + ".test", 0, EventType::kDelivered);
  }
  rows.clear();
  c.snapshot(&rows);
  EXPECT_EQ(rows.size(), DestinationCounters::kMaxTracked + 1) << "bounded";
  ASSERT_EQ(c.untracked().size(), 1u);
  EXPECT_EQ(c.untracked()[0][0], 2u) << "beyond the bound: counted, unlabelled";
  c.count("y@one.test", 0, EventType::kDelivered);  // tracked ones still count
  rows.clear();
  c.snapshot(&rows);
  for (const auto& r : rows) {
    if (r.domain == "one.test" && r.pool == 0) {
      EXPECT_EQ(r.counts[0], 3u);
    }
  }
}

TEST(FsyncHistogram, Buckets) {
  FsyncHistogram h;
  h.observe(0.0001);
  h.observe(0.001);  // on a bound: that bucket (le is inclusive)
  h.observe(0.3);
  h.observe(10);
  EXPECT_EQ(h.count, 4u);
  EXPECT_EQ(h.buckets[0], 1u);
  EXPECT_EQ(h.buckets[1], 1u);
  EXPECT_EQ(h.buckets[9], 1u);
  EXPECT_EQ(h.buckets.back(), 1u);
  EXPECT_NEAR(h.sum_seconds, 10.3011, 1e-9);
}

TEST(Metrics, LabelValuesAreEscaped) {
  std::string out;
  append_label_value(out, "a\"b\\c\nd");
  EXPECT_EQ(out, "a\\\"b\\\\c\\nd");
}

}  // namespace
}  // namespace ringmail::engine
