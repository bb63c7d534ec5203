#include "engine/suppression.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace ringmail::engine {
namespace {

proto::EnhancedCode code(uint8_t c, uint16_t s, uint16_t d) {
  return {c, s, d};
}

class TempDir {
 public:
  TempDir() {
    char t[] = "/tmp/ringmail-suppr-XXXXXX";
    EXPECT_NE(mkdtemp(t), nullptr);
    path_ = t;
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<SuppressionList> open_list(const SuppressionConfig& cfg, const Clock& clock,
                                           SuppressionList::Limits lim = {}) {
  auto l = SuppressionList::open(cfg, clock, lim);
  EXPECT_TRUE(l.ok()) << (l.ok() ? "" : l.error().message);
  return l.ok() ? std::move(*l) : nullptr;
}

TEST(Suppression, KeysKeepTheLocalPartAndLowerTheDomain) {
  EXPECT_EQ(SuppressionList::key("John.Doe@Example.COM"), "John.Doe@example.com");
  EXPECT_EQ(SuppressionList::key("\"a@b\"@X.test"), "\"a@b\"@x.test");
  EXPECT_EQ(SuppressionList::key("nodomain"), "");
}

TEST(Suppression, BounceNotesGiveTheReplyOnce) {
  EXPECT_EQ(SuppressionList::bounce_note(550, "5.1.1", "550 5.1.1 no such user", "b-17"),
            "550 5.1.1 no such user (batch b-17)");
  // A reply whose text does not repeat the enhanced code.
  EXPECT_EQ(SuppressionList::bounce_note(550, "5.1.1", "550 no such user", "b"),
            "550 5.1.1 no such user (batch b)");
  EXPECT_EQ(SuppressionList::bounce_note(550, "5.1.1", "550", ""), "550 5.1.1");
  // Text that only looks like a code is kept.
  EXPECT_EQ(SuppressionList::bounce_note(550, "5.1.1", "5501 5.1.10 odd", "b"),
            "550 5.1.1 5501 5.1.10 odd (batch b)");
}

TEST(Suppression, BouncesOnly5_1Suppress) {
  EXPECT_TRUE(SuppressionList::suppresses(code(5, 1, 1)));
  EXPECT_TRUE(SuppressionList::suppresses(code(5, 1, 0)));
  EXPECT_TRUE(SuppressionList::suppresses(code(5, 1, 3)));
  // The recipient's domain, not the mailbox: NXDOMAIN and no address
  // (5.1.2), null MX (5.1.10, RFC 7505).
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 1, 2)));
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 1, 10)));
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 1, 7)));  // sender's address
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 1, 8)));
  EXPECT_FALSE(SuppressionList::suppresses(code(4, 1, 1)));
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 2, 2)));
  EXPECT_FALSE(SuppressionList::suppresses(code(5, 7, 1)));
  EXPECT_FALSE(SuppressionList::suppresses(proto::EnhancedCode{}));
}

TEST(Suppression, BounceThenCheckThenExpire) {
  ManualClock clock;
  SuppressionConfig cfg;
  cfg.invalid_ttl = Millis(60'000);
  auto list = open_list(cfg, clock);
  EXPECT_FALSE(list->check("gone@example.com"));
  EXPECT_TRUE(list->note_bounce("gone@Example.com", code(5, 1, 1), "550 5.1.1 no such user"));
  EXPECT_FALSE(list->note_bounce("full@example.com", code(5, 2, 2), "mailbox full"));
  auto hit = list->check("gone@example.com");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->reason, SuppressionReason::kInvalidRecipient);
  EXPECT_EQ(hit->expires_ms, clock.wall_ms() + 60'000);
  EXPECT_FALSE(list->check("Gone@example.com"));  // local parts are case-sensitive
  clock.advance(std::chrono::seconds(59));
  EXPECT_TRUE(list->check("gone@example.com"));
  clock.advance(std::chrono::seconds(1));
  EXPECT_FALSE(list->check("gone@example.com"));
  EXPECT_TRUE(list->list("*", 10).empty());
  EXPECT_EQ(list->size(), 1u);  // expired, dropped lazily
  EXPECT_EQ(list->expire(), 1u);
  EXPECT_EQ(list->size(), 0u);
}

TEST(Suppression, UnsubscribesUseTheirOwnTtl) {
  ManualClock clock;
  SuppressionConfig cfg;  // unsubscribe_ttl 0: until removed
  auto list = open_list(cfg, clock);
  EXPECT_TRUE(list->note_unsubscribed("u@example.com", "batch b-1"));
  clock.advance(std::chrono::hours(24 * 3650));
  auto hit = list->check("u@example.com");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->reason, SuppressionReason::kUnsubscribed);
  EXPECT_EQ(hit->expires_ms, 0);
}

TEST(Suppression, DisabledNeverSuppressesButOperatorsCanEdit) {
  ManualClock clock;
  SuppressionConfig cfg;
  cfg.enabled = false;
  auto list = open_list(cfg, clock);
  EXPECT_FALSE(list->note_bounce("a@example.com", code(5, 1, 1), ""));
  EXPECT_FALSE(list->note_unsubscribed("a@example.com", ""));
  ASSERT_TRUE(list->add("a@example.com", SuppressionReason::kManual, Millis(0), "ops").ok());
  EXPECT_FALSE(list->check("a@example.com"));
  EXPECT_EQ(list->list("*", 10).size(), 1u);
}

TEST(Suppression, OperatorEditsAndListing) {
  ManualClock clock;
  auto list = open_list(SuppressionConfig{}, clock);
  for (const char* a : {"b@example.com", "a@example.com", "c@other.test", "x@sub.example.com"}) {
    ASSERT_TRUE(list->add(a, SuppressionReason::kManual, Millis(0), "").ok());
  }
  ASSERT_TRUE(list->add("t@example.com", SuppressionReason::kManual, Millis(1000), "short").ok());
  EXPECT_FALSE(list->add("no-at-sign", SuppressionReason::kManual, Millis(0), "").ok());
  size_t total = 0;
  auto all = list->list("*", 100, &total);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(total, 5u);
  EXPECT_EQ(all[0].address, "a@example.com");
  EXPECT_EQ(all[4].address, "x@sub.example.com");
  auto dom = list->list("*@EXAMPLE.com", 100);
  ASSERT_EQ(dom.size(), 3u);
  auto sub = list->list("*@*.example.com", 100);
  ASSERT_EQ(sub.size(), 1u);
  auto limited = list->list("*", 2, &total);
  ASSERT_EQ(limited.size(), 2u);
  EXPECT_EQ(total, 5u);
  EXPECT_EQ(limited[1].address, "b@example.com");
  EXPECT_EQ(list->list("?@other.test", 10).size(), 1u);
  auto removed = list->remove("B@example.com");  // domain case does not matter
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(*removed);  // local part "B" differs from "b"
  removed = list->remove("b@EXAMPLE.com");
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(*removed);
  EXPECT_FALSE(list->check("b@example.com"));
  std::string json;
  append_suppression_json(json, list->list("t@example.com", 1).at(0));
  EXPECT_NE(json.find("\"reason\":\"manual\""), std::string::npos);
  EXPECT_NE(json.find("\"expires\":\"2026-01-01T00:00:01.000Z\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"note\":\"short\""), std::string::npos);
}

TEST(Suppression, FullListRefusesAdditions) {
  ManualClock clock;
  SuppressionList::Limits lim;
  lim.max_entries = 2;
  auto list = open_list(SuppressionConfig{}, clock, lim);
  EXPECT_TRUE(list->note_bounce("a@x.test", code(5, 1, 1), ""));
  EXPECT_TRUE(list->note_bounce("b@x.test", code(5, 1, 1), ""));
  EXPECT_FALSE(list->note_bounce("c@x.test", code(5, 1, 1), ""));
  EXPECT_TRUE(list->note_bounce("a@x.test", code(5, 1, 1), "again"));  // replacing is fine
  EXPECT_FALSE(list->add("d@x.test", SuppressionReason::kManual, Millis(0), "").ok());
  EXPECT_EQ(list->stats().refused_full, 2u);
}

TEST(Suppression, PersistsAcrossRestarts) {
  TempDir dir;
  ManualClock clock;
  SuppressionConfig cfg;
  cfg.file = dir.file("suppression.log");
  cfg.invalid_ttl = Millis(3'600'000);
  {
    auto list = open_list(cfg, clock);
    EXPECT_TRUE(list->note_bounce("gone@example.com", code(5, 1, 1), "550 5.1.1 user unknown"));
    EXPECT_TRUE(list->note_unsubscribed("odd local%part@example.com", "note with spaces\nand LF"));
    ASSERT_TRUE(list->add("tmp@example.com", SuppressionReason::kManual, Millis(0), "").ok());
    ASSERT_TRUE(list->remove("tmp@example.com").ok());
    ASSERT_TRUE(list->flush().ok());
  }
  {
    auto list = open_list(cfg, clock);
    EXPECT_EQ(list->size(), 2u);
    auto hit = list->check("gone@example.com");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->reason, SuppressionReason::kInvalidRecipient);
    auto odd = list->list("odd*", 1);
    ASSERT_EQ(odd.size(), 1u);
    EXPECT_EQ(odd[0].address, "odd local%part@example.com");
    EXPECT_EQ(odd[0].note, "note with spaces\nand LF");
    EXPECT_FALSE(list->check("tmp@example.com"));
  }
  // Entries that expired while stopped are gone after a restart.
  clock.advance(std::chrono::hours(2));
  {
    auto list = open_list(cfg, clock);
    EXPECT_EQ(list->size(), 1u);
    EXPECT_FALSE(list->check("gone@example.com"));
  }
  // The compacted file holds live entries only, and no temp file is left.
  std::string content = slurp(cfg.file);
  EXPECT_EQ(content.find("gone@"), std::string::npos);
  EXPECT_NE(content.find("unsubscribed"), std::string::npos);
  EXPECT_NE(access((cfg.file + ".tmp").c_str(), F_OK), 0);
}

TEST(Suppression, TornAndMalformedLinesAreSkipped) {
  TempDir dir;
  ManualClock clock;
  SuppressionConfig cfg;
  cfg.file = dir.file("s.log");
  std::ofstream(cfg.file) << "# ringmail suppression list v1\n"
                          << "+ ok@example.com manual 1 0 fine\n"
                          << "+ bad@example.com nonsense 1 0 x\n"
                          << "+ NotLower@EXAMPLE.com manual 1 0 x\n"
                          << "garbage line\n"
                          << "+ torn@example.com manual 1 0";  // no newline: a torn write
  // A temp file from a crash during compaction does not matter.
  std::ofstream(cfg.file + ".tmp") << "+ fromtmp@example.com manual 1 0 x\n";
  auto list = open_list(cfg, clock);
  EXPECT_EQ(list->size(), 1u);
  EXPECT_TRUE(list->check("ok@example.com"));
  EXPECT_FALSE(list->check("torn@example.com"));
  EXPECT_FALSE(list->check("fromtmp@example.com"));
  EXPECT_EQ(list->stats().skipped_lines, 4u);
}

TEST(Suppression, LogStaysBoundedByCompaction) {
  TempDir dir;
  ManualClock clock;
  SuppressionConfig cfg;
  cfg.file = dir.file("s.log");
  auto list = open_list(cfg, clock);
  for (int i = 0; i < 5000; ++i) {
    std::string a = "churn" + std::to_string(i % 10) + "@example.com";
    list->note_unsubscribed(a, "x");
    if (i % 100 == 99) {
      ASSERT_TRUE(list->flush().ok());
    }
  }
  ASSERT_TRUE(list->flush().ok());
  EXPECT_GE(list->stats().compactions, 2u);  // the one at open, and at least one more
  struct stat st;
  ASSERT_EQ(stat(cfg.file.c_str(), &st), 0);
  EXPECT_LT(st.st_size, 200 * 1024);  // 5000 appends of ~60 bytes would be ~300 KB
  auto again = open_list(cfg, clock);
  EXPECT_EQ(again->size(), 10u);
}

TEST(Suppression, ConcurrentBouncesAndLookups) {
  ManualClock clock;
  TempDir dir;
  SuppressionConfig cfg;
  cfg.file = dir.file("s.log");
  auto list = open_list(cfg, clock);
  constexpr int kWriters = 3;
  constexpr int kEach = 2000;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    uint64_t seen = 0;
    while (!done.load(std::memory_order_acquire)) {
      for (int i = 0; i < 100; ++i) {
        seen += list->check("w0-" + std::to_string(i) + "@example.com") ? 1 : 0;
      }
    }
    EXPECT_GE(seen, 0u);
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kEach; ++i) {
        list->note_bounce("w" + std::to_string(w) + "-" + std::to_string(i) + "@example.com",
                          code(5, 1, 1), "");
        if (i % 500 == 0) {
          EXPECT_TRUE(list->flush().ok());
        }
      }
    });
  }
  for (auto& t : writers) {
    t.join();
  }
  done.store(true, std::memory_order_release);
  reader.join();
  EXPECT_EQ(list->size(), size_t{kWriters * kEach});
  ASSERT_TRUE(list->flush().ok());
  auto reopened = open_list(cfg, clock);
  EXPECT_EQ(reopened->size(), size_t{kWriters * kEach});
  EXPECT_TRUE(reopened->check("w2-1999@example.com"));
}

}  // namespace
}  // namespace ringmail::engine
