// End to end: the engine (embedded, and as ringmaild behind its socket)
// delivering to real receiving servers on loopback: ringmail-sink and
// Postfix's smtp-sink.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <regex>
#include <set>

#include "engine/clock.h"
#include "engine/log.h"
#include "tests/e2e/harness.h"
#include "tools/batch_client.h"

namespace ringmail::testing {
namespace {

std::string route_to(uint16_t port) {
  return "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

/// Submits 10,000 recipients in batches of varied sizes over 7 domains and
/// returns every recipient address.
std::vector<std::string> submit_10k(Engine& e) {
  const size_t sizes[] = {1, 3, 10, 50, 100, 250, 1000, 7, 1};
  std::vector<std::string> all;
  size_t n = 0, b = 0;
  while (n < 10'000) {
    size_t k = std::min(sizes[b % std::size(sizes)], 10'000 - n);
    Batch batch;
    batch.batch_id = "t" + std::to_string(b);
    batch.sender = "bulk@example.test";
    batch.message = message_of(2048, "batch " + std::to_string(b));
    for (size_t i = 0; i < k; ++i, ++n) {
      batch.recipients.push_back("u" + std::to_string(n) + "@d" + std::to_string(n % 7) +
                                 ".example.test");
    }
    all.insert(all.end(), batch.recipients.begin(), batch.recipients.end());
    Ack ack = e.submit(batch);
    EXPECT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
    EXPECT_EQ(ack.accepted, k);
    ++b;
  }
  return all;
}

void expect_one_final_delivery_each(EventCollector& ev, const std::vector<std::string>& rcpts) {
  auto all = ev.all();
  EXPECT_EQ(all.size(), rcpts.size());
  size_t bad = 0;
  for (const auto& r : rcpts) {
    auto it = all.find(r);
    if (it == all.end() || it->second.size() != 1 || it->second[0].type != EventType::kDelivered) {
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << "recipients without exactly one delivered event";
}

TEST(Delivery, TenThousandRecipientsToRingmailSinkCountExactly) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port())).ok());
  auto rcpts = submit_10k(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(rcpts.size(), milliseconds(60'000)));
  expect_one_final_delivery_each(e.events, rcpts);
  ASSERT_TRUE(e.engine->drain(milliseconds(5'000)));
  Stats st = e.engine->stats();
  EXPECT_EQ(st.delivered, rcpts.size());
  EXPECT_EQ(st.unfinished, 0u);
  // The sink counts what it accepted, independently of our events.
  EXPECT_TRUE(sink.wait_stat("recipients", 10'000)) << sink.stats();
  EXPECT_TRUE(sink.wait_stat("messages", static_cast<double>(st.transactions))) << sink.stats();
}

// A batch that interleaves its domains (a@d0, b@d1, ... a@d0 again) still
// travels as one transaction per domain, and a stream of such batches
// rides the connections already open (pipelining) instead of opening one
// per message.
TEST(Delivery, InterleavedDomainsMakeOneTransactionPerDomainAndFewConnections) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) +
                      "[engine]\nshards = 1\n[delivery]\nmax_rcpts_per_txn = 100\n"
                      "max_pipelined_txns = 4\nmax_conns_per_destination = 20\n")
                  .ok());
  constexpr int kDomains = 10, kBatches = 20, kPerDomain = 10;
  // Queue everything first, so the count of connections depends on the
  // queue, not on how fast the sink answers while batches arrive.
  ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
  std::vector<std::string> all;
  for (int b = 0; b < kBatches; ++b) {
    Batch batch;
    batch.batch_id = "i" + std::to_string(b);
    batch.sender = "bulk@example.test";
    batch.message = message_of(1024, batch.batch_id);
    for (int i = 0; i < kDomains * kPerDomain; ++i) {
      batch.recipients.push_back("u" + std::to_string(b * 1000 + i) + "@d" +
                                 std::to_string(i % kDomains) + ".example.test");
    }
    all.insert(all.end(), batch.recipients.begin(), batch.recipients.end());
    ASSERT_EQ(e.engine->submit(batch).accepted, batch.recipients.size());
  }
  ASSERT_NE(e.engine->control("resume *").find("\"ok\":true"), std::string::npos);
  ASSERT_TRUE(e.events.wait_finals(all.size(), milliseconds(60'000)));
  expect_one_final_delivery_each(e.events, all);
  Stats st = e.engine->stats();
  EXPECT_EQ(st.transactions, static_cast<uint64_t>(kBatches * kDomains));
  EXPECT_TRUE(sink.wait_stat("messages", kBatches * kDomains)) << sink.stats();
  // One connection per pipelining window of queued transactions (20 / 4
  // per domain); one per domain limit (20 x 10) is over-opening.
  EXPECT_LE(st.connections_opened, static_cast<uint64_t>(kDomains * ((kBatches + 3) / 4)))
      << sink.stats();
  EXPECT_GE(st.connections_opened, static_cast<uint64_t>(kDomains));
}

TEST(Delivery, TenThousandRecipientsToPostfixSmtpSink) {
  const std::string smtp_sink = env_or("POSTFIX_SMTP_SINK", "/usr/sbin/smtp-sink");
  ASSERT_TRUE(have_program(smtp_sink)) << smtp_sink << " missing: tools/setup.sh --test-deps";
  TempDir dir;
  uint16_t port = free_port();
  Child peer;
  // -c: count sessions and messages on stdout; -u: run as postfix when root.
  std::vector<std::string> argv = {smtp_sink, "-c", "127.0.0.1:" + std::to_string(port), "256"};
  if (::geteuid() == 0) {
    argv.insert(argv.begin() + 1, {"-u", "postfix"});
  }
  ASSERT_TRUE(peer.start(argv, dir.path(), "smtp-sink"));
  // Wait until it accepts connections.
  ASSERT_TRUE(eventually([&] {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  })) << peer.err();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(port)).ok());
  auto rcpts = submit_10k(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(rcpts.size(), milliseconds(90'000)));
  expect_one_final_delivery_each(e.events, rcpts);
  Stats st = e.engine->stats();
  // smtp-sink -c prints "sess=N quit=N mesg=N\r" records; its message count
  // must equal our transaction count (smtp-sink does not count recipients).
  std::regex rec("mesg=(\\d+)");
  auto mesg = [&] {
    std::string out = peer.out();
    long last = -1;
    for (std::sregex_iterator it(out.begin(), out.end(), rec), end; it != end; ++it) {
      last = std::stol((*it)[1]);
    }
    return last;
  };
  EXPECT_TRUE(eventually([&] { return mesg() == static_cast<long>(st.transactions); }))
      << "smtp-sink counted " << mesg() << ", ringmail sent " << st.transactions;
}

TEST(Delivery, DefersAndRejectsAffectOnlyTheirRecipients) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  engine::ManualClock clock;
  EmbeddedEngine e;
  // backoff = 0: a "try again later" must not hold the destination here;
  // adaptive backoff has its own tests.
  ASSERT_TRUE(e.start(route_to(sink.port()) +
                          "[delivery]\nbackoff = \"0s\"\n"
                          "[retry]\nschedule = [\"1m\"]\nmax_age = \"10m\"\njitter_percent = 0\n",
                      &clock)
                  .ok());
  Batch b;
  b.sender = "s@example.test";
  b.message = message_of(500);
  b.recipients = {"ok1@a.test",       "reject@a.test",     "defer@a.test",
                  "ok2@a.test",       "rejectdata@b.test", "ok3@b.test",
                  "deferdata@c.test", "ok4@c.test",        "ok5@d.test"};
  ASSERT_EQ(e.engine->submit(b).accepted, 9u);
  // First round: six final verdicts, three deferrals.
  ASSERT_TRUE(e.events.wait_finals(6));
  ASSERT_TRUE(e.events.wait_deferred(3));
  // A deferred event arrives before its transaction ends and the retry is
  // scheduled: wait for the queue to hold all three before moving the clock.
  ASSERT_TRUE(wait_listing(*e.engine, "\"deferred\":2,")) << e.engine->control("list");
  ASSERT_TRUE(wait_listing(*e.engine, "\"deferred\":1,")) << e.engine->control("list");
  auto first = [&](const std::string& r) {
    auto v = e.events.events(r);
    return v.empty() ? EventCollector::Ev{} : v.front();
  };
  EXPECT_EQ(first("ok1@a.test").type, EventType::kDelivered);
  EXPECT_EQ(first("ok2@a.test").type, EventType::kDelivered);
  EXPECT_EQ(first("ok5@d.test").type, EventType::kDelivered);
  EXPECT_EQ(first("reject@a.test").type, EventType::kBounced);
  EXPECT_EQ(first("reject@a.test").enhanced, "5.1.1");
  EXPECT_EQ(first("defer@a.test").type, EventType::kDeferred);
  EXPECT_EQ(first("defer@a.test").code, 451);
  // A transaction refused at end of data affects every recipient in it.
  EXPECT_EQ(first("rejectdata@b.test").type, EventType::kBounced);
  EXPECT_EQ(first("ok3@b.test").type, EventType::kBounced);
  EXPECT_EQ(first("ok3@b.test").code, 554);
  EXPECT_EQ(first("deferdata@c.test").type, EventType::kDeferred);
  EXPECT_EQ(first("ok4@c.test").type, EventType::kDeferred);
  EXPECT_EQ(first("ok4@c.test").attempt, 1u);

  // Retry after the schedule's minute: the same verdicts, attempt 2.
  clock.advance(std::chrono::seconds(61));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_deferred(6));
  auto evs = e.events.events("ok4@c.test");
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[1].attempt, 2u);

  // Past retry.max_age every one of them bounces as expired at its next
  // due time, without another attempt.
  clock.advance(std::chrono::minutes(10));
  engine::wake_for_test(*e.engine);
  ASSERT_TRUE(e.events.wait_finals(9));
  auto last = e.events.events("defer@a.test").back();
  EXPECT_EQ(last.type, EventType::kBounced);
  EXPECT_EQ(last.enhanced, "5.4.7");
  EXPECT_NE(last.response.find("expired"), std::string::npos);
  EXPECT_NE(last.json.find("\"class\":\"expired\""), std::string::npos) << last.json;
  EXPECT_EQ(e.events.events("defer@a.test").size(), 3u);  // deferred twice, then expired
  EXPECT_TRUE(e.engine->drain(milliseconds(5'000)));
  // Nothing else was touched: the delivered ones have exactly one event.
  EXPECT_EQ(e.events.events("ok1@a.test").size(), 1u);
  EXPECT_TRUE(sink.wait_stat("recipients", 3));  // ok1, ok2, ok5
}

TEST(Embedding, EngineAppliesTheConfiguredLogLevel) {
  const engine::LogLevel before = engine::log_level();
  const std::pair<const char*, engine::LogLevel> levels[] = {
      {"error", engine::LogLevel::kError},
      {"debug", engine::LogLevel::kDebug},
      {"warning", engine::LogLevel::kWarning},
      {"info", engine::LogLevel::kInfo},
  };
  for (const auto& [name, level] : levels) {
    // The level the process had is not the one configured.
    engine::set_log_level(level == engine::LogLevel::kInfo ? engine::LogLevel::kError
                                                           : engine::LogLevel::kInfo);
    auto e = Engine::start_toml(std::string("log_level = \"") + name +
                                "\"\n[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n"
                                "[spool]\nmode = \"off\"\n");
    ASSERT_TRUE(e.ok()) << e.error().message;
    EXPECT_EQ(engine::log_level(), level) << "log_level = " << name;
    (*e)->shutdown(milliseconds(0));
  }
  engine::set_log_level(before);
}

class DaemonTest : public ::testing::Test {
 protected:
  void start_daemon(uint16_t sink_port, const std::string& ingest_extra = "") {
    socket_ = dir_.file("rm.sock");
    events_ = dir_.file("events.jsonl");
    std::string cfg = "[ingest]\nsocket = \"" + socket_ + "\"\n" + ingest_extra +
                      "[events]\nfile = \"" + events_ + "\"\n[engine]\nshards = 2\n" +
                      route_to(sink_port);
    std::ofstream(dir_.file("ringmail.toml")) << cfg;
    ASSERT_TRUE(daemon_.start({env_or("RINGMAILD", ""), "--config", dir_.file("ringmail.toml")},
                              dir_.path(), "ringmaild"));
    ASSERT_TRUE(eventually([&] { return ::access(socket_.c_str(), F_OK) == 0; })) << daemon_.err();
  }
  TempDir dir_;
  Child daemon_;
  std::string socket_, events_;
};

TEST_F(DaemonTest, InjectWaitsForEveryRecipientAndEventsAreLogged) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start_daemon(sink.port());
  Child inject;
  ASSERT_TRUE(
      inject.start({env_or("RINGMAIL_INJECT", ""), "--socket", socket_, "--count", "2000",
                    "--batch", "7", "--domains", "5", "--wait", "--json", "--timeout", "60"},
                   dir_.path(), "inject"));
  ASSERT_EQ(inject.wait(), 0) << inject.out() << inject.err();
  std::string out = inject.out();
  std::string json = out.substr(out.rfind('{'));
  EXPECT_EQ(json_number(json, "accepted"), 14'000);
  EXPECT_EQ(json_number(json, "delivered"), 14'000);
  EXPECT_TRUE(sink.wait_stat("recipients", 14'000));
  // Every event line is in the file, one per recipient.
  EXPECT_TRUE(eventually([&] {
    std::string ev = read_file(events_).value_or("");
    return std::count(ev.begin(), ev.end(), '\n') == 14'000;
  }));
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
  EXPECT_NE(::access(socket_.c_str(), F_OK), 0) << "socket left behind";
}

/// A raw protocol client: frames by hand, for hostile input.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawClient() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send(const std::string& bytes) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    (void)n;
  }
  void hello() {
    std::string p, f;
    proto::encode_hello(p, proto::Hello{});
    proto::append_frame(f, proto::FrameType::kHello, p);
    send(f);
  }
  /// Reads until EOF or `timeout`; returns everything received.
  std::string read_all(milliseconds timeout = milliseconds(5'000)) {
    std::string out;
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) {
        continue;
      }
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  bool eof() const { return eof_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
};

/// The types of the frames in `bytes`, and the text of ERROR frames.
std::vector<std::pair<proto::FrameType, std::string>> frames(const std::string& bytes) {
  std::vector<std::pair<proto::FrameType, std::string>> out;
  size_t off = 0;
  while (bytes.size() - off >= proto::kFrameHeaderSize) {
    auto h = proto::decode_frame_header(
        std::span<const char>(bytes.data() + off, proto::kFrameHeaderSize), 1u << 30);
    if (!h.ok() || bytes.size() - off - proto::kFrameHeaderSize < h->length) {
      break;
    }
    out.emplace_back(static_cast<proto::FrameType>(h->type),
                     bytes.substr(off + proto::kFrameHeaderSize, h->length));
    off += proto::kFrameHeaderSize + h->length;
  }
  return out;
}

proto::Ack send_batch(tools::BatchClient& c, const proto::BatchView& b) {
  c.queue_batch(b);
  for (;;) {
    auto f = c.next(10'000);
    if (!f.ok() || !*f) {
      ADD_FAILURE() << "no ack";
      return {};
    }
    if ((*f)->type == proto::FrameType::kAck) {
      auto ack = proto::decode_ack((*f)->payload);
      EXPECT_TRUE(ack.ok());
      return ack.ok() ? *ack : proto::Ack{};
    }
  }
}

TEST_F(DaemonTest, BadInputGetsClearErrorsAndOthersKeepWorking) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start_daemon(sink.port(), "max_message_bytes = 4096\nframe_timeout = \"300ms\"\n");
  auto client = tools::BatchClient::connect(socket_, "test");
  ASSERT_TRUE(client.ok()) << client.error().message;
  EXPECT_EQ(client->server_hello().max_message, 4096u);
  std::string msg = message_of(300);

  // Per-recipient rejections, with reasons; the rest is accepted.
  proto::BatchView b;
  b.batch_id = "mixed";
  b.sender = "s@example.test";
  b.has_sender = true;
  b.message = msg;
  b.recipients = {"no-at-sign",      "a b@example.test", "x@[192.0.2.1]",
                  "ok@example.test", "ok@EXAMPLE.test",  "evil@example.test>\r\nRSET"};
  proto::Ack ack = send_batch(*client, b);
  EXPECT_EQ(ack.status, proto::AckStatus::kAccepted);
  EXPECT_EQ(ack.batch_id, "mixed");
  EXPECT_EQ(ack.accepted, 1u);
  ASSERT_EQ(ack.rejections.size(), 5u);
  std::map<uint32_t, proto::RejectReason> reasons;
  for (const auto& r : ack.rejections) {
    reasons[r.index] = r.reason;
    EXPECT_FALSE(r.text.empty());
  }
  EXPECT_EQ(reasons[0], proto::RejectReason::kInvalidAddress);
  EXPECT_EQ(reasons[1], proto::RejectReason::kInvalidAddress);
  EXPECT_EQ(reasons[2], proto::RejectReason::kPolicy);
  EXPECT_EQ(reasons[4], proto::RejectReason::kDuplicate);  // domains are case-insensitive
  EXPECT_EQ(reasons[5], proto::RejectReason::kInvalidAddress);

  // Whole-batch refusals.
  std::string big = message_of(10'000);
  proto::BatchView too_big = b;
  too_big.batch_id = "big";
  too_big.message = big;
  too_big.recipients = {"r@example.test"};
  ack = send_batch(*client, too_big);
  EXPECT_EQ(ack.status, proto::AckStatus::kRejected);
  EXPECT_NE(ack.reason.find("4096"), std::string::npos) << ack.reason;
  proto::BatchView bad_sender = b;
  bad_sender.batch_id = "badsender";
  bad_sender.sender = "not an address";
  bad_sender.recipients = {"r@example.test"};
  ack = send_batch(*client, bad_sender);
  EXPECT_EQ(ack.status, proto::AckStatus::kRejected);
  EXPECT_NE(ack.reason.find("sender"), std::string::npos) << ack.reason;

  // A garbage frame header: ERROR, then the connection is closed.
  {
    RawClient raw(socket_);
    ASSERT_TRUE(raw.connected());
    raw.hello();
    raw.send(std::string("\x00\x00\x00\x05\x02\xff\x00\x00hello", 13));
    auto f = frames(raw.read_all());
    ASSERT_FALSE(f.empty());
    EXPECT_EQ(f.back().first, proto::FrameType::kError);
    EXPECT_TRUE(raw.eof());
  }
  // A batch before HELLO.
  {
    RawClient raw(socket_);
    std::string p, fr;
    proto::encode_batch(p, b);
    proto::append_frame(fr, proto::FrameType::kBatch, p);
    raw.send(fr);
    auto f = frames(raw.read_all());
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].first, proto::FrameType::kError);
    EXPECT_NE(f[0].second.find("HELLO"), std::string::npos);
  }
  // Half a frame, then silence: closed at ingest.frame_timeout, unacknowledged.
  {
    RawClient raw(socket_);
    raw.hello();
    std::string p, fr;
    proto::encode_batch(p, b);
    proto::append_frame(fr, proto::FrameType::kBatch, p);
    raw.send(fr.substr(0, fr.size() / 2));
    auto f = frames(raw.read_all());
    ASSERT_EQ(f.size(), 2u);  // HELLO, then ERROR; never an ACK
    EXPECT_EQ(f[1].first, proto::FrameType::kError);
    EXPECT_NE(f[1].second.find("frame_timeout"), std::string::npos) << f[1].second;
  }
  // Half a frame, then a disconnect.
  {
    RawClient raw(socket_);
    raw.hello();
    std::string p, fr;
    proto::encode_batch(p, b);
    proto::append_frame(fr, proto::FrameType::kBatch, p);
    raw.send(fr.substr(0, fr.size() - 3));
  }
  // The first client is unaffected by all of this.
  proto::BatchView good = b;
  good.batch_id = "good";
  good.recipients = {"after@example.test"};
  ack = send_batch(*client, good);
  EXPECT_EQ(ack.status, proto::AckStatus::kAccepted);
  EXPECT_EQ(ack.accepted, 1u);
  EXPECT_TRUE(sink.wait_stat("recipients", 2));  // ok@ and after@
  EXPECT_TRUE(daemon_.running());
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

TEST_F(DaemonTest, InvalidConfigurationNamesTheKey) {
  std::ofstream(dir_.file("bad.toml")) << "[delivery]\nmax_rcpts_per_txn = 0\n";
  Child d;
  ASSERT_TRUE(
      d.start({env_or("RINGMAILD", ""), "--config", dir_.file("bad.toml")}, dir_.path(), "bad"));
  EXPECT_NE(d.wait(), 0);
  EXPECT_NE(d.err().find("delivery.max_rcpts_per_txn"), std::string::npos) << d.err();
}

TEST_F(DaemonTest, ConfigurationPathThatIsADirectoryIsRefused) {
  const std::string conf = dir_.file("conf.d");
  ASSERT_EQ(::mkdir(conf.c_str(), 0755), 0);
  // Run in the test's directory: a daemon that wrongly starts on its
  // built-in default puts its socket, spool and event file there.
  Child check;
  ASSERT_TRUE(check.start({env_or("RINGMAILD", ""), "--check-config", "--config", conf},
                          dir_.path(), "check", dir_.path()));
  EXPECT_EQ(check.wait(milliseconds(10'000)), 1) << check.out();
  EXPECT_EQ(check.out().find("configuration ok"), std::string::npos) << check.out();
  EXPECT_NE(check.err().find(conf), std::string::npos) << check.err();
  EXPECT_NE(check.err().find("directory"), std::string::npos) << check.err();

  Child run;
  ASSERT_TRUE(
      run.start({env_or("RINGMAILD", ""), "--config", conf}, dir_.path(), "run", dir_.path()));
  EXPECT_EQ(run.wait(milliseconds(10'000)), 1) << run.err();
  EXPECT_NE(run.err().find(conf), std::string::npos) << run.err();
}

}  // namespace
}  // namespace ringmail::testing
