// The hostile world, client side: the embedded engine delivers to a scripted
// misbehaving SMTP server (hostile_server.h) on loopback. Every test checks
// that each recipient ends in the right state with a clear reason, that the
// engine neither crashes nor hangs, and that it closes the connection.
//
// Timeouts in the configurations are short (the one under test a few
// hundred milliseconds, the others a few seconds) so the suite stays fast
// under ASan. The tests wait on engine events and server records, each
// with a deadline; the delays inside scripts are the behaviour under test.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>

#include "tests/e2e/harness.h"
#include "tests/e2e/hostile_server.h"

namespace ringmail::testing {
namespace {

constexpr char kDomain[] = "hostile.test";
constexpr char kBanner[] = "220 mx.hostile.test ESMTP hostile\r\n";
constexpr char kEhlo[] = "250-mx.hostile.test\r\n250 8BITMIME\r\n";
constexpr char kEhloPipelining[] = "250-mx.hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const milliseconds kWait(15'000);  // upper bound for anything the engine must do

std::string rcpt(const std::string& local) {
  return local + "@" + kDomain;
}

// ---------------------------------------------------------------------------
// Events

/// One event as recorded (the views are copied).
struct Ev {
  EventType type;
  std::string recipient;
  std::string domain;
  uint16_t code;
  std::string enhanced;
  std::string response;
  uint32_t attempt;
  std::string json;
};

/// The raw value of `key` in a flat JSON object: a string without its
/// quotes (escapes kept), or a number/literal as written; "" when absent.
std::string field(const std::string& json, const std::string& key) {
  std::string k = "\"" + key + "\":";
  size_t at = json.find(k);
  if (at == std::string::npos) {
    return "";
  }
  size_t v = at + k.size();
  if (v < json.size() && json[v] == '"') {
    size_t end = v + 1;
    while (end < json.size() && json[end] != '"') {
      end += json[end] == '\\' ? 2 : 1;
    }
    return json.substr(v + 1, end - v - 1);
  }
  size_t end = json.find_first_of(",}", v);
  return json.substr(v, end == std::string::npos ? std::string::npos : end - v);
}

/// Every event, with waits on conditions. Subscribed before any batch, it
/// must outlive the engine (shutdown may still emit).
class Recorder {
 public:
  void add(const EventView& v) {
    std::lock_guard lock(mu_);
    all_.push_back(Ev{v.type, std::string(v.recipient), std::string(v.domain), v.code,
                      std::string(v.enhanced_code), std::string(v.response), v.attempt,
                      std::string(v.json)});
    cv_.notify_all();
  }

  bool wait(const std::function<bool(const std::vector<Ev>&)>& cond, milliseconds timeout = kWait) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return cond(all_); });
  }

  /// Waits until each of `rcpts` has at least one event.
  bool wait_each(const std::vector<std::string>& rcpts, milliseconds timeout = kWait) {
    return wait(
        [&](const std::vector<Ev>& all) {
          for (const auto& r : rcpts) {
            bool seen = false;
            for (const auto& e : all) {
              seen = seen || e.recipient == r;
            }
            if (!seen) {
              return false;
            }
          }
          return true;
        },
        timeout);
  }

  std::vector<Ev> of(const std::string& recipient) {
    std::lock_guard lock(mu_);
    std::vector<Ev> out;
    for (const auto& e : all_) {
      if (e.recipient == recipient && e.type != EventType::kBackoff &&
          e.type != EventType::kResume) {
        out.push_back(e);
      }
    }
    return out;
  }
  std::vector<Ev> of_type(EventType t) {
    std::lock_guard lock(mu_);
    std::vector<Ev> out;
    for (const auto& e : all_) {
      if (e.type == t) {
        out.push_back(e);
      }
    }
    return out;
  }
  std::string dump() {
    std::lock_guard lock(mu_);
    std::string out;
    for (const auto& e : all_) {
      out += "\n  " + (e.json.empty() ? e.response : e.json);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Ev> all_;
};

// ---------------------------------------------------------------------------
// The engine

/// The [delivery.timeouts] of a test: generous unless the test shortens
/// the one it is about.
struct Timeouts {
  std::string connect = "3s";
  std::string greeting = "3s";
  std::string ehlo = "3s";
  std::string mail = "3s";
  std::string rcpt = "3s";
  std::string data_init = "3s";
  std::string data_block = "3s";
  std::string data_done = "3s";
};

std::string config_for(uint16_t port, const Timeouts& t) {
  std::string c;
  c += "[engine]\nshards = 1\n";
  c += "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
  // No retry within a test: every recipient has exactly its first attempt.
  c += "[retry]\nschedule = [\"1h\"]\njitter_percent = 0\n";
  c += "[delivery]\nehlo_name = \"client.test\"\ntls = \"none\"\nbackoff = \"5m\"\n";
  c += "[delivery.timeouts]\n";
  c += "connect = \"" + t.connect + "\"\n";
  c += "greeting = \"" + t.greeting + "\"\n";
  c += "ehlo = \"" + t.ehlo + "\"\n";
  c += "mail = \"" + t.mail + "\"\n";
  c += "rcpt = \"" + t.rcpt + "\"\n";
  c += "data_init = \"" + t.data_init + "\"\n";
  c += "data_block = \"" + t.data_block + "\"\n";
  c += "data_done = \"" + t.data_done + "\"\n";
  c += "rset = \"1s\"\nquit = \"300ms\"\nidle = \"0s\"\n";
  return c;
}

/// The engine with a recorder; the recorder is declared first so it
/// outlives the engine.
struct World {
  Recorder rec;
  EmbeddedEngine e;

  ::testing::AssertionResult start(uint16_t port, const Timeouts& t = {}) {
    auto r = e.start(config_for(port, t));
    if (!r.ok()) {
      return ::testing::AssertionFailure() << r.error().message;
    }
    e.engine->subscribe([this](const EventView& v) { rec.add(v); });
    return ::testing::AssertionSuccess();
  }

  ::testing::AssertionResult submit(const std::vector<std::string>& rcpts, size_t size = 2'000) {
    Batch b;
    b.batch_id = "hostile";
    b.sender = "sender@client.test";
    b.message = message_of(size, "hostile");
    b.recipients = rcpts;
    Ack ack = e.engine->submit(b);
    if (ack.accepted != rcpts.size()) {
      return ::testing::AssertionFailure() << "accepted " << ack.accepted << ": " << ack.reason;
    }
    return ::testing::AssertionSuccess();
  }

  /// Every shard has run its loop past what happened before.
  void barrier() { (void)e.engine->control("list"); }
};

/// Checks that `r` has exactly one event, of `type`, on its first attempt,
/// with `code` and every fragment in its response; returns it.
Ev only_event(World& w, const std::string& r, EventType type, uint16_t code,
              const std::vector<std::string>& fragments) {
  auto evs = w.rec.of(r);
  EXPECT_EQ(evs.size(), 1u) << r << w.rec.dump();
  if (evs.empty()) {
    return Ev{};
  }
  const Ev& e = evs.front();
  EXPECT_EQ(e.type, type) << e.json;
  EXPECT_EQ(e.code, code) << e.json;
  EXPECT_EQ(e.attempt, 1u) << e.json;
  EXPECT_EQ(field(e.json, "attempt"), "1") << e.json;
  EXPECT_EQ(field(e.json, "code"), std::to_string(code)) << e.json;
  for (const auto& f : fragments) {
    EXPECT_NE(e.response.find(f), std::string::npos) << "\"" << f << "\" not in " << e.json;
    EXPECT_NE(field(e.json, "response").find(f), std::string::npos) << e.json;
  }
  return e;
}

// ---------------------------------------------------------------------------
// Script pieces

/// Banner, EHLO (answered with `ehlo`). False when the client went away.
bool greet(Peer& p, std::string_view ehlo = kEhlo) {
  return p.send(kBanner) && p.command() && p.send(ehlo);
}

/// Reads one command and answers it.
bool answer(Peer& p, std::string_view reply) {
  return p.command() && p.send(reply);
}

/// Waits (bounded) until the client hangs up, answering nothing.
void until_eof(Peer& p) {
  while (p.command(milliseconds(10'000))) {
  }
}

/// DATA, 354, the body through the final dot, `reply`; then QUIT → 221.
bool data_and_quit(Peer& p, std::string_view reply = "250 2.0.0 queued as H1\r\n") {
  if (!answer(p, "354 go ahead\r\n") || !p.read_until("\r\n.\r\n") || !p.send(reply)) {
    return false;
  }
  auto q = p.command();
  return q && *q == "QUIT" && p.send("221 2.0.0 bye\r\n");
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

/// Expects the client to have hung up connection `i`.
void expect_client_closed(HostileServer& srv, size_t i = 0) {
  ASSERT_TRUE(srv.wait_done(i, kWait)) << "connection " << i << " still open";
  EXPECT_TRUE(srv.info(i).client_closed.has_value())
      << "connection " << i << " was not closed by the engine";
}

// ---------------------------------------------------------------------------
// Connect and greeting

TEST(Hostile, BannerNeverSentDefersWithGreetingTimeout) {
  HostileServer srv([](Peer& p) { until_eof(p); });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.greeting = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a"), rcpt("b")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a"), rcpt("b")})) << w.rec.dump();
  for (const char* r : {"a", "b"}) {
    Ev e = only_event(w, rcpt(r), EventType::kDeferred, 451, {"timeout", "greeting"});
    EXPECT_EQ(e.enhanced, "4.4.2");
    EXPECT_EQ(field(e.json, "class"), "connection") << e.json;
  }
  // A dead destination backs off, saying why.
  ASSERT_TRUE(w.rec.wait([](const auto& all) {
    for (const auto& e : all) {
      if (e.type == EventType::kBackoff) {
        return true;
      }
    }
    return false;
  })) << w.rec.dump();
  Ev b = w.rec.of_type(EventType::kBackoff).front();
  EXPECT_EQ(b.domain, kDomain);
  EXPECT_NE(b.response.find("greeting"), std::string::npos) << b.response;
  expect_client_closed(srv);
  EXPECT_TRUE(srv.info(0).commands.empty());
  w.barrier();
  EXPECT_EQ(srv.connections(), 1u);
}

/// A listener whose accept queue is full: SYNs are dropped, so connect()
/// hangs until the client gives up.
class FullBacklog {
 public:
  FullBacklog() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 0) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    // Backlog 0 queues one connection; it fills the queue.
    filler_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok_ = ::connect(filler_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~FullBacklog() {
    ::close(filler_);
    ::close(fd_);
  }
  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  int filler_ = -1;
  uint16_t port_ = 0;
  bool ok_ = false;
};

TEST(Hostile, ConnectNeverCompletesDefersWithConnectTimeout) {
  FullBacklog listener;
  ASSERT_TRUE(listener.ok());
  World w;
  Timeouts t;
  t.connect = "300ms";
  ASSERT_TRUE(w.start(listener.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451, {"connect to", "timed out"});
  EXPECT_EQ(field(e.json, "class"), "connection") << e.json;
  EXPECT_EQ(field(e.json, "stage"), "connect") << e.json;
}

// ---------------------------------------------------------------------------
// Stalls

TEST(Hostile, StallAfterMailDefersWithReplyTimeout) {
  HostileServer srv([](Peer& p) {
    greet(p) && p.command();  // MAIL, never answered
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.mail = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451,
                    {"timeout waiting for the reply to MAIL FROM"});
  EXPECT_EQ(e.enhanced, "4.4.2");
  EXPECT_EQ(field(e.json, "unknown_outcome"), "") << e.json;
  expect_client_closed(srv);
  auto cmds = srv.info(0).commands;
  ASSERT_GE(cmds.size(), 2u);
  EXPECT_TRUE(starts_with(cmds[1], "MAIL FROM:<sender@client.test>")) << cmds[1];
}

// Local failures inside a session (timeouts, protocol errors, connection
// lost after the session was ready) are classed "connection", like the
// same failures before the session is ready (proto/bounce.h).
TEST(Hostile, TimeoutInsideASessionIsClassedAsConnection) {
  HostileServer srv([](Peer& p) {
    greet(p) && p.command();  // MAIL, never answered
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.mail = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451, {"timeout"});
  EXPECT_EQ(field(e.json, "class"), "connection") << e.json;
}

TEST(Hostile, StallAfterRcptDefersEveryRecipientOfTheTransaction) {
  HostileServer srv([](Peer& p) {
    // No PIPELINING: one command at a time. The second RCPT is never answered.
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") && p.command();
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.rcpt = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a"), rcpt("b")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a"), rcpt("b")})) << w.rec.dump();
  for (const char* r : {"a", "b"}) {
    Ev e = only_event(w, rcpt(r), EventType::kDeferred, 451,
                      {"timeout waiting for the reply to RCPT TO"});
    EXPECT_EQ(field(e.json, "stage"), "rcpt") << e.json;
    EXPECT_EQ(field(e.json, "unknown_outcome"), "") << e.json;
  }
  expect_client_closed(srv);
}

TEST(Hostile, StallOnDataCommandDefersWithReplyTimeout) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") && p.command();  // DATA
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.data_init = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451,
                    {"timeout waiting for the reply to DATA"});
  EXPECT_EQ(field(e.json, "stage"), "data") << e.json;
  EXPECT_EQ(field(e.json, "unknown_outcome"), "") << e.json;
  expect_client_closed(srv);
}

TEST(Hostile, StallAfterEndOfDataDefersAsUnknownOutcome) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "354 go ahead\r\n") && p.read_until("\r\n.\r\n");
    until_eof(p);  // the message is in, the verdict never comes
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.data_done = "300ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451,
                    {"timeout waiting for the reply to end of data"});
  EXPECT_EQ(field(e.json, "stage"), "body") << e.json;
  // The server has the whole message: it may have accepted it.
  EXPECT_EQ(field(e.json, "unknown_outcome"), "true") << e.json;
  expect_client_closed(srv);
  EXPECT_NE(srv.info(0).body.find("Subject: hostile"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Replies too long, endless, malformed

TEST(Hostile, MegabyteReplyLineDefersAndCloses) {
  HostileServer srv([](Peer& p) {
    if (greet(p) && p.command()) {  // MAIL
      std::string line = "250 " + std::string(1 << 20, 'x') + "\r\n";
      p.send(line, milliseconds(5'000));  // fails once the client hangs up
    }
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  only_event(w, rcpt("a"), EventType::kDeferred, 451, {"malformed reply", "line longer than"});
  expect_client_closed(srv);
}

TEST(Hostile, EndlessMultilineReplyDefersAndCloses) {
  HostileServer srv([](Peer& p) {
    if (p.send(kBanner) && p.command()) {  // EHLO
      // Continuation lines that never end (bounded only so the script ends).
      std::string chunk;
      for (int i = 0; i < 100; ++i) {
        chunk += "250-and another extension\r\n";
      }
      for (int i = 0; i < 100'000 && p.send(chunk, milliseconds(2'000)); ++i) {
      }
    }
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451, {"malformed reply", "lines"});
  EXPECT_EQ(field(e.json, "class"), "connection") << e.json;
  expect_client_closed(srv);
}

TEST(Hostile, GarbageReplyToRcptDefers) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "hello\r\n");
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451,
                    {"protocol error", "malformed reply", "3-digit code"});
  EXPECT_EQ(e.enhanced, "4.5.0");
  expect_client_closed(srv);
}

class HostileCode : public ::testing::TestWithParam<const char*> {};

TEST_P(HostileCode, ReplyCodeOutOfRangeDefers) {
  const std::string reply = GetParam();
  HostileServer srv([&](Peer& p) {
    greet(p) && answer(p, reply);  // to MAIL
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  only_event(w, rcpt("a"), EventType::kDeferred, 451, {"protocol error", "malformed reply line"});
  expect_client_closed(srv);
}

INSTANTIATE_TEST_SUITE_P(Hostile, HostileCode,
                         ::testing::Values("999 2.0.0 whatever\r\n", "099 2.0.0 whatever\r\n",
                                           "600 ok\r\n", "199 ok\r\n"));

TEST(Hostile, MismatchedMultilineCodesToEndOfDataDeferAsUnknown) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "354 go ahead\r\n") && p.read_until("\r\n.\r\n") &&
        p.send("250-2.0.0 queued\r\n554 5.6.0 or not\r\n");
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  // Neither delivered nor bounced: the verdict is unreadable.
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451,
                    {"protocol error", "reply code changed between lines"});
  EXPECT_EQ(field(e.json, "unknown_outcome"), "true") << e.json;
  expect_client_closed(srv);
}

// ---------------------------------------------------------------------------
// Unsolicited and trickled replies

// A reply nobody asked for right after the EHLO reply desynchronises the
// session before it carried any transaction: the recipient is deferred and
// the destination backs off, instead of reconnecting in a loop.
TEST(Hostile, ExtraReplyToEhloIsADesyncAndDefers) {
  HostileServer srv([](Peer& p) {
    // Two replies to one EHLO, in one segment; then a normal server.
    if (p.send(kBanner) && p.command() && p.send(std::string(kEhlo) + "250 surplus\r\n")) {
      answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") && data_and_quit(p);
    }
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")}))
      << "connections: " << srv.connections() << ", engine: " << w.e.engine->control("list")
      << w.rec.dump();
  only_event(w, rcpt("a"), EventType::kDeferred, 451, {"unexpected reply", "250 surplus"});
  expect_client_closed(srv);
  w.barrier();
  EXPECT_LE(srv.connections(), 2u) << "the engine reconnects in a loop";
}

TEST(Hostile, UnsolicitedReplyAfterDeliveryDoesNotChangeTheOutcome) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "354 go ahead\r\n") && p.read_until("\r\n.\r\n") &&
        p.send("250 2.0.0 queued\r\n250 2.0.0 and again\r\n");
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDelivered, 250, {"queued"});
  EXPECT_EQ(e.enhanced, "2.0.0");
  expect_client_closed(srv);
  w.barrier();
  EXPECT_EQ(w.rec.of(rcpt("a")).size(), 1u) << w.rec.dump();
}

TEST(Hostile, RepliesTrickledByteByByteWithinTheDeadlineDeliver) {
  const milliseconds gap(3);
  HostileServer srv([&](Peer& p) {
    auto say = [&](std::string_view s) { return p.trickle(s, gap); };
    bool ok = say(kBanner) && p.command() && say(kEhloPipelining) && p.command() &&
              say("250 2.1.0 sender ok\r\n") && p.command() && say("250 2.1.5 rcpt ok\r\n") &&
              p.command() && say("354 go ahead\r\n") && p.read_until("\r\n.\r\n") &&
              say("250 2.0.0 queued as T1\r\n");
    if (ok && p.command() == "QUIT") {
      say("221 2.0.0 bye\r\n");
    }
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDelivered, 250, {"queued as T1"});
  EXPECT_EQ(e.enhanced, "2.0.0");
  expect_client_closed(srv);
  auto info = srv.info(0);
  ASSERT_GE(info.commands.size(), 5u);
  EXPECT_EQ(info.commands[0], "EHLO client.test");
  EXPECT_EQ(info.commands.back(), "QUIT");
  EXPECT_NE(info.body.find("Subject: hostile"), std::string::npos);
}

TEST(Hostile, TrickleSlowerThanTheDeadlineDoesNotStretchIt) {
  HostileServer srv([](Peer& p) {
    // Each byte comes well within the deadline, the whole reply does not.
    greet(p) && p.command() &&
        p.trickle("250 2.1.0 sender ok, slowly, one byte at a time\r\n", milliseconds(25));
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.mail = "400ms";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  only_event(w, rcpt("a"), EventType::kDeferred, 451,
             {"timeout waiting for the reply to MAIL FROM"});
  expect_client_closed(srv);
}

// ---------------------------------------------------------------------------
// The server gives up

TEST(Hostile, ServiceClosingMidSessionDefersAndBacksOff) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 2.1.5 ok\r\n") &&
        answer(p, "421 4.7.0 mx.hostile.test too many connections, try again later\r\n");
    until_eof(p);  // and leave it to the client to hang up
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a"), rcpt("b")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a"), rcpt("b")})) << w.rec.dump();
  for (const char* r : {"a", "b"}) {
    Ev e = only_event(w, rcpt(r), EventType::kDeferred, 421, {"too many connections"});
    EXPECT_EQ(e.enhanced, "4.7.0");
    EXPECT_EQ(field(e.json, "class"), "rate_limited") << e.json;
  }
  ASSERT_TRUE(w.rec.wait([](const auto& all) {
    for (const auto& e : all) {
      if (e.type == EventType::kBackoff) {
        return true;
      }
    }
    return false;
  })) << w.rec.dump();
  Ev b = w.rec.of_type(EventType::kBackoff).front();
  EXPECT_EQ(b.domain, kDomain);
  EXPECT_NE(b.response.find("421"), std::string::npos) << b.response;
  EXPECT_EQ(field(b.json, "hold"), "true") << b.json;
  expect_client_closed(srv);
  EXPECT_EQ(srv.info(0).commands.size(), 4u);  // EHLO MAIL RCPT RCPT: nothing after 421
}

TEST(Hostile, ConnectionResetMidDataDefersOnce) {
  HostileServer srv([](Peer& p) {
    if (greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "354 go ahead\r\n")) {
      p.read_bytes(64 * 1024);
      p.reset();
    }
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a"), rcpt("b")}, 4 << 20));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a"), rcpt("b")})) << w.rec.dump();
  ASSERT_TRUE(srv.wait_done(0, kWait));
  w.barrier();
  for (const char* r : {"a", "b"}) {
    Ev e = only_event(w, rcpt(r), EventType::kDeferred, 451, {"connection lost"});
    EXPECT_EQ(field(e.json, "stage"), "body") << e.json;
  }
  EXPECT_TRUE(srv.info(0).server_closed);
  EXPECT_EQ(w.e.engine->stats().deferred, 2u);
  EXPECT_EQ(w.e.engine->stats().delivered + w.e.engine->stats().bounced, 0u);
}

// A reset while the body is still being sent is not an unknown outcome:
// the server never received the final dot, so it cannot have accepted the
// message ("unknown_outcome" means the connection was lost after the whole
// message was sent, docs/protocol.md).
TEST(Hostile, ResetBeforeTheFinalDotIsNotAnUnknownOutcome) {
  HostileServer srv(
      [](Peer& p) {
        if (greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
            answer(p, "354 go ahead\r\n")) {
          p.read_bytes(64 * 1024);
          p.reset();
        }
      },
      /*rcvbuf=*/16 * 1024);
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  // Larger than what the kernel's send and receive buffers can hold
  // together, so the final dot cannot have left the engine at the reset.
  ASSERT_TRUE(w.submit({rcpt("a")}, 16 << 20));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451, {"connection lost"});
  EXPECT_EQ(field(e.json, "unknown_outcome"), "") << e.json;
  EXPECT_EQ(w.e.engine->stats().unknown_outcomes, 0u);
}

TEST(Hostile, CloseRightAfterFinal250IsDelivered) {
  HostileServer srv([](Peer& p) {
    greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "354 go ahead\r\n") && p.read_until("\r\n.\r\n") &&
        p.send("250 2.0.0 queued as C1\r\n");
    p.close();
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  ASSERT_TRUE(srv.wait_done(0, kWait));
  w.barrier();
  Ev e = only_event(w, rcpt("a"), EventType::kDelivered, 250, {"queued as C1"});
  EXPECT_EQ(field(e.json, "class"), "") << e.json;
  EXPECT_EQ(field(e.json, "unknown_outcome"), "") << e.json;
  EXPECT_EQ(w.e.engine->stats().deferred, 0u);
  EXPECT_EQ(w.e.engine->stats().unfinished, 0u);
  EXPECT_EQ(srv.connections(), 1u);
}

// ---------------------------------------------------------------------------
// Per-recipient verdicts

TEST(Hostile, PerRecipientVerdictsKeepTheirEnhancedCodes) {
  HostileServer srv([](Peer& p) {
    // PIPELINING: the client sends MAIL, the RCPTs and DATA in one flight.
    if (!greet(p, kEhloPipelining)) {
      return;
    }
    auto mail = p.command();
    if (!mail || !starts_with(*mail, "MAIL FROM:")) {
      return;
    }
    p.send("250 2.1.0 sender ok\r\n");
    for (;;) {
      auto c = p.command();
      if (!c) {
        return;
      }
      if (*c == "DATA") {
        break;
      }
      if (c->find("<bad@") != std::string::npos) {
        p.send("550 5.1.1 <bad@hostile.test>: user unknown\r\n");
      } else if (c->find("<full@") != std::string::npos) {
        p.send("452 4.2.2 mailbox full, over quota\r\n");
      } else if (c->find("<policy@") != std::string::npos) {
        p.send("554 5.7.1 relay access denied\r\n");
      } else {
        p.send("250 2.1.5 recipient ok\r\n");
      }
    }
    p.send("354 go ahead\r\n") && p.read_until("\r\n.\r\n") && p.send("250 2.0.0 queued as P1\r\n");
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  std::vector<std::string> all = {rcpt("ok1"), rcpt("bad"), rcpt("full"), rcpt("policy"),
                                  rcpt("ok2")};
  ASSERT_TRUE(w.submit(all));
  ASSERT_TRUE(w.rec.wait_each(all)) << w.rec.dump();
  for (const char* r : {"ok1", "ok2"}) {
    Ev e = only_event(w, rcpt(r), EventType::kDelivered, 250, {"queued as P1"});
    EXPECT_EQ(e.enhanced, "2.0.0");
    EXPECT_EQ(field(e.json, "stage"), "body") << e.json;
  }
  Ev bad = only_event(w, rcpt("bad"), EventType::kBounced, 550, {"user unknown"});
  EXPECT_EQ(bad.enhanced, "5.1.1");
  EXPECT_EQ(field(bad.json, "enhanced_code"), "5.1.1");
  EXPECT_EQ(field(bad.json, "class"), "invalid_recipient") << bad.json;
  EXPECT_EQ(field(bad.json, "stage"), "rcpt") << bad.json;
  Ev full = only_event(w, rcpt("full"), EventType::kDeferred, 452, {"mailbox full"});
  EXPECT_EQ(full.enhanced, "4.2.2");
  EXPECT_EQ(field(full.json, "class"), "mailbox_full") << full.json;
  Ev pol = only_event(w, rcpt("policy"), EventType::kBounced, 554, {"relay access denied"});
  EXPECT_EQ(pol.enhanced, "5.7.1");
  EXPECT_EQ(field(pol.json, "class"), "policy_block") << pol.json;
  expect_client_closed(srv);
  // One transaction: MAIL, five RCPTs, DATA.
  auto cmds = srv.info(0).commands;
  ASSERT_GE(cmds.size(), 8u);
  EXPECT_EQ(cmds[7], "DATA");
}

// ---------------------------------------------------------------------------
// Flow control

/// Enough to fill the client's send buffer and the server's window many
/// times over (tcp_wmem allows up to 4 MiB on a default Linux).
constexpr size_t kLarge = 12 << 20;
constexpr int kSmallWindow = 4096;

TEST(Hostile, ServerThatStopsReadingTriggersTheSendTimeout) {
  HostileServer srv(
      [](Peer& p) {
        if (greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
            answer(p, "354 go ahead\r\n")) {
          p.wait_gate();  // TCP zero window until the test has seen the client give up
        }
      },
      kSmallWindow);
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.data_block = "500ms";
  t.data_done = "30s";  // so only the send-progress deadline can fire
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}, kLarge));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  srv.open_gate();
  Ev e = only_event(w, rcpt("a"), EventType::kDeferred, 451, {"no progress sending"});
  EXPECT_EQ(field(e.json, "stage"), "body") << e.json;
  expect_client_closed(srv);
  auto info = srv.info(0);
  EXPECT_LT(info.bytes_after_script + info.body.size(), kLarge);
}

// The data_done deadline ("the reply to end of data") starts when the final
// dot has been sent (RFC 5321 4.5.3.2.6), not when the body was queued: a
// server that reads a large message steadily (progress well within
// data_block) but needs longer than data_done for all of it is not cut off.
TEST(Hostile, SlowSteadyReaderIsNotCutOffByTheEndOfDataTimeout) {
  HostileServer srv(
      [](Peer& p) {
        if (greet(p) && answer(p, "250 ok\r\n") && answer(p, "250 ok\r\n") &&
            answer(p, "354 go ahead\r\n")) {
          // About 4 MB/s: 128 KiB every 30 ms, until the final dot.
          auto ends = [&] {
            const std::string& b = p.body();
            return b.size() >= 5 && b.compare(b.size() - 5, 5, "\r\n.\r\n") == 0;
          };
          while (!ends() && !p.eof() && p.pause(milliseconds(30))) {
            p.read_bytes(128 * 1024, milliseconds(200));
          }
          if (ends()) {
            p.send("250 2.0.0 queued as S1\r\n");
          }
        }
        until_eof(p);
      },
      kSmallWindow);
  ASSERT_TRUE(srv.ok());
  World w;
  Timeouts t;
  t.data_block = "1s";
  t.data_done = "1s";
  ASSERT_TRUE(w.start(srv.port(), t));
  ASSERT_TRUE(w.submit({rcpt("a")}, kLarge));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")}, milliseconds(30'000))) << w.rec.dump();
  only_event(w, rcpt("a"), EventType::kDelivered, 250, {"queued as S1"});
  expect_client_closed(srv);
}

// ---------------------------------------------------------------------------
// Old servers

TEST(Hostile, EhloRefusedFallsBackToHelo) {
  HostileServer srv([](Peer& p) {
    p.send(kBanner) && answer(p, "502 5.5.2 EHLO not recognized\r\n") &&
        answer(p, "250 mx.hostile.test\r\n") && answer(p, "250 ok\r\n") &&
        answer(p, "250 ok\r\n") && data_and_quit(p, "250 queued as O1\r\n");
    until_eof(p);
  });
  ASSERT_TRUE(srv.ok());
  World w;
  ASSERT_TRUE(w.start(srv.port()));
  ASSERT_TRUE(w.submit({rcpt("a")}));
  ASSERT_TRUE(w.rec.wait_each({rcpt("a")})) << w.rec.dump();
  Ev e = only_event(w, rcpt("a"), EventType::kDelivered, 250, {"queued as O1"});
  EXPECT_EQ(e.enhanced, "2.0.0");  // none from the peer: the class's default
  expect_client_closed(srv);
  auto cmds = srv.info(0).commands;
  ASSERT_GE(cmds.size(), 6u);
  EXPECT_EQ(cmds[0], "EHLO client.test");
  EXPECT_EQ(cmds[1], "HELO client.test");
  // No extensions after HELO: a bare MAIL FROM.
  EXPECT_EQ(cmds[2], "MAIL FROM:<sender@client.test>");
  EXPECT_EQ(cmds[3], "RCPT TO:<a@hostile.test>");
  EXPECT_EQ(cmds[4], "DATA");
  EXPECT_EQ(cmds[5], "QUIT");
}

}  // namespace
}  // namespace ringmail::testing
