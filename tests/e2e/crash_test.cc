// Crash loop: ringmaild under load, SIGKILLed at random moments and at
// named failpoints (after a spool write before its fsync, after the fsync
// before the ack, in the middle of a batch, after a remote 250 before its
// journal record, during compaction), restarted, again and again. At the
// end every acknowledged recipient was delivered at least once, and the
// duplicates stay within what was in flight at the kills.
//
// RINGMAIL_CRASH_CYCLES sets the number of cycles (default 24; the long run
// in docs/reliability.md uses 500).
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "tests/e2e/harness.h"
#include "tools/batch_client.h"

namespace ringmail::testing {
namespace {

std::vector<std::string> lines(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path).value_or(""));
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) {
      out.push_back(l);
    }
  }
  return out;
}

/// True once the daemon answers HELLO (a killed daemon leaves its socket
/// file behind, so the file alone proves nothing).
bool answers(const std::string& sock) {
  return tools::BatchClient::connect(sock, "probe", 1'000).ok();
}

TEST(CrashLoop, NothingAcknowledgedIsLost) {
  const int cycles = std::atoi(env_or("RINGMAIL_CRASH_CYCLES", "24").c_str());
  TempDir dir;
  SinkProcess sink;
  const std::string rcpt_log = dir.file("delivered.txt");
  ASSERT_TRUE(sink.start({"--rcpt-log", rcpt_log})) << sink.error();
  const std::string sock = dir.file("rm.sock");
  const std::string acked = dir.file("acked.txt");
  std::ofstream(dir.file("ringmail.toml"))
      << "log_level = \"warning\"\n[engine]\nshards = 2\n[ingest]\nsocket = \"" << sock
      << "\"\n[events]\nfile = \"\"\n[spool]\nmode = \"sync\"\ndir = \"" << dir.file("spool")
      << "\"\nsegment_size = \"256KiB\"\n[delivery]\nbackoff = \"0s\"\nmax_pipelined_txns = 2\n"
      << "[delivery.timeouts]\nconnect = \"2s\"\n[retry]\nschedule = [\"1s\"]\n"
      << "[routing]\ndefault = \"127.0.0.1:" << sink.port() << "\"\n";
  const std::vector<std::string> points = {"",
                                           "spool_after_write",
                                           "spool_after_fsync",
                                           "ingest_batch",
                                           "delivered_before_journal",
                                           "compaction"};
  std::mt19937 rng(4242);
  int named_kills = 0, random_kills = 0;
  for (int c = 0; c < cycles; ++c) {
    const std::string point = points[static_cast<size_t>(c) % points.size()];
    auto cycle_start = Clock::now();
    if (point.empty()) {
      ::unsetenv("RINGMAIL_FAILPOINT");
    } else {
      std::string fp = point + ":" + std::to_string(1 + rng() % 40);
      ::setenv("RINGMAIL_FAILPOINT", fp.c_str(), 1);
    }
    Child daemon;
    ASSERT_TRUE(daemon.start({env_or("RINGMAILD", ""), "--config", dir.file("ringmail.toml")},
                             dir.path(), "ringmaild" + std::to_string(c)));
    ::unsetenv("RINGMAIL_FAILPOINT");
    // Recovery of what earlier cycles left may take a moment.
    ASSERT_TRUE(
        eventually([&] { return !daemon.running() || answers(sock); }, milliseconds(30'000)))
        << "cycle " << c << " (" << point << "): " << daemon.err();
    if (!daemon.running()) {
      ++named_kills;  // died at its failpoint during recovery or start
      continue;
    }
    Child inject;
    ASSERT_TRUE(inject.start({env_or("RINGMAIL_INJECT", ""),
                              "--socket",
                              sock,
                              "--count",
                              "300",
                              "--batch",
                              "4",
                              "--domains",
                              "8",
                              "--size",
                              "600",
                              "--window",
                              "32",
                              "--acked-out",
                              acked,
                              "--rcpt-prefix",
                              "c" + std::to_string(c) + "u",
                              "--quiet",
                              "--timeout",
                              "20"},
                             dir.path(), "inject" + std::to_string(c)));
    if (point.empty()) {
      // A random moment.
      int wait_ms = 30 + static_cast<int>(rng() % 400);
      eventually([&] { return !daemon.running(); }, milliseconds(wait_ms));
      if (daemon.running()) {
        ::kill(daemon.pid(), SIGKILL);
        ++random_kills;
      }
    } else {
      // The failpoint kills it, or the cycle ends and we do.
      eventually([&] { return !daemon.running() || !inject.running(); }, milliseconds(20'000));
      if (daemon.running()) {
        ::kill(daemon.pid(), SIGKILL);
        ++random_kills;
      } else {
        ++named_kills;
      }
    }
    daemon.wait(milliseconds(10'000));
    inject.wait(milliseconds(30'000));
    std::printf("cycle %d %s: %.1f s\n", c, point.empty() ? "random" : point.c_str(),
                std::chrono::duration<double>(Clock::now() - cycle_start).count());
  }
  // Last start, no failpoint: let it finish everything.
  Child daemon;
  ASSERT_TRUE(daemon.start({env_or("RINGMAILD", ""), "--config", dir.file("ringmail.toml")},
                           dir.path(), "ringmaild-final"));
  ASSERT_TRUE(eventually([&] { return answers(sock); }, milliseconds(30'000))) << daemon.err();
  // Operator commands go to the control socket, next to the ingest one.
  auto client = tools::BatchClient::connect(dir.file("rm-ctl.sock"), "crash-test");
  ASSERT_TRUE(client.ok()) << client.error().message;
  bool drained = eventually(
      [&] {
        client->queue_frame(proto::FrameType::kControl, "stats");
        auto f = client->next(5'000);
        if (!f.ok() || !*f) {
          return false;
        }
        return (*f)->payload.find("\"unfinished\":0,") != std::string::npos;
      },
      milliseconds(120'000));
  ASSERT_TRUE(drained) << "the queue never drained";
  std::vector<std::string> acked_lines = lines(acked);
  std::vector<std::string> delivered = lines(rcpt_log);
  std::unordered_map<std::string, int> count;
  for (const auto& r : delivered) {
    ++count[r];
  }
  size_t lost = 0, duplicates = 0;
  std::set<std::string> acked_set(acked_lines.begin(), acked_lines.end());
  for (const auto& r : acked_set) {
    if (count.find(r) == count.end()) {
      ++lost;
    }
  }
  for (const auto& [r, n] : count) {
    duplicates += static_cast<size_t>(n - 1);
  }
  std::printf(
      "crash loop: %d cycles (%d at named failpoints, %d at random moments); %zu "
      "recipients acknowledged, %zu deliveries of %zu distinct recipients, %zu lost, %zu "
      "duplicates\n",
      cycles, named_kills, random_kills, acked_set.size(), delivered.size(), count.size(), lost,
      duplicates);
  EXPECT_GT(acked_set.size(), 0u);
  EXPECT_EQ(lost, 0u) << "acknowledged recipients never delivered";
  // In flight at a kill: at most 8 destinations x 20 connections x 2
  // pipelined transactions x 4 recipients, plus one unjournaled group.
  EXPECT_LE(duplicates, static_cast<size_t>(cycles) * (8 * 20 * 2 * 4 + 300 * 4));
  EXPECT_EQ(daemon.terminate(), 0) << daemon.err();
}

}  // namespace
}  // namespace ringmail::testing
