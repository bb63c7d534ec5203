// The embedding API as an embedder uses it: the public headers and
// libringmail.so only (no engine header), against ringmail-sink on
// loopback.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <ringmail/ringmail_c.h>
#include <ringmail/ringmail.hpp>

#include "tests/e2e/sink_test_util.h"

// tests/embedding/header_*.c{,c}: each public header compiled alone.
extern "C" unsigned header_version_check(void);
extern "C" size_t header_ringmail_c_check(void);
size_t header_ringmail_c_cxx_check();
bool header_ringmail_check();

namespace ringmail::testing {
namespace {

using std::chrono::milliseconds;

std::string config_for(uint16_t sink_port, const std::string& extra = "") {
  return "[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n[spool]\nmode = \"off\"\n"
         "[engine]\nshards = 2\n[routing]\ndefault = \"127.0.0.1:" +
         std::to_string(sink_port) + "\"\n" + extra;
}

const char kMessage[] = "From: <news@example.com>\r\nSubject: api\r\n\r\nHello.\r\n";

Batch batch_to(std::vector<std::string> rcpts) {
  Batch b;
  b.sender = "news@example.com";
  b.message = kMessage;
  b.recipients = std::move(rcpts);
  return b;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// Stops a C engine when the test ends, early returns included; declared
/// after what its callbacks use, so it goes first.
struct StopOnExit {
  ringmail_engine* engine = nullptr;
  ~StopOnExit() { ringmail_stop(engine, 0); }
};

TEST(Headers, CompileAloneAndAgreeWithTheLibrary) {
  EXPECT_EQ(header_version_check(), ringmail_version_number());
  EXPECT_EQ(header_ringmail_c_check(), sizeof(ringmail_batch) + sizeof(ringmail_engine_stats));
  EXPECT_EQ(header_ringmail_c_cxx_check(), sizeof(ringmail_batch));
  EXPECT_TRUE(header_ringmail_check());
  EXPECT_STREQ(ringmail_version(), RINGMAIL_VERSION_STRING);
  EXPECT_EQ(ringmail_version_number(), static_cast<unsigned>(RINGMAIL_VERSION_NUMBER));
}

TEST(Configuration, ParseReportsTheKeyAndReadsBackFacts) {
  auto bad = Config::parse("[delivery]\nmax_rcpts_per_txn = \"many\"\n", "app.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, FailureKind::kConfig);
  EXPECT_TRUE(contains(bad.error().message, "max_rcpts_per_txn")) << bad.error().message;
  EXPECT_TRUE(contains(bad.error().message, "app.toml")) << bad.error().message;

  auto missing = Config::load("/nonexistent/ringmail.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.error().message, "/nonexistent/ringmail.toml"));

  auto good = Config::parse(
      "[engine]\nshutdown_grace = \"2s\"\n[ingest]\nsocket = \"/run/x/in.sock\"\n"
      "[routing]\ndefault = \"127.0.0.1:2525\"\n");
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->shutdown_grace(), milliseconds(2000));
  EXPECT_EQ(good->ingest_socket(), "/run/x/in.sock");
  EXPECT_EQ(good->control_socket(), "/run/x/in-ctl.sock");
  EXPECT_EQ(good->default_route(), "127.0.0.1:2525");
  EXPECT_TRUE(contains(Config::default_toml(), "[routing]"));
}

TEST(CApi, StartRefusesBadInputWithAMessage) {
  char* error = nullptr;
  EXPECT_EQ(ringmail_start("[delivery]\nmax_rcpts_per_txn = -1\n", &error), nullptr);
  ASSERT_NE(error, nullptr);
  EXPECT_TRUE(contains(error, "max_rcpts_per_txn")) << error;
  ringmail_free_string(error);

  error = nullptr;
  EXPECT_EQ(ringmail_start(nullptr, &error), nullptr);
  ASSERT_NE(error, nullptr);
  ringmail_free_string(error);
  EXPECT_EQ(ringmail_start_file("/nonexistent/ringmail.toml", nullptr), nullptr);

  // NULL engines and structs are refused, never dereferenced.
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  EXPECT_EQ(ringmail_submit(nullptr, &batch), nullptr);
  EXPECT_EQ(ringmail_drain(nullptr, 0), RINGMAIL_ERR_ARGUMENT);
  EXPECT_EQ(ringmail_stats(nullptr, nullptr), RINGMAIL_ERR_ARGUMENT);
  EXPECT_EQ(ringmail_control(nullptr, "stats"), nullptr);
  EXPECT_EQ(ringmail_subscribe(nullptr, nullptr, nullptr), 0u);
  ringmail_stop(nullptr, 0);
  ringmail_free_string(nullptr);
  ringmail_ack_free(nullptr);
}

/// What the C callback saw, per recipient.
struct CEvents {
  std::mutex mu;
  std::vector<std::pair<std::string, int>> events;  // recipient, type
  std::vector<std::string> json;
};

void record_c_event(const ringmail_event* e, void* user_data) {
  auto* ev = static_cast<CEvents*>(user_data);
  std::lock_guard lock(ev->mu);
  ev->events.emplace_back(std::string(e->recipient.ptr, e->recipient.len), e->type);
  ev->json.emplace_back(e->json.ptr, e->json.len);
  EXPECT_EQ(e->struct_size, sizeof(ringmail_event));
}

TEST(CApi, SubmitsDeliversReportsAndStops) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  CEvents seen;
  char* error = nullptr;
  ringmail_engine* engine = ringmail_start(config_for(sink.port()).c_str(), &error);
  ASSERT_NE(engine, nullptr) << error;
  StopOnExit stop{engine};
  ASSERT_NE(ringmail_subscribe(engine, record_c_event, &seen), 0u);

  const char* rcpts[] = {"a@one.example", "no at sign", "reject@two.example", "b@two.example"};
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  batch.batch_id = "c-1";
  batch.sender = "news@example.com";
  batch.message = kMessage;
  batch.message_len = std::strlen(kMessage);
  batch.recipients = rcpts;
  batch.recipient_count = 4;
  ringmail_ack* ack = ringmail_submit(engine, &batch);
  ASSERT_NE(ack, nullptr);
  EXPECT_EQ(ack->struct_size, sizeof(ringmail_ack));
  EXPECT_EQ(ack->status, RINGMAIL_ACK_ACCEPTED) << ack->reason;
  EXPECT_STREQ(ack->batch_id, "c-1");
  EXPECT_STREQ(ack->reason, "");
  EXPECT_EQ(ack->accepted, 3u);
  ASSERT_EQ(ack->rejection_count, 1u);
  EXPECT_EQ(ack->rejections[0].index, 1u);
  EXPECT_EQ(ack->rejections[0].reason, RINGMAIL_REJECT_INVALID_ADDRESS);
  EXPECT_GT(std::strlen(ack->rejections[0].text), 0u);
  ringmail_ack_free(ack);

  ASSERT_EQ(ringmail_drain(engine, 30'000), RINGMAIL_OK);
  // A struct from an older program: only the fields it knows are written.
  ringmail_engine_stats stats = RINGMAIL_ENGINE_STATS_INIT;
  stats.bounced = 12345;
  stats.struct_size = offsetof(ringmail_engine_stats, bounced);
  ASSERT_EQ(ringmail_stats(engine, &stats), RINGMAIL_OK);
  EXPECT_EQ(stats.struct_size, offsetof(ringmail_engine_stats, bounced));
  EXPECT_EQ(stats.delivered, 2u);
  EXPECT_EQ(stats.bounced, 12345u);
  ringmail_engine_stats full = RINGMAIL_ENGINE_STATS_INIT;
  ASSERT_EQ(ringmail_stats(engine, &full), RINGMAIL_OK);
  EXPECT_EQ(full.struct_size, sizeof(ringmail_engine_stats));
  EXPECT_EQ(full.bounced, 1u);
  EXPECT_EQ(full.unfinished, 0u);

  char* reply = ringmail_control(engine, "stats");
  ASSERT_NE(reply, nullptr);
  EXPECT_TRUE(contains(reply, "\"ok\":true")) << reply;
  ringmail_free_string(reply);

  // Pointers that do not match their counts: refused with a reason.
  batch.recipients = nullptr;
  ack = ringmail_submit(engine, &batch);
  ASSERT_NE(ack, nullptr);
  EXPECT_EQ(ack->status, RINGMAIL_ACK_REJECTED);
  EXPECT_TRUE(contains(ack->reason, "recipients is NULL")) << ack->reason;
  ringmail_ack_free(ack);
  const char* with_null[] = {"c@one.example", nullptr};
  batch.recipients = with_null;
  batch.recipient_count = 2;
  ack = ringmail_submit(engine, &batch);
  ASSERT_NE(ack, nullptr);
  EXPECT_EQ(ack->status, RINGMAIL_ACK_REJECTED);
  EXPECT_TRUE(contains(ack->reason, "recipients[1] is NULL")) << ack->reason;
  ringmail_ack_free(ack);

  ringmail_stop(engine, 0);  // no callback runs after this
  stop.engine = nullptr;
  std::lock_guard lock(seen.mu);
  std::map<std::string, int> finals;
  for (const auto& [rcpt, type] : seen.events) {
    finals[rcpt] = type;
  }
  EXPECT_EQ(finals.size(), 3u);
  EXPECT_EQ(finals["a@one.example"], RINGMAIL_EVENT_DELIVERED);
  EXPECT_EQ(finals["b@two.example"], RINGMAIL_EVENT_DELIVERED);
  EXPECT_EQ(finals["reject@two.example"], RINGMAIL_EVENT_BOUNCED);
  for (const auto& j : seen.json) {
    EXPECT_TRUE(contains(j, "\"batch\":\"c-1\"")) << j;
  }
  EXPECT_TRUE(sink.wait_stat("recipients", 2)) << sink.stats();
}

/// A C callback that tries the calls that wait for the shards.
struct Reentry {
  ringmail_engine* engine = nullptr;
  std::atomic<bool> tried{false};
  int drain_rc = 0;
  std::string control_reply;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

void reenter(const ringmail_event* /*event*/, void* user_data) {
  auto* r = static_cast<Reentry*>(user_data);
  if (r->tried.exchange(true)) {
    return;
  }
  int rc = ringmail_drain(r->engine, 600'000);
  char* reply = ringmail_control(r->engine, "stats");
  std::lock_guard lock(r->mu);
  r->drain_rc = rc;
  r->control_reply = reply != nullptr ? reply : "(null)";
  ringmail_free_string(reply);
  r->done = true;
  r->cv.notify_all();
}

// Without the check these calls would wait, from a shard thread, for that
// same shard: drain until its ten-minute timeout, control for ever.
TEST(CApi, CallsThatWaitForTheShardsFailFromACallback) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  Reentry r;
  r.engine = ringmail_start(config_for(sink.port()).c_str(), nullptr);
  ASSERT_NE(r.engine, nullptr);
  StopOnExit stop{r.engine};
  ASSERT_NE(ringmail_subscribe(r.engine, reenter, &r), 0u);
  const char* rcpts[] = {"a@one.example"};
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  batch.message = kMessage;
  batch.message_len = std::strlen(kMessage);
  batch.recipients = rcpts;
  batch.recipient_count = 1;
  ringmail_ack_free(ringmail_submit(r.engine, &batch));
  {
    std::unique_lock lock(r.mu);
    ASSERT_TRUE(r.cv.wait_for(lock, milliseconds(30'000), [&] { return r.done; }));
    EXPECT_EQ(r.drain_rc, RINGMAIL_ERR_IN_CALLBACK);
    EXPECT_TRUE(contains(r.control_reply, "\"ok\":false")) << r.control_reply;
  }
}

TEST(Embedding, SubmitFromACallbackWithTheSpoolOnIsTryLater) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  TempDir dir;
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  Ack inner;
  auto engine = Engine::start_toml(
      "[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n[spool]\nmode = \"sync\"\ndir = \"" +
      dir.file("spool") + "\"\n[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink.port()) +
      "\"\n");
  ASSERT_TRUE(engine.ok()) << engine.error().message;
  Engine& e = **engine;
  e.subscribe([&](const EventView& v) {
    if (v.type != EventType::kDelivered) {
      return;
    }
    Ack a = e.submit(batch_to({"again@one.example"}));
    std::lock_guard lock(mu);
    if (!answered) {
      inner = std::move(a);
      answered = true;
      cv.notify_all();
    }
  });
  ASSERT_EQ(e.submit(batch_to({"a@one.example"})).status, AckStatus::kAccepted);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, milliseconds(30'000), [&] { return answered; }));
    EXPECT_EQ(inner.status, AckStatus::kTryLater);
    EXPECT_TRUE(contains(inner.reason, "callback")) << inner.reason;
  }
  e.shutdown(milliseconds(0));
}

// unsubscribe() returns only once no shard runs the callback: the first
// callback holds its shard for a bounded while, watching whether
// unsubscribe() returned meanwhile.
TEST(Embedding, UnsubscribeReturnsOnlyAfterARunningCallbackFinished) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, unsubscribed = false, finished = false, overlapped = false;
  std::atomic<int> calls{0};
  auto engine = Engine::start_toml(config_for(sink.port()));
  ASSERT_TRUE(engine.ok()) << engine.error().message;
  Engine& e = **engine;
  uint64_t id = e.subscribe([&](const EventView&) {
    calls.fetch_add(1);
    std::unique_lock lock(mu);
    if (entered) {
      return;
    }
    entered = true;
    cv.notify_all();
    cv.wait_for(lock, milliseconds(500), [&] { return unsubscribed; });
    overlapped = unsubscribed;
    finished = true;
  });
  ASSERT_NE(id, 0u);
  ASSERT_EQ(e.submit(batch_to({"a@one.example"})).accepted, 1u);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, milliseconds(30'000), [&] { return entered; }));
  }
  e.unsubscribe(id);
  {
    std::lock_guard lock(mu);
    unsubscribed = true;
    EXPECT_TRUE(finished) << "unsubscribe() returned while the callback ran";
  }
  cv.notify_all();
  ASSERT_TRUE(e.drain(milliseconds(30'000)));
  const int before = calls.load();
  // Later events reach nobody.
  ASSERT_EQ(e.submit(batch_to({"b@one.example", "c@two.example"})).accepted, 2u);
  ASSERT_TRUE(e.drain(milliseconds(30'000)));
  e.shutdown(milliseconds(0));
  EXPECT_EQ(calls.load(), before);
  std::lock_guard lock(mu);
  EXPECT_FALSE(overlapped);
}

// Calls racing shutdown() either complete or fail cleanly; none waits for
// a shard that is gone. After shutdown each answers at once.
TEST(Embedding, CallsDuringAndAfterShutdownAnswerCleanly) {
  auto engine = Engine::start_toml(config_for(1));
  ASSERT_TRUE(engine.ok()) << engine.error().message;
  Engine& e = **engine;
  std::atomic<int> started{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 2; ++t) {
    callers.emplace_back([&] {
      bool first = true;
      for (;;) {
        std::string reply = e.control("stats");
        if (first) {
          started.fetch_add(1);
          started.notify_all();
          first = false;
        }
        EXPECT_TRUE(contains(reply, "\"ok\":")) << reply;
        uint64_t id = e.subscribe([](const EventView&) {});
        e.unsubscribe(id);
        if (contains(reply, "\"ok\":false")) {
          EXPECT_TRUE(contains(reply, "shut down")) << reply;
          return;
        }
      }
    });
  }
  for (int n = started.load(); n < 2; n = started.load()) {
    started.wait(n);
  }
  e.shutdown(milliseconds(0));
  for (auto& t : callers) {
    t.join();
  }
  EXPECT_EQ(e.submit(batch_to({"a@one.example"})).status, AckStatus::kTryLater);
  EXPECT_EQ(e.subscribe([](const EventView&) {}), 0u);
  EXPECT_TRUE(contains(e.control("list"), "\"ok\":false"));
  EXPECT_TRUE(e.drain(milliseconds(0)));
  EXPECT_EQ(e.stats().unfinished, 0u);
  e.shutdown();  // again: nothing to do
}

TEST(Embedding, NamesOfStatusesReasonsAndEvents) {
  EXPECT_EQ(to_string(AckStatus::kTryLater), "try_later");
  EXPECT_EQ(to_string(RejectReason::kSuppressed), "suppressed");
  EXPECT_EQ(to_string(EventType::kBounced), "bounced");
  std::string vars;
  append_var(vars, "name", "Ann");
  EXPECT_EQ(vars, std::string("\x04name\x00\x00\x00\x03"
                              "Ann",
                              12));
}

}  // namespace
}  // namespace ringmail::testing
