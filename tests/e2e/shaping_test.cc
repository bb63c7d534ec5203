// Politeness at scale: connection limits and adaptive backoff, retries on a
// schedule, message rates, expiry and delivery reports, the memory budget,
// and operator controls — against ringmail-sink on loopback.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "engine/clock.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/hostile_server.h"

namespace ringmail::testing {
namespace {

std::string route_to(uint16_t port) {
  return "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

Batch batch_of(const std::string& id, const std::vector<std::string>& rcpts,
               const std::string& sender = "bulk@sender.test") {
  Batch b;
  b.batch_id = id;
  b.sender = sender;
  b.message = message_of(1000, id);
  b.recipients = rcpts;
  return b;
}

/// All values of an integer JSON field in `json`.
std::vector<long> json_ints(const std::string& json, const std::string& key) {
  std::vector<long> out;
  std::regex re("\"" + key + "\":(\\d+)");
  for (std::sregex_iterator it(json.begin(), json.end(), re), end; it != end; ++it) {
    out.push_back(std::stol((*it)[1]));
  }
  return out;
}

/// Waits until every shard has run its loop past what was posted before:
/// a control round trip touches every shard, in order.
void barrier(Engine& e) {
  (void)e.control("list");
}

TEST(Shaping, ConnectionLimitConvergesToWhatTheServerAccepts) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--max-connections", "3"})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) +
                      "[delivery]\nmax_conns_per_destination = 12\nmax_rcpts_per_txn = 1\n"
                      "max_pipelined_txns = 1\nbackoff = \"200ms\"\n")
                  .ok());
  std::vector<std::string> rcpts;
  for (int i = 0; i < 3000; ++i) {
    rcpts.push_back("r" + std::to_string(i) + "@busy.test");
  }
  // Many one-recipient batches: many transactions want many connections.
  for (size_t i = 0; i < rcpts.size(); i += 10) {
    std::vector<std::string> part(rcpts.begin() + static_cast<long>(i),
                                  rcpts.begin() + static_cast<long>(i + 10));
    ASSERT_EQ(e.engine->submit(batch_of("k" + std::to_string(i), part)).accepted, 10u);
  }
  ASSERT_TRUE(e.events.wait_finals(rcpts.size(), milliseconds(120'000)));
  // Nothing lost, nothing doubled.
  EXPECT_TRUE(sink.wait_stat("recipients", 3000)) << sink.stats();
  size_t delivered = 0;
  for (const auto& [r, evs] : e.events.all()) {
    delivered += evs.back().type == EventType::kDelivered ? 1 : 0;
  }
  EXPECT_EQ(delivered, rcpts.size());
  // The limit came down to what the server accepts, and stayed there.
  std::string list = e.engine->control("list busy.test");
  auto limits = json_ints(list, "max_connections");
  ASSERT_EQ(limits.size(), 1u) << list;
  EXPECT_LE(limits[0], 3) << list;
  EXPECT_GE(limits[0], 1);
}

TEST(Shaping, DeferredFirstAttemptsRetryOnTheSchedule) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--defer-first-attempt"})) << sink.error();
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) +
                          "[delivery]\nbackoff = \"0s\"\n"
                          "[retry]\nschedule = [\"1m\", \"5m\"]\njitter_percent = 0\n",
                      &clock)
                  .ok());
  std::vector<std::string> rcpts;
  for (int i = 0; i < 50; ++i) {
    rcpts.push_back("u" + std::to_string(i) + "@retry.test");
  }
  ASSERT_EQ(e.engine->submit(batch_of("r1", rcpts)).accepted, 50u);
  ASSERT_TRUE(e.events.wait_deferred(50));
  ASSERT_TRUE(wait_listing(*e.engine, "\"in_flight\":0,\"deferred\":50,"))
      << e.engine->control("list");
  for (const auto& r : rcpts) {
    auto ev = e.events.events(r);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].type, EventType::kDeferred);
    EXPECT_EQ(ev[0].attempt, 1u);
    EXPECT_NE(ev[0].json.find("\"class\":\"rate_limited\""), std::string::npos) << ev[0].json;
  }
  // One second before the schedule says: nothing moves.
  uint64_t txns = e.engine->stats().transactions;
  clock.advance(std::chrono::seconds(59));
  engine::wake_for_test(*e.engine);
  barrier(*e.engine);
  EXPECT_EQ(e.engine->stats().transactions, txns);
  EXPECT_EQ(e.events.finals(), 0u);
  // At the minute: the retry happens and delivers every one.
  clock.advance(std::chrono::seconds(1));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(50))
      << e.engine->control("list") << " transactions " << e.engine->stats().transactions;
  for (const auto& r : rcpts) {
    auto ev = e.events.events(r);
    ASSERT_EQ(ev.size(), 2u);
    EXPECT_EQ(ev[1].type, EventType::kDelivered);
    EXPECT_EQ(ev[1].attempt, 2u);
    // Event time (the engine's clock) is a minute after the first attempt.
    EXPECT_NE(ev[1].json.find("T00:01:00"), std::string::npos) << ev[1].json;
  }
  EXPECT_TRUE(sink.wait_stat("recipients", 50));
}

TEST(Shaping, MessageRateIsRespected) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(
      e.start(route_to(sink.port()) + "[delivery]\nmsg_rate = \"50/s\"\nmax_rcpts_per_txn = 1\n")
          .ok());
  const int n = 250;
  std::vector<std::string> rcpts;
  for (int i = 0; i < n; ++i) {
    rcpts.push_back("x" + std::to_string(i) + "@rate.test");
  }
  auto t0 = Clock::now();
  ASSERT_EQ(e.engine->submit(batch_of("rate", rcpts)).accepted, static_cast<uint32_t>(n));
  ASSERT_TRUE(e.events.wait_finals(n, milliseconds(60'000)));
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  // 50/s with a burst of 5: 250 messages need at least (250 - 5) / 50 s.
  double rate = (n - 5) / secs;
  EXPECT_LE(rate, 50 * 1.05) << "took " << secs << " s";
  EXPECT_GE(rate, 50 * 0.7) << "took " << secs << " s (far slower than the limit)";
}

TEST(Shaping, ExpiryBouncesWithItsClassAndDsnIsAValidReport) {
  SinkProcess sink;
  TempDir dumps;
  ASSERT_TRUE(sink.start({"--dump-dir", dumps.path()})) << sink.error();
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) +
                          "[delivery]\nbackoff = \"0s\"\n"
                          "[retry]\nschedule = [\"1m\"]\nmax_age = \"3m\"\njitter_percent = 0\n"
                          "[bounces]\ndsn = true\ndsn_delay = \"5m\"\n",
                      &clock)
                  .ok());
  ASSERT_EQ(e.engine
                ->submit(batch_of("exp", {"reject@a.test", "defer@a.test", "ok@a.test"},
                                  "owner@sender.test"))
                .accepted,
            3u);
  ASSERT_TRUE(e.events.wait_finals(2));
  auto rej = e.events.events("reject@a.test");
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_NE(rej[0].json.find("\"class\":\"invalid_recipient\""), std::string::npos) << rej[0].json;
  // A second attempt a minute later (00:01:01), deferred again: the report
  // gives that time as defer@'s Last-Attempt-Date.
  ASSERT_TRUE(wait_listing(*e.engine, "\"deferred\":1,")) << e.engine->control("list");
  clock.advance(std::chrono::seconds(61));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(eventually([&] { return e.events.events("defer@a.test").size() == 2; }));
  ASSERT_TRUE(wait_listing(*e.engine, "\"deferred\":1,")) << e.engine->control("list");
  // Past max_age the deferred one bounces as expired, without an attempt.
  clock.advance(std::chrono::minutes(3));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(3));
  auto def = e.events.events("defer@a.test");
  ASSERT_FALSE(def.empty());
  EXPECT_EQ(def.back().type, EventType::kBounced);
  EXPECT_NE(def.back().json.find("\"class\":\"expired\""), std::string::npos) << def.back().json;
  // One report for both bounces goes to the sender dsn_delay after the
  // first, from the null reverse-path, and is itself delivered.
  clock.advance(std::chrono::seconds(61));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(4));
  auto dsn_ev = e.events.events("owner@sender.test");
  ASSERT_EQ(dsn_ev.size(), 1u);
  EXPECT_EQ(dsn_ev[0].type, EventType::kDelivered);
  // Find the dumped report and check it with Python's email parser.
  std::string report;
  ASSERT_TRUE(eventually([&] {
    DIR* d = ::opendir(dumps.path().c_str());
    if (d == nullptr) {
      return false;
    }
    while (dirent* ent = ::readdir(d)) {
      std::string name = ent->d_name;
      if (name.ends_with(".eml")) {
        std::string body = read_file(dumps.file(name)).value_or("");
        if (body.find("multipart/report") != std::string::npos) {
          report = dumps.file(name);
        }
      }
    }
    ::closedir(d);
    return !report.empty();
  }));
  std::string script = dumps.file("check.py");
  std::ofstream(script) << R"PY(
import email, email.utils, sys
raw = open(sys.argv[1], 'rb').read()
# The sink prepends envelope lines; the message starts after them.
while raw.startswith(b'X-Sink-'):
    raw = raw.split(b'\n', 1)[1]
m = email.message_from_bytes(raw)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'delivery-status'
parts = m.get_payload()
assert [p.get_content_type() for p in parts] == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], [p.get_content_type() for p in parts]
status = parts[1].get_payload()
# message/delivery-status: per-message fields, then one block per recipient.
fields = [dict(b.items()) for b in status]
assert fields[0]['Reporting-MTA'].startswith('dns;'), fields[0]
rcpts = {f['Final-Recipient'].split(';')[1].strip(): f for f in fields[1:]}
assert set(rcpts) == {'reject@a.test', 'defer@a.test'}, rcpts
assert rcpts['reject@a.test']['Status'] == '5.1.1'
assert rcpts['reject@a.test']['Action'] == 'failed'
assert rcpts['defer@a.test']['Status'] == '5.4.7'
# RFC 3464 2.3.7: the time of the last attempt (the engine's clock), not of
# the report (00:05:02); RFC 5322 date-time.
assert rcpts['reject@a.test']['Last-Attempt-Date'] == 'Thu, 01 Jan 2026 00:00:00 +0000', rcpts['reject@a.test']
assert rcpts['defer@a.test']['Last-Attempt-Date'] == 'Thu, 01 Jan 2026 00:01:01 +0000', rcpts['defer@a.test']
assert fields[0]['Arrival-Date'] == 'Thu, 01 Jan 2026 00:00:00 +0000', fields[0]
assert m['Date'] == 'Thu, 01 Jan 2026 00:05:02 +0000', m['Date']
for f in fields[1:]:
    email.utils.parsedate_to_datetime(f['Last-Attempt-Date'])
assert 'Subject: exp' in parts[2].get_payload()
print('ok')
)PY";
  Child py;
  ASSERT_TRUE(py.start({"/usr/bin/python3", script, report}, dumps.path(), "check"));
  EXPECT_EQ(py.wait(), 0) << py.out() << py.err();
  // A null-sender report that bounces never causes another report.
  EXPECT_EQ(e.events.all().size(), 4u);
}

TEST(Shaping, MemoryBudgetRefusesWithTryLaterAndLosesNothing) {
  uint16_t port = free_port();  // nothing listens yet: the destination is stalled
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(port) + "[delivery]\nbackoff = \"30s\"\n"
                                       "[retry]\nschedule = [\"1m\"]\njitter_percent = 0\n"
                                       "[limits]\nmax_queued_recipients = 5000\n",
                      &clock)
                  .ok());
  auto rss_kb = [] {
    std::string s = read_file("/proc/self/status").value_or("");
    size_t p = s.find("VmRSS:");
    return p == std::string::npos ? 0L : std::stol(s.substr(p + 6));
  };
  long rss0 = rss_kb();
  size_t accepted = 0, try_later = 0;
  std::vector<std::string> accepted_rcpts;
  for (int b = 0; b < 400; ++b) {  // 40,000 recipients offered, 5,000 allowed
    std::vector<std::string> rcpts;
    for (int i = 0; i < 100; ++i) {
      rcpts.push_back("m" + std::to_string(b * 100 + i) + "@stalled.test");
    }
    Ack ack = e.engine->submit(batch_of("mb" + std::to_string(b), rcpts));
    if (ack.status == AckStatus::kTryLater) {
      ++try_later;
      EXPECT_EQ(ack.accepted, 0u);
      EXPECT_NE(ack.reason.find("try later"), std::string::npos) << ack.reason;
    } else {
      ASSERT_EQ(ack.status, AckStatus::kAccepted);
      accepted += ack.accepted;
      accepted_rcpts.insert(accepted_rcpts.end(), rcpts.begin(), rcpts.end());
    }
  }
  EXPECT_EQ(accepted, 5000u);
  EXPECT_EQ(try_later, 350u);
  EXPECT_LE(e.engine->stats().unfinished, 5000u);
  EXPECT_LT(rss_kb() - rss0, 64 * 1024) << "RSS grew by more than 64 MiB";
  // The receiver comes back: every accepted recipient is delivered.
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--listen", "127.0.0.1:" + std::to_string(port)})) << sink.error();
  for (int i = 0; i < 10 && e.events.finals() < accepted; ++i) {
    clock.advance(std::chrono::seconds(61));
    engine::wake_for_test(*e.engine);
    e.events.wait_finals(accepted, milliseconds(3'000));
  }
  ASSERT_TRUE(e.events.wait_finals(accepted));
  for (const auto& r : accepted_rcpts) {
    auto ev = e.events.events(r);
    ASSERT_FALSE(ev.empty()) << r;
    EXPECT_EQ(ev.back().type, EventType::kDelivered) << r;
  }
  EXPECT_TRUE(sink.wait_stat("recipients", static_cast<double>(accepted)));
  // And there is room again.
  EXPECT_EQ(e.engine->submit(batch_of("after", {"late@stalled.test"})).status,
            AckStatus::kAccepted);
}

/// Destination events (backoff, resume) of `e` for `domain`.
size_t destination_events(EventCollector& events, EventType type, const std::string& domain) {
  size_t n = 0;
  for (const auto& ev : events.events("")) {
    n += ev.type == type && ev.json.find("\"destination\":\"" + domain + "\"") != std::string::npos;
  }
  return n;
}

// A destination that refuses connections, with more queued transactions
// than one connection's pipelining window: every connection attempt fails,
// and while one fails another is still being set up. The engine must still
// treat it as a failure: defer the queue, back off, and stop connecting.
TEST(Shaping, RefusedConnectionsDeferAndBackOffWhateverTheQueueDepth) {
  uint16_t port = free_port();  // nothing listens: connect() is refused
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(port) + "[delivery]\nmax_pipelined_txns = 1\nbackoff = \"5m\"\n"
                                       "[retry]\nschedule = [\"10m\"]\njitter_percent = 0\n",
                      &clock)
                  .ok());
  ASSERT_EQ(e.engine->submit(batch_of("s1", {"a@refused.test"})).accepted, 1u);
  ASSERT_EQ(e.engine->submit(batch_of("s2", {"b@refused.test"})).accepted, 1u);
  // Both are deferred promptly, with the connection failure as the reason.
  ASSERT_TRUE(e.events.wait_deferred(2, milliseconds(10'000)))
      << "connections opened: " << e.engine->stats().connections_opened;
  for (const char* r : {"a@refused.test", "b@refused.test"}) {
    auto ev = e.events.events(r);
    ASSERT_EQ(ev.size(), 1u) << r;
    EXPECT_EQ(ev[0].type, EventType::kDeferred);
    EXPECT_NE(ev[0].json.find("\"class\":\"connection\""), std::string::npos) << ev[0].json;
  }
  ASSERT_TRUE(wait_listing(*e.engine, "\"in_flight\":0,\"deferred\":2,"))
      << e.engine->control("list");
  EXPECT_GE(destination_events(e.events, EventType::kBackoff, "refused.test"), 1u);
  // No time passes on the engine's clock: the backoff holds, so no further
  // connection is attempted however often the shards run.
  uint64_t opened = e.engine->stats().connections_opened;
  EXPECT_LE(opened, 4u);
  for (int i = 0; i < 20; ++i) {
    engine::wake_for_test(*e.engine);
    barrier(*e.engine);
  }
  EXPECT_EQ(e.engine->stats().connections_opened, opened);
  std::string list = e.engine->control("list refused.test");
  EXPECT_NE(list.find("\"connections\":0"), std::string::npos) << list;
  EXPECT_EQ(json_ints(list, "backoff_ms").size(), 1u) << list;
  EXPECT_GT(json_ints(list, "backoff_ms")[0], 0) << list;
}

// Recipients past retry.max_age bounce as expired whatever holds them: a
// backoff after refused connections, an operator's pause, a message rate.
TEST(Shaping, MaxAgeIsEnforcedWhileHeldPausedOrRateLimited) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  uint16_t closed = free_port();
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(
      e.start("[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink.port()) +
                  "\"\n[routing.domains]\n\"held.test\" = \"127.0.0.1:" + std::to_string(closed) +
                  "\"\n"
                  "[delivery]\nbackoff = \"5m\"\nmax_rcpts_per_txn = 1\n"
                  "[retry]\nschedule = [\"1m\"]\nmax_age = \"15s\"\njitter_percent = 0\n"
                  "[[shaping]]\nmatch = \"slow.test\"\nmsg_rate = \"1/h\"\n",
              &clock)
          .ok());
  // Held: the first attempt is refused, the second recipient arrives
  // during the backoff.
  ASSERT_EQ(e.engine->submit(batch_of("h1", {"a@held.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(1));
  ASSERT_EQ(e.engine->submit(batch_of("h2", {"b@held.test"})).accepted, 1u);
  // Paused by an operator.
  ASSERT_NE(e.engine->control("pause paused.test").find("\"ok\":true"), std::string::npos);
  ASSERT_EQ(e.engine->submit(batch_of("p1", {"c@paused.test"})).accepted, 1u);
  // Rate-limited: one message an hour, three queued.
  ASSERT_EQ(
      e.engine->submit(batch_of("r1", {"d1@slow.test", "d2@slow.test", "d3@slow.test"})).accepted,
      3u);
  ASSERT_TRUE(e.events.wait_finals(1));  // d1 went with the one token
  barrier(*e.engine);
  EXPECT_EQ(e.events.finals(), 1u);
  // 16 s later (the backoff has 284 s to go, the rate limit an hour):
  // everything left has expired.
  clock.advance(std::chrono::seconds(16));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(6, milliseconds(10'000))) << e.engine->control("list");
  for (const char* r :
       {"a@held.test", "b@held.test", "c@paused.test", "d2@slow.test", "d3@slow.test"}) {
    auto ev = e.events.events(r);
    ASSERT_FALSE(ev.empty()) << r;
    EXPECT_EQ(ev.back().type, EventType::kBounced) << r;
    EXPECT_NE(ev.back().json.find("\"class\":\"expired\""), std::string::npos) << ev.back().json;
  }
  // The held one says why it never got through.
  EXPECT_NE(e.events.events("b@held.test").back().response.find("Connection refused"),
            std::string::npos)
      << e.events.events("b@held.test").back().json;
  EXPECT_EQ(e.events.events("d1@slow.test").back().type, EventType::kDelivered);
  EXPECT_TRUE(eventually([&] { return e.engine->stats().unfinished == 0; }));
}

/// A receiver that accepts everything except recipients whose local part
/// starts with "grey" (451 4.7.1, no "greylist" wording: the bare code many
/// greylisting servers use), "slow" (a rate-limit reply), "tss" (a
/// provider's complaint code) or "blocked" (a policy rejection).
void picky_receiver(Peer& p) {
  p.send("220 mx.picky.test ESMTP\r\n");
  for (;;) {
    auto cmd = p.command(milliseconds(30'000));
    if (!cmd) {
      return;
    }
    std::string c = *cmd;
    for (size_t i = 0; i < 4 && i < c.size(); ++i) {
      c[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(c[i])));
    }
    if (c.starts_with("EHLO")) {
      p.send("250-mx.picky.test\r\n250 ENHANCEDSTATUSCODES\r\n");
    } else if (c.starts_with("RCPT")) {
      if (c.find("<grey") != std::string::npos) {
        p.send("451 4.7.1 Please try again later\r\n");
      } else if (c.find("<slow") != std::string::npos) {
        p.send("450 4.7.1 Rate limit exceeded, slow down\r\n");
      } else if (c.find("<tss") != std::string::npos) {
        p.send("451 4.7.0 [TSS04] Messages temporarily deferred due to user complaints\r\n");
      } else if (c.find("<blocked") != std::string::npos) {
        p.send("550 5.7.1 Blocked by policy\r\n");
      } else {
        p.send("250 2.1.5 ok\r\n");
      }
    } else if (c.starts_with("DATA")) {
      p.send("354 go ahead\r\n");
      if (!p.read_until("\r\n.\r\n")) {
        return;
      }
      p.send("250 2.0.0 queued\r\n");
    } else if (c.starts_with("QUIT")) {
      p.send("221 2.0.0 bye\r\n");
      return;
    } else {
      p.send("250 2.0.0 ok\r\n");  // MAIL, RSET, NOOP
    }
  }
}

TEST(Shaping, OneTemporaryRecipientRefusalDefersOnlyThatRecipient) {
  HostileServer srv(picky_receiver);
  ASSERT_TRUE(srv.ok());
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(srv.port()) + "[delivery]\nbackoff = \"5m\"\npipelining = false\n"
                                             "[retry]\nschedule = [\"10m\"]\njitter_percent = 0\n",
                      &clock)
                  .ok());
  ASSERT_EQ(e.engine->submit(batch_of("g1", {"grey1@picky.test", "ok1@picky.test"})).accepted, 2u);
  ASSERT_TRUE(e.events.wait_finals(1));
  ASSERT_TRUE(e.events.wait_deferred(1));
  EXPECT_EQ(e.events.events("ok1@picky.test").back().type, EventType::kDelivered);
  EXPECT_EQ(e.events.events("grey1@picky.test").back().type, EventType::kDeferred);
  // The destination is not held: the next batch goes at once, on the same
  // engine time, and the connection limit is untouched.
  ASSERT_EQ(e.engine->submit(batch_of("g2", {"ok2@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(2, milliseconds(10'000))) << e.engine->control("list");
  EXPECT_EQ(e.events.events("ok2@picky.test").back().type, EventType::kDelivered);
  EXPECT_EQ(destination_events(e.events, EventType::kBackoff, "picky.test"), 0u);
  std::string list = e.engine->control("list picky.test");
  EXPECT_EQ(json_ints(list, "max_connections"), std::vector<long>{10}) << list;
  EXPECT_EQ(json_ints(list, "backoff_ms"), std::vector<long>{0}) << list;
}

TEST(Shaping, ARunOfThrottlingRepliesBacksTheDestinationOff) {
  HostileServer srv(picky_receiver);
  ASSERT_TRUE(srv.ok());
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(srv.port()) + "[delivery]\nbackoff = \"5m\"\npipelining = false\n"
                                             "backoff_after = 3\nbackoff_window = \"1m\"\n"
                                             "[retry]\nschedule = [\"10m\"]\njitter_percent = 0\n",
                      &clock)
                  .ok());
  // Two throttling replies: below the threshold, no backoff.
  for (int i = 0; i < 2; ++i) {
    std::string n = std::to_string(i);
    ASSERT_EQ(e.engine->submit(batch_of("t" + n, {"slow" + n + "@rl.test", "ok" + n + "@rl.test"}))
                  .accepted,
              2u);
    ASSERT_TRUE(e.events.wait_finals(static_cast<size_t>(i + 1)));
    ASSERT_TRUE(e.events.wait_deferred(static_cast<size_t>(i + 1)));
  }
  EXPECT_EQ(destination_events(e.events, EventType::kBackoff, "rl.test"), 0u);
  // The third within the window: backoff, held.
  ASSERT_EQ(e.engine->submit(batch_of("t2", {"slow2@rl.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(3));
  ASSERT_TRUE(eventually(
      [&] { return destination_events(e.events, EventType::kBackoff, "rl.test") == 1; }));
  // What arrives now waits for the backoff: deferred with that reason, not sent.
  uint64_t txns = e.engine->stats().transactions;
  ASSERT_EQ(e.engine->submit(batch_of("t3", {"ok3@rl.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(4));
  auto ev = e.events.events("ok3@rl.test");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, EventType::kDeferred);
  EXPECT_NE(ev[0].response.find("Rate limit exceeded"), std::string::npos) << ev[0].json;
  EXPECT_EQ(e.engine->stats().transactions, txns);
}

/// Starts `e` against `srv` with the provider rules `rules` in a file.
::testing::AssertionResult start_with_rules(EmbeddedEngine& e, const TempDir& dir, uint16_t port,
                                            const std::string& rules, const engine::Clock* clock) {
  std::ofstream(dir.file("rules.toml")) << rules;
  auto r = e.start(route_to(port) +
                       "[delivery]\nbackoff = \"5m\"\npipelining = false\nbackoff_after = 100\n"
                       "[retry]\nschedule = [\"10m\"]\njitter_percent = 0\n"
                       "[provider_shaping]\nfiles = [\"" +
                       dir.file("rules.toml") + "\"]\n",
                   clock);
  return r.ok() ? ::testing::AssertionSuccess()
                : ::testing::AssertionFailure() << r.error().message;
}

/// The id of the only automation effect listed by `rules`, or "".
std::string only_effect_id(Engine& e) {
  std::string rules = e.control("rules");
  std::smatch m;
  if (!std::regex_search(rules, m, std::regex("\"id\":\"([0-9]+:[0-9]+)\""))) {
    return "";
  }
  return rules.find("\"id\"", static_cast<size_t>(m.position(0)) + 1) == std::string::npos
             ? m[1].str()
             : "";
}

TEST(ProviderAutomation, SuspendHoldsTheDestinationUntilItEndsOrIsCancelled) {
  HostileServer srv(picky_receiver);
  ASSERT_TRUE(srv.ok());
  TempDir dir;
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(start_with_rules(e, dir, srv.port(), R"(
["picky.test"]
[["picky.test".automation]]
regex = "\\[TSS04\\]"
action = "Suspend"
duration = "2 hours"
)",
                               &clock));
  ASSERT_EQ(e.engine->submit(batch_of("a1", {"tss1@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(1));
  ASSERT_TRUE(eventually(
      [&] { return destination_events(e.events, EventType::kBackoff, "picky.test") == 1; }));
  auto backoff = e.events.events("");
  EXPECT_NE(backoff.back().json.find("automation domain picky.test #1: Suspend"), std::string::npos)
      << backoff.back().json;
  // Held: new mail is deferred with the provider's words, nothing is sent.
  uint64_t txns = e.engine->stats().transactions;
  ASSERT_EQ(e.engine->submit(batch_of("a2", {"ok1@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(2));
  EXPECT_NE(e.events.events("ok1@picky.test")[0].response.find("[TSS04]"), std::string::npos);
  EXPECT_EQ(e.engine->stats().transactions, txns);
  // The operator sees it and ends it; a flush sends what waited.
  std::string rules = e.engine->control("rules");
  EXPECT_NE(rules.find("\"action\":\"Suspend\""), std::string::npos) << rules;
  EXPECT_NE(rules.find("\"destination\":\"picky.test\""), std::string::npos) << rules;
  std::string id = only_effect_id(*e.engine);
  ASSERT_FALSE(id.empty()) << rules;
  EXPECT_NE(e.engine->control("rules cancel " + id).find("\"effects\":1"), std::string::npos);
  EXPECT_EQ(e.engine->control("rules").find("\"id\""), std::string::npos);
  e.engine->control("flush picky.test");
  ASSERT_TRUE(e.events.wait_finals(1, milliseconds(10'000))) << e.engine->control("list");
  EXPECT_EQ(e.events.events("ok1@picky.test").back().type, EventType::kDelivered);
}

TEST(ProviderAutomation, SetConfigAfterAThresholdLastsItsDuration) {
  HostileServer srv(picky_receiver);
  ASSERT_TRUE(srv.ok());
  TempDir dir;
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(start_with_rules(e, dir, srv.port(), R"(
["picky.test"]
[["picky.test".automation]]
regex = "Rate limit exceeded"
action = {SetConfig = {name = "connection_limit", value = 1}}
trigger = {Threshold = "2/hr"}
duration = "1 hour"
)",
                               &clock));
  ASSERT_EQ(e.engine->submit(batch_of("s1", {"slow1@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(1));
  barrier(*e.engine);
  EXPECT_EQ(e.engine->control("rules").find("\"id\""), std::string::npos);  // one match: no
  ASSERT_EQ(e.engine->submit(batch_of("s2", {"slow2@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_deferred(2));
  ASSERT_TRUE(eventually(
      [&] { return e.engine->control("rules").find("SetConfig") != std::string::npos; }));
  EXPECT_NE(e.engine->control("rules").find("connection_limit=1"), std::string::npos);
  EXPECT_EQ(json_ints(e.engine->control("list picky.test"), "max_connections"),
            std::vector<long>{1});
  // An hour later the override is gone and the configured limit is back.
  clock.advance(std::chrono::minutes(61));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(
      eventually([&] { return e.engine->control("rules").find("\"id\"") == std::string::npos; }));
  EXPECT_EQ(json_ints(e.engine->control("list picky.test"), "max_connections"),
            std::vector<long>{10});
}

TEST(ProviderAutomation, BounceRefusesWhatIsQueuedWithTheProvidersWords) {
  HostileServer srv(picky_receiver);
  ASSERT_TRUE(srv.ok());
  TempDir dir;
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(start_with_rules(e, dir, srv.port(), R"(
["picky.test"]
[["picky.test".automation]]
regex = "5\\.7\\.1 Blocked"
action = "Bounce"
duration = "30 minutes"
)",
                               &clock));
  ASSERT_EQ(e.engine->submit(batch_of("b1", {"blocked1@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(1));
  ASSERT_TRUE(eventually(
      [&] { return e.engine->control("rules").find("\"Bounce\"") != std::string::npos; }));
  uint64_t txns = e.engine->stats().transactions;
  ASSERT_EQ(e.engine->submit(batch_of("b2", {"ok2@picky.test", "ok3@picky.test"})).accepted, 2u);
  ASSERT_TRUE(e.events.wait_finals(3));
  for (const char* r : {"ok2@picky.test", "ok3@picky.test"}) {
    auto ev = e.events.events(r);
    ASSERT_EQ(ev.size(), 1u) << r;
    EXPECT_EQ(ev[0].type, EventType::kBounced);
    EXPECT_NE(ev[0].response.find("Blocked by policy"), std::string::npos) << ev[0].json;
  }
  EXPECT_EQ(e.engine->stats().transactions, txns);
  // After the duration, mail goes again.
  clock.advance(std::chrono::minutes(31));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(
      eventually([&] { return e.engine->control("rules").find("\"id\"") == std::string::npos; }));
  ASSERT_EQ(e.engine->submit(batch_of("b3", {"ok4@picky.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(4));
  EXPECT_EQ(e.events.events("ok4@picky.test").back().type, EventType::kDelivered);
}

TEST(Shaping, OperatorPauseFlushDrop) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  engine::ManualClock clock;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) + "[retry]\nschedule = [\"1h\"]\n", &clock).ok());
  EXPECT_NE(e.engine->control("pause *.paused.test").find("\"ok\":true"), std::string::npos);
  ASSERT_EQ(e.engine->submit(batch_of("p1", {"a@x.paused.test", "b@y.paused.test"})).accepted, 2u);
  ASSERT_EQ(e.engine->submit(batch_of("p2", {"c@x.paused.test", "d@free.test"})).accepted, 2u);
  ASSERT_TRUE(e.events.wait_finals(1));  // d@free.test is not paused
  barrier(*e.engine);
  std::string list = e.engine->control("list *.paused.test");
  EXPECT_NE(list.find("\"paused\":true"), std::string::npos) << list;
  auto queued = json_ints(list, "queued");
  long total = 0;
  for (long q : queued) {
    total += q;
  }
  EXPECT_EQ(total, 3);
  // Drop batch p1 while it waits: two dropped events, nothing sent.
  std::string drop = e.engine->control("drop-batch p1");
  EXPECT_NE(drop.find("\"recipients\":2"), std::string::npos) << drop;
  ASSERT_TRUE(e.events.wait_finals(3));
  EXPECT_EQ(e.events.events("a@x.paused.test").back().type, EventType::kDropped);
  // Resume: the rest goes.
  EXPECT_NE(e.engine->control("resume *.paused.test").find("\"destinations\":2"),
            std::string::npos);
  ASSERT_TRUE(e.events.wait_finals(4));
  EXPECT_EQ(e.events.events("c@x.paused.test").back().type, EventType::kDelivered);
  EXPECT_TRUE(sink.wait_stat("recipients", 2));
  EXPECT_NE(e.engine->control("bogus").find("\"ok\":false"), std::string::npos);
}

}  // namespace
}  // namespace ringmail::testing
