// Operations: ringmaild as a service manager and an operator see it —
// systemd readiness, status and watchdog (sd_notify datagrams to a socket
// the test owns, no systemd needed), the event file reopened on SIGHUP and
// by `ringmail-ctl reopen-logs` without losing or repeating a line, and the
// `ringmail-ctl queue` summary.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "tests/e2e/harness.h"
#include "tests/e2e/tls_util.h"
#include "tools/batch_client.h"
#include "tools/queue_summary.h"
#include "tools/service_notify.h"

namespace ringmail::testing {
namespace {

std::string route_to(uint16_t port) {
  return "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

/// The service manager's end of sd_notify: a datagram socket bound at a
/// path, or in the abstract namespace for "@name". Keeps every datagram.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& address) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    socklen_t len = sizeof a;
    if (address.empty() || address.size() >= sizeof a.sun_path) {
      return;
    }
    if (address[0] == '@') {
      std::memcpy(a.sun_path + 1, address.data() + 1, address.size() - 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
    } else {
      std::memcpy(a.sun_path, address.c_str(), address.size() + 1);
    }
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0;
  }
  ~NotifySocket() { ::close(fd_); }
  bool ok() const { return ok_; }

  /// Receives until `cond(messages)` holds or `timeout` passes.
  template <class F>
  bool wait(F cond, milliseconds timeout = milliseconds(30'000)) {
    auto deadline = Clock::now() + timeout;
    while (!cond()) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        return false;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) == 1) {
        char buf[4096];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
          messages_.emplace_back(buf, static_cast<size_t>(n));
        }
      }
    }
    return true;
  }
  bool wait_line(const std::string& line, milliseconds timeout = milliseconds(30'000)) {
    return wait([&] { return count_line(line) > 0; }, timeout);
  }
  /// Datagrams holding the line `line` ("READY=1").
  size_t count_line(const std::string& line) const {
    size_t n = 0;
    for (const auto& m : messages_) {
      n += has_line(m, line) ? 1 : 0;
    }
    return n;
  }
  std::string first_with(const std::string& line) const {
    for (const auto& m : messages_) {
      if (has_line(m, line)) {
        return m;
      }
    }
    return "";
  }
  std::string all() const {
    std::string out;
    for (const auto& m : messages_) {
      out += "[" + m + "]";
    }
    return out;
  }

 private:
  static bool has_line(const std::string& m, const std::string& line) {
    return ("\n" + m + "\n").find("\n" + line + "\n") != std::string::npos;
  }
  int fd_ = -1;
  bool ok_ = false;
  std::vector<std::string> messages_;
};

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

/// `n` recipients "<prefix><i>@d<i % 4>.test".
std::vector<std::string> recipients(const std::string& prefix, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(prefix + std::to_string(i) + "@d" + std::to_string(i % 4) + ".test");
  }
  return out;
}

/// The recipient of every line of an event file, and whether every line
/// is one whole JSON object.
std::multiset<std::string> recipients_in(const std::string& path, bool* whole_lines) {
  std::multiset<std::string> out;
  std::string text = read_file(path).value_or("");
  *whole_lines = text.empty() || text.back() == '\n';
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      nl = text.size();
    }
    std::string line = text.substr(pos, nl - pos);
    if (line.size() < 2 || line.front() != '{' || line.back() != '}') {
      *whole_lines = false;
    }
    out.insert(tools::event_field(line, "recipient"));
    pos = nl + 1;
  }
  return out;
}

size_t lines_in(const std::string& path) {
  std::string text = read_file(path).value_or("");
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

class OperationsTest : public ::testing::Test {
 protected:
  /// Starts ringmaild with a socket, a control socket, an event file and
  /// two shards; `extra` adds sections.
  void start_daemon(const std::string& extra, const std::vector<std::string>& env = {}) {
    write_config(extra);
    ASSERT_TRUE(daemon_.start({env_or("RINGMAILD", ""), "--config", dir_.file("ringmail.toml")},
                              dir_.path(), "ringmaild", dir_.path(), env));
    ASSERT_TRUE(eventually([&] { return ::access(ctl_socket_.c_str(), F_OK) == 0; }))
        << daemon_.err();
  }

  /// (Re)writes ringmail.toml: the sockets, the event file, two shards,
  /// spool off, then `extra`.
  void write_config(const std::string& extra) {
    socket_ = dir_.file("rm.sock");
    ctl_socket_ = dir_.file("rm-ctl.sock");
    events_ = dir_.file("events.jsonl");
    std::string cfg =
        "[ingest]\nsocket = \"" + socket_ + "\"\n[events]\nfile = \"" + events_ +
        "\"\n[engine]\nshards = 2\nshutdown_grace = \"0s\"\n[spool]\nmode = \"off\"\n" + extra;
    std::ofstream(dir_.file("ringmail.toml")) << cfg;
  }

  /// Runs ringmail-ctl with `args`; returns its exit status, output in `out`.
  int ctl(const std::vector<std::string>& args, std::string* out) {
    std::vector<std::string> argv = {env_or("RINGMAIL_CTL", ""), "--socket", ctl_socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    Child c;
    if (!c.start(argv, dir_.path(), "ctl")) {
      return -1;
    }
    int rc = c.wait(milliseconds(30'000));
    *out = c.out() + c.err();
    return rc;
  }

  proto::Ack submit(tools::BatchClient& client, const std::string& id,
                    const std::vector<std::string>& rcpts) {
    proto::BatchView b;
    b.batch_id = id;
    b.sender = "ops@example.test";
    b.has_sender = true;
    b.message = message_;
    b.recipients.assign(rcpts.begin(), rcpts.end());
    return send_batch(client, b);
  }

  TempDir dir_;
  Child daemon_;
  std::string socket_, ctl_socket_, events_;
  std::string message_ = message_of(600);
};

// --- sd_notify ---------------------------------------------------------------

TEST_F(OperationsTest, NotifiesReadyOnlyOnceBatchesAreAcceptedAndStoppingAtShutdown) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  NotifySocket notify(dir_.file("notify.sock"));
  ASSERT_TRUE(notify.ok());
  start_daemon(route_to(sink.port()), {"NOTIFY_SOCKET=" + dir_.file("notify.sock")});
  ASSERT_TRUE(notify.wait_line("READY=1")) << daemon_.err() << notify.all();
  // Ready means ready: a client that connects now has its batch accepted.
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  proto::Ack ack = submit(*client, "ready", {"a@ready.test"});
  EXPECT_EQ(ack.status, proto::AckStatus::kAccepted) << ack.reason;
  EXPECT_TRUE(sink.wait_stat("recipients", 1));
  EXPECT_EQ(notify.count_line("READY=1"), 1u) << notify.all();
  // The READY datagram says what is running.
  std::string ready = notify.first_with("READY=1");
  EXPECT_NE(ready.find("STATUS="), std::string::npos) << ready;
  EXPECT_NE(ready.find(socket_), std::string::npos) << ready;

  ASSERT_EQ(::kill(daemon_.pid(), SIGTERM), 0);
  EXPECT_TRUE(notify.wait_line("STOPPING=1")) << notify.all();
  EXPECT_EQ(daemon_.wait(), 0) << daemon_.err();
}

TEST_F(OperationsTest, NotifySocketInTheAbstractNamespace) {
  const std::string name = "@ringmail-notify-test-" + std::to_string(::getpid());
  NotifySocket notify(name);
  ASSERT_TRUE(notify.ok());
  start_daemon(route_to(free_port()), {"NOTIFY_SOCKET=" + name});
  ASSERT_TRUE(notify.wait_line("READY=1")) << daemon_.err() << notify.all();
  ASSERT_EQ(::kill(daemon_.pid(), SIGTERM), 0);
  EXPECT_TRUE(notify.wait_line("STOPPING=1")) << notify.all();
  EXPECT_EQ(daemon_.wait(), 0) << daemon_.err();
}

TEST_F(OperationsTest, WatchdogKeepalivesKeepComingWhileTheShardsTurn) {
  NotifySocket notify(dir_.file("notify.sock"));
  ASSERT_TRUE(notify.ok());
  start_daemon(route_to(free_port()),
               {"NOTIFY_SOCKET=" + dir_.file("notify.sock"), "WATCHDOG_USEC=200000"});
  ASSERT_TRUE(notify.wait_line("READY=1")) << daemon_.err() << notify.all();
  // Idle shards sleep; the keepalives still come (the daemon wakes them
  // and sees them turn).
  EXPECT_TRUE(notify.wait([&] { return notify.count_line("WATCHDOG=1") >= 5; }))
      << daemon_.err() << notify.all();
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

TEST_F(OperationsTest, WatchdogOfAnotherProcessIsNotFed) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  NotifySocket notify(dir_.file("notify.sock"));
  ASSERT_TRUE(notify.ok());
  // WATCHDOG_PID names the test process: the watchdog is not ringmaild's.
  start_daemon(route_to(sink.port()),
               {"NOTIFY_SOCKET=" + dir_.file("notify.sock"), "WATCHDOG_USEC=20000",
                "WATCHDOG_PID=" + std::to_string(::getpid())});
  ASSERT_TRUE(notify.wait_line("READY=1")) << daemon_.err() << notify.all();
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  EXPECT_EQ(submit(*client, "w", recipients("w", 20)).accepted, 20u);
  EXPECT_TRUE(sink.wait_stat("recipients", 20));
  ASSERT_EQ(::kill(daemon_.pid(), SIGTERM), 0);
  EXPECT_TRUE(notify.wait_line("STOPPING=1")) << notify.all();
  EXPECT_EQ(daemon_.wait(), 0) << daemon_.err();
  EXPECT_EQ(notify.count_line("WATCHDOG=1"), 0u) << notify.all();
}

TEST(ServiceNotify, EnvironmentNamesTheSocketAndAWatchdogForThisProcessOnly) {
  std::map<std::string, std::string> env;
  auto get = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto none = tools::read_notify_env(get, 42);
  EXPECT_TRUE(none.socket.empty());
  EXPECT_FALSE(none.watchdog);

  env["NOTIFY_SOCKET"] = "/run/systemd/notify";
  env["WATCHDOG_USEC"] = "30000000";
  auto both = tools::read_notify_env(get, 42);
  EXPECT_EQ(both.socket, "/run/systemd/notify");
  ASSERT_TRUE(both.watchdog);
  EXPECT_EQ(both.watchdog->count(), 30'000'000);

  env["WATCHDOG_PID"] = "42";
  EXPECT_TRUE(tools::read_notify_env(get, 42).watchdog);
  env["WATCHDOG_PID"] = "43";
  EXPECT_FALSE(tools::read_notify_env(get, 42).watchdog);
  env.erase("WATCHDOG_PID");
  for (const char* bad : {"0", "", "12x", "-5", "99999999999999999999999"}) {
    env["WATCHDOG_USEC"] = bad;
    EXPECT_FALSE(tools::read_notify_env(get, 42).watchdog) << bad;
  }
  env["NOTIFY_SOCKET"] = "@abstract";
  EXPECT_EQ(tools::read_notify_env(get, 42).socket, "@abstract");
  // Neither a path nor an abstract name: not something to send to.
  env["NOTIFY_SOCKET"] = "relative/notify";
  EXPECT_TRUE(tools::read_notify_env(get, 42).socket.empty());
}

TEST(ServiceNotify, KeepaliveOnlyWhenEveryShardTurnedSinceTheLastCheck) {
  tools::LivenessCheck check;
  EXPECT_FALSE(check.all_turned({5, 9}));  // the first look only records
  EXPECT_TRUE(check.all_turned({6, 10}));
  EXPECT_FALSE(check.all_turned({7, 10}));
  EXPECT_EQ(check.stuck(), std::vector<uint32_t>{1});
  EXPECT_TRUE(check.all_turned({8, 11}));
  EXPECT_TRUE(check.stuck().empty());
  EXPECT_FALSE(check.all_turned({8, 11}));
  EXPECT_EQ(check.stuck(), (std::vector<uint32_t>{0, 1}));
  EXPECT_FALSE(check.all_turned({}));
}

// The engine's side of the watchdog: every shard counts its loop
// iterations; a shard stuck in a callback stops counting while the others,
// woken by each look, go on.
TEST(Liveness, AStuckShardStopsCountingWhileTheOthersTurn) {
  // Declared before the engine, which calls the blocking callback.
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  auto open_gate = [&] {
    {
      std::lock_guard lock(mu);
      release = true;
    }
    cv.notify_all();
  };
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start("[engine]\nshards = 2\n" + route_to(sink.port())).ok());
  // Whatever fails below, the shard is let go before the engine stops.
  struct Release {
    std::function<void()> fn;
    ~Release() { fn(); }
  } guard{open_gate};
  uint64_t sub = e.engine->subscribe([&](const EventView&) {
    std::unique_lock lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  Batch b;
  b.sender = "s@example.test";
  b.message = message_of(300);
  b.recipients = {"stuck@one.test"};
  ASSERT_EQ(e.engine->submit(b).accepted, 1u);
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return entered; }));
  }
  std::vector<uint64_t> before = e.engine->loop_iterations();
  ASSERT_EQ(before.size(), 2u);
  std::vector<uint64_t> now;
  ASSERT_TRUE(eventually([&] {
    now = e.engine->loop_iterations();
    size_t moved = 0;
    for (size_t i = 0; i < now.size(); ++i) {
      moved += now[i] > before[i] + 3 ? 1 : 0;
    }
    return moved == 1;
  }));
  size_t still = 0;
  for (size_t i = 0; i < now.size(); ++i) {
    still += now[i] == before[i] ? 1 : 0;
  }
  EXPECT_EQ(still, 1u);
  open_gate();
  EXPECT_TRUE(eventually([&] {
    auto later = e.engine->loop_iterations();
    return later[0] > now[0] && later[1] > now[1];
  }));
  e.engine->unsubscribe(sub);
}

// --- the event file ------------------------------------------------------------

TEST_F(OperationsTest, SighupReopensTheEventFileAndNoEventIsLostOrRepeated) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start_daemon(route_to(sink.port()));
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto first = recipients("first", 200);
  ASSERT_EQ(submit(*client, "first", first).accepted, 200u);
  ASSERT_TRUE(eventually([&] { return lines_in(events_) == 200; })) << lines_in(events_);

  const std::string rotated = events_ + ".1";
  ASSERT_EQ(::rename(events_.c_str(), rotated.c_str()), 0);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] {
    return daemon_.err().find("event file reopened") != std::string::npos;
  })) << daemon_.err();
  EXPECT_EQ(::access(events_.c_str(), F_OK), 0) << "no new event file";

  auto second = recipients("second", 150);
  ASSERT_EQ(submit(*client, "second", second).accepted, 150u);
  ASSERT_TRUE(eventually([&] { return lines_in(events_) == 150; })) << lines_in(events_);

  bool whole_old = false, whole_new = false;
  EXPECT_EQ(recipients_in(rotated, &whole_old),
            std::multiset<std::string>(first.begin(), first.end()));
  EXPECT_EQ(recipients_in(events_, &whole_new),
            std::multiset<std::string>(second.begin(), second.end()));
  EXPECT_TRUE(whole_old);
  EXPECT_TRUE(whole_new);
  EXPECT_TRUE(daemon_.running());
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// --- configuration reload ----------------------------------------------------

// `ringmail-ctl reload`: mail deferred on a dead route goes out on the new
// one without a restart; the same ingest connection keeps working.
TEST_F(OperationsTest, ReloadCommandSendsQueuedMailOverANewRoute) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start_daemon(route_to(free_port()));  // nothing listens there
  const pid_t pid = daemon_.pid();
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  ASSERT_EQ(submit(*client, "r1", recipients("r", 8)).accepted, 8u);
  ASSERT_TRUE(eventually([&] { return lines_in(events_) >= 8; })) << daemon_.err();

  write_config(route_to(sink.port()));
  std::string out;
  ASSERT_EQ(ctl({"reload"}, &out), 0) << out << daemon_.err();
  EXPECT_NE(out.find("\"applied\":[\"routing\"],\"restart_required\":[]"), std::string::npos)
      << out;
  ASSERT_EQ(ctl({"flush", "*"}, &out), 0) << out;
  EXPECT_TRUE(sink.wait_stat("recipients", 8)) << daemon_.err();
  EXPECT_EQ(submit(*client, "r2", recipients("s", 4)).accepted, 4u);
  EXPECT_TRUE(sink.wait_stat("recipients", 12)) << daemon_.err();
  EXPECT_EQ(daemon_.pid(), pid);
  EXPECT_TRUE(daemon_.running());
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// SIGHUP reads the file again. A file that does not load changes nothing:
// ringmail-ctl gets the reason and exit status 1, the log says so, systemd
// hears READY=1 with the reason, and mail keeps the running route.
TEST_F(OperationsTest, SighupReloadsAndABadFileKeepsTheRunningConfiguration) {
  SinkProcess sink, other;
  ASSERT_TRUE(sink.start({})) << sink.error();
  ASSERT_TRUE(other.start({})) << other.error();
  NotifySocket notify(dir_.file("notify.sock"));
  ASSERT_TRUE(notify.ok());
  start_daemon(route_to(sink.port()), {"NOTIFY_SOCKET=" + dir_.file("notify.sock")});
  ASSERT_TRUE(notify.wait_line("READY=1")) << daemon_.err() << notify.all();
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;

  write_config(route_to(other.port()) + "[delivery]\nmax_rcpts_per_txn = 0\n");
  std::string out;
  EXPECT_EQ(ctl({"reload"}, &out), 1) << out;
  EXPECT_NE(out.find("nothing changed"), std::string::npos) << out;
  EXPECT_NE(out.find("delivery.max_rcpts_per_txn"), std::string::npos) << out;
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(notify.wait([&] { return notify.count_line("READY=1") >= 2; })) << notify.all();
  EXPECT_NE(notify.all().find("configuration kept"), std::string::npos) << notify.all();
  EXPECT_NE(daemon_.err().find("configuration reload refused, the running configuration stays"),
            std::string::npos)
      << daemon_.err();
  ASSERT_EQ(submit(*client, "kept", recipients("k", 4)).accepted, 4u);
  EXPECT_TRUE(sink.wait_stat("recipients", 4)) << daemon_.err();

  // Fixed: the next SIGHUP applies it.
  write_config(route_to(other.port()));
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(notify.wait([&] { return notify.count_line("READY=1") >= 3; })) << notify.all();
  EXPECT_NE(notify.all().find("configuration reloaded"), std::string::npos) << notify.all();
  ASSERT_EQ(submit(*client, "moved", recipients("m", 4)).accepted, 4u);
  EXPECT_TRUE(other.wait_stat("recipients", 4)) << daemon_.err();
  EXPECT_EQ(sink.stat("recipients"), 4);
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// A renewed certificate written over the submission listener's files is
// served after a reload, with no change to the configuration; a broken
// one is refused and the previous certificate stays in use.
TEST_F(OperationsTest, RenewedSubmissionCertificateIsServedAfterReload) {
  TestPki pki;
  ASSERT_TRUE(pki.ok()) << pki.log();
  const std::string crt = dir_.file("submission.crt"), key = dir_.file("submission.key");
  auto install = [&](const TestPki::Pair& p) {
    std::filesystem::copy_file(p.cert, crt, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(p.key, key, std::filesystem::copy_options::overwrite_existing);
  };
  install(pki.good());  // CN=mx.test
  const uint16_t port = free_port();
  start_daemon(route_to(free_port()) +
               "[[submission.listeners]]\nlisten = \"127.0.0.1:" + std::to_string(port) +
               "\"\ntls = \"implicit\"\ncert_file = \"" + crt + "\"\nkey_file = \"" + key + "\"\n");
  auto subject = [&] {
    std::string log;
    const std::string o = openssl_path();
    run_shell(dir_.path(),
              "'" + o + "' s_client -connect 127.0.0.1:" + std::to_string(port) +
                  " </dev/null 2>/dev/null | '" + o + "' x509 -noout -subject > subject.txt",
              &log);
    return read_file(dir_.file("subject.txt")).value_or("");
  };
  ASSERT_TRUE(eventually([&] { return subject().find("mx.test") != std::string::npos; }))
      << subject() << daemon_.err();

  install(pki.other_name());  // CN=other.test
  EXPECT_NE(subject().find("mx.test"), std::string::npos) << "not before the reload";
  std::string out;
  ASSERT_EQ(ctl({"reload"}, &out), 0) << out << daemon_.err();
  EXPECT_NE(out.find("\"applied\":[]"), std::string::npos) << out;
  EXPECT_NE(subject().find("other.test"), std::string::npos) << daemon_.err();

  std::ofstream(crt) << "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n";
  EXPECT_EQ(ctl({"reload"}, &out), 1) << out;
  EXPECT_NE(out.find("submission.listeners"), std::string::npos) << out;
  EXPECT_NE(subject().find("other.test"), std::string::npos) << daemon_.err();
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// Reopened while deliveries run: each line lands whole in exactly one of
// the two files, and once `ringmail-ctl reopen-logs` has answered, the old
// file is complete (safe to compress).
TEST_F(OperationsTest, ReopenLogsWhileDeliveringSplitsTheLinesBetweenTheFiles) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  // One recipient per transaction, 100 per second per domain: about 2.5 s.
  start_daemon(route_to(sink.port()) + "[delivery]\nmax_rcpts_per_txn = 1\nmsg_rate = \"100/s\"\n");
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  std::vector<std::string> all;
  for (int b = 0; b < 10; ++b) {
    auto r = recipients("b" + std::to_string(b) + "-", 100);
    ASSERT_EQ(submit(*client, "b" + std::to_string(b), r).accepted, 100u);
    all.insert(all.end(), r.begin(), r.end());
  }
  ASSERT_TRUE(eventually([&] { return lines_in(events_) >= 50; }));
  const std::string rotated = events_ + ".1";
  ASSERT_EQ(::rename(events_.c_str(), rotated.c_str()), 0);
  std::string out;
  ASSERT_EQ(ctl({"reopen-logs"}, &out), 0) << out;
  EXPECT_NE(out.find("\"ok\":true"), std::string::npos) << out;
  const std::string old_text = read_file(rotated).value_or("");

  ASSERT_TRUE(eventually([&] { return lines_in(rotated) + lines_in(events_) >= all.size(); },
                         milliseconds(60'000)))
      << lines_in(rotated) << " + " << lines_in(events_);
  EXPECT_EQ(read_file(rotated).value_or(""), old_text) << "the old file grew after the reply";
  EXPECT_GT(lines_in(events_), 0u) << "the reopen came after the last delivery";
  bool whole_old = false, whole_new = false;
  auto in_old = recipients_in(rotated, &whole_old);
  auto in_new = recipients_in(events_, &whole_new);
  EXPECT_TRUE(whole_old);
  EXPECT_TRUE(whole_new);
  std::multiset<std::string> both = in_old;
  both.insert(in_new.begin(), in_new.end());
  EXPECT_EQ(both, std::multiset<std::string>(all.begin(), all.end()));
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// The shipped logrotate snippet, pointed at this test's files, rotates the
// event file of a running ringmaild with nothing lost or repeated.
TEST_F(OperationsTest, LogrotateSnippetRotatesTheEventFile) {
  const std::string logrotate = "/usr/sbin/logrotate";
  if (!have_program(logrotate)) {
    GTEST_SKIP() << "logrotate is not installed";
  }
  std::string conf = read_file(env_or("RINGMAIL_LOGROTATE", "")).value_or("");
  ASSERT_FALSE(conf.empty()) << "RINGMAIL_LOGROTATE";
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start_daemon(route_to(sink.port()));
  // This test's paths; rotation as the test's user; the reopen without
  // asking systemd whether the unit runs.
  auto replace = [&conf](const std::string& from, const std::string& to) {
    size_t at = conf.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    conf.replace(at, from.size(), to);
  };
  replace("/var/log/ringmail/events.jsonl", events_);
  replace("    su ringmail ringmail\n", "");
  size_t body = conf.find("        if systemctl");
  size_t end = conf.find("    endscript");
  ASSERT_NE(body, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  conf.replace(body, end - body,
               "        " + env_or("RINGMAIL_CTL", "") + " --socket " + ctl_socket_ +
                   " reopen-logs >/dev/null\n");
  std::ofstream(dir_.file("logrotate.conf")) << conf;

  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto first = recipients("first", 100);
  ASSERT_EQ(submit(*client, "first", first).accepted, 100u);
  ASSERT_TRUE(eventually([&] { return lines_in(events_) == 100; })) << lines_in(events_);
  Child rotate;
  ASSERT_TRUE(rotate.start(
      {logrotate, "--force", "--state", dir_.file("logrotate.state"), dir_.file("logrotate.conf")},
      dir_.path(), "logrotate"));
  ASSERT_EQ(rotate.wait(), 0) << rotate.out() << rotate.err();
  auto second = recipients("second", 100);
  ASSERT_EQ(submit(*client, "second", second).accepted, 100u);
  ASSERT_TRUE(eventually([&] { return lines_in(events_) == 100; })) << lines_in(events_);

  // dateext: events.jsonl-YYYYMMDD, not compressed yet (delaycompress).
  std::string rotated;
  for (const auto& f : std::filesystem::directory_iterator(dir_.path())) {
    if (f.path().filename().string().rfind("events.jsonl-", 0) == 0) {
      rotated = f.path().string();
    }
  }
  ASSERT_FALSE(rotated.empty());
  bool whole = false;
  EXPECT_EQ(recipients_in(rotated, &whole), std::multiset<std::string>(first.begin(), first.end()));
  EXPECT_EQ(recipients_in(events_, &whole),
            std::multiset<std::string>(second.begin(), second.end()));
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

// --- ringmail-ctl queue ----------------------------------------------------------

TEST_F(OperationsTest, QueueSummaryShowsDeferredDestinationsAndTotals) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  uint16_t closed = free_port();  // nothing listens: connections are refused
  start_daemon(route_to(sink.port()) + "[routing.domains]\n\"closed.test\" = \"127.0.0.1:" +
               std::to_string(closed) + "\"\n[retry]\nschedule = [\"10m\"]\n");
  auto client = tools::BatchClient::connect(socket_, "test", 10'000);
  ASSERT_TRUE(client.ok()) << client.error().message;
  ASSERT_EQ(
      submit(*client, "q1",
             {"a@closed.test", "b@closed.test", "c@closed.test", "x@open.test", "y@open.test"})
          .accepted,
      5u);
  ASSERT_TRUE(sink.wait_stat("recipients", 2));
  std::string json;
  ASSERT_TRUE(eventually([&] {
    return ctl({"queue", "--json"}, &json) == 0 &&
           json.find("\"domain\":\"closed.test\"") != std::string::npos &&
           json.find("\"deferred\":3,") != std::string::npos;
  })) << json;

  // Machine output: one object per destination with mail, and totals.
  EXPECT_NE(json.find("\"pool\":\"default\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"last_error\":\"451 4.4.1"), std::string::npos) << json;
  EXPECT_NE(json.find("Connection refused"), std::string::npos) << json;
  EXPECT_GE(json_number(json, "oldest_ms"), 0) << json;
  EXPECT_GE(json_number(json, "next_retry_ms"), 1) << json;
  EXPECT_NE(json.find("\"held\":true"), std::string::npos) << json;
  EXPECT_EQ(json.find("open.test"), std::string::npos) << "delivered destinations are idle";
  EXPECT_NE(json.find("\"totals\":{\"destinations\":1,\"queued\":0,\"in_flight\":0,"
                      "\"deferred\":3,"),
            std::string::npos)
      << json;

  // Human output, like postqueue -p: a header, a line per destination and
  // its last deferral, totals.
  std::string text;
  ASSERT_EQ(ctl({"queue"}, &text), 0) << text;
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl == std::string::npos ? text.size() : nl + 1;
  }
  ASSERT_EQ(lines.size(), 4u) << text;
  EXPECT_EQ(lines[0].rfind("Destination", 0), 0u) << text;
  EXPECT_EQ(lines[1].rfind("closed.test ", 0), 0u) << text;
  EXPECT_NE(lines[1].find(" default "), std::string::npos) << text;
  EXPECT_NE(lines[1].find(" 0/"), std::string::npos) << text;  // no connection
  EXPECT_NE(lines[1].find("backoff"), std::string::npos) << text;
  EXPECT_NE(lines[2].find("Connection refused"), std::string::npos) << text;
  EXPECT_NE(lines[2].find("retry in"), std::string::npos) << text;
  EXPECT_EQ(lines[3].rfind("-- 1 destination: 0 queued, 0 in flight, 3 deferred; oldest ", 0), 0u)
      << text;

  // --all lists idle destinations too; a pattern narrows the listing.
  std::string all;
  ASSERT_EQ(ctl({"queue", "--all"}, &all), 0) << all;
  EXPECT_NE(all.find("\nopen.test "), std::string::npos) << all;
  std::string open;
  ASSERT_EQ(ctl({"queue", "open.test"}, &open), 0) << open;
  EXPECT_EQ(open, "Mail queue is empty\n");

  // Paused shows in the state column.
  std::string paused;
  ASSERT_EQ(ctl({"pause", "closed.test"}, &paused), 0) << paused;
  ASSERT_EQ(ctl({"queue", "closed.test"}, &paused), 0) << paused;
  EXPECT_NE(paused.find("paused"), std::string::npos) << paused;
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

TEST(QueueSummary, DurationsAreShortAndExact) {
  EXPECT_EQ(tools::short_duration(0), "0s");
  EXPECT_EQ(tools::short_duration(999), "0s");
  EXPECT_EQ(tools::short_duration(59'000), "59s");
  EXPECT_EQ(tools::short_duration(298'000), "4m58s");
  EXPECT_EQ(tools::short_duration(3'600'000), "1h00m");
  EXPECT_EQ(tools::short_duration(7'500'000), "2h05m");
  EXPECT_EQ(tools::short_duration(3 * 86'400'000 + 4 * 3'600'000), "3d04h");
}

TEST(QueueSummary, MalformedRepliesAreErrorsNotCrashes) {
  for (const char* bad :
       {"", "{", "[]", "{\"ok\":true}", "{\"ok\":true,\"destinations\":{}}",
        "{\"ok\":true,\"destinations\":[1]}", "{\"ok\":true,\"destinations\":[{\"domain\":5}]}",
        "{\"ok\":true,\"destinations\":[]} trailing",
        "{\"ok\":true,\"destinations\":[{\"domain\":\"a\\ud800\"}]}"}) {
    auto r = tools::parse_listing(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  std::string deep(10'000, '[');
  EXPECT_FALSE(tools::parse_listing(deep).ok());
  auto empty = tools::parse_listing("{\"ok\":true,\"command\":\"list\",\"destinations\":[]}");
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->empty());
}

// --- the unit file -------------------------------------------------------------

TEST(UnitFile, SystemdAcceptsIt) {
  const std::string analyze = "/usr/bin/systemd-analyze";
  if (!have_program(analyze)) {
    GTEST_SKIP() << "systemd-analyze is not installed";
  }
  std::string unit = read_file(env_or("RINGMAILD_UNIT", "")).value_or("");
  ASSERT_FALSE(unit.empty()) << "RINGMAILD_UNIT";
  // Point the unit at the binaries of this build (verify checks they exist).
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"/usr/bin/ringmaild", env_or("RINGMAILD", "")},
        {"/usr/bin/ringmail-ctl", env_or("RINGMAIL_CTL", "")}}) {
    for (size_t at = unit.find(from); at != std::string::npos; at = unit.find(from, at)) {
      unit.replace(at, from.size(), to);
      at += to.size();
    }
  }
  TempDir dir;
  std::ofstream(dir.file("ringmaild.service")) << unit;
  Child verify;
  ASSERT_TRUE(verify.start({analyze, "verify", "--man=no", dir.file("ringmaild.service")},
                           dir.path(), "verify"));
  EXPECT_EQ(verify.wait(), 0) << verify.out() << verify.err();
  // Warnings are printed but do not fail verify: there must be none.
  EXPECT_EQ(verify.err(), "") << verify.err();
}

}  // namespace
}  // namespace ringmail::testing
