/// harness.h — helpers for end-to-end tests: child processes (ringmaild,
/// ringmail-inject, dnsmasq, Postfix's smtp-sink), an in-process Engine
/// with an event collector, and free loopback ports.
///
/// Every wait polls a condition against a deadline (see eventually() in
/// sink_test_util.h); nothing sleeps in place of synchronisation.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <ringmail/ringmail.hpp>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/testing.h"
#include "proto/dns_answer.h"
#include "tests/e2e/sink_test_util.h"

namespace ringmail::testing {

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

inline bool have_program(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

/// A child process whose stdout and stderr go to files in a directory.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
  }

  /// `env`: "NAME=value" entries added to (or replacing in) the test's
  /// environment.
  bool start(const std::vector<std::string>& argv, const std::string& dir, const std::string& tag,
             const std::string& cwd = "", const std::vector<std::string>& env = {}) {
    out_ = dir + "/" + tag + ".out";
    err_ = dir + "/" + tag + ".err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    if (!cwd.empty()) {
      posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    }
    std::vector<std::string> args = argv;
    std::vector<char*> cargv;
    for (auto& a : args) {
      cargv.push_back(a.data());
    }
    cargv.push_back(nullptr);
    std::vector<std::string> vars = env;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view var(*e);
      bool replaced = false;
      for (const auto& v : env) {
        replaced = replaced || var.substr(0, var.find('=') + 1) == v.substr(0, v.find('=') + 1);
      }
      if (!replaced) {
        vars.emplace_back(var);
      }
    }
    std::vector<char*> cenv;
    for (auto& v : vars) {
      cenv.push_back(v.data());
    }
    cenv.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  /// Waits for the child to exit (up to `timeout`); returns its exit code,
  /// or -1 when it did not exit normally in time.
  int wait(milliseconds timeout = milliseconds(60'000)) {
    if (pid_ > 0 && !eventually([&] { return !running(); }, timeout)) {
      return -1;
    }
    return exit_code_;
  }

  int terminate(int sig = SIGTERM, milliseconds timeout = milliseconds(30'000)) {
    if (pid_ <= 0) {
      return -1;
    }
    ::kill(pid_, sig);
    return wait(timeout);
  }

  /// False once the child has exited; the exit is reaped and remembered.
  bool running() {
    if (pid_ <= 0) {
      return false;
    }
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) != pid_) {
      return true;
    }
    pid_ = -1;
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return false;
  }
  std::string out() const { return read_file(out_).value_or(""); }
  std::string err() const { return read_file(err_).value_or(""); }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string out_, err_;
};

/// A TCP or UDP port on 127.0.0.1 that was free a moment ago.
inline uint16_t free_port(int type = SOCK_STREAM) {
  int fd = ::socket(AF_INET, type, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

/// Collects engine events per recipient; thread-safe (shards call it).
class EventCollector {
 public:
  struct Ev {
    EventType type;
    uint16_t code;
    std::string enhanced;
    std::string response;
    std::string peer;
    std::string mx;
    uint32_t attempt;
    std::string json;
  };

  void add(const EventView& e) {
    std::lock_guard lock(mu_);
    by_rcpt_[std::string(e.recipient)].push_back(
        Ev{e.type, e.code, std::string(e.enhanced_code), std::string(e.response),
           std::string(e.peer), std::string(e.mx), e.attempt, std::string(e.json)});
    // Destination events (backoff, resume) name no recipient: not finals.
    if (e.type == EventType::kDeferred) {
      ++deferred_;
    } else if (e.type == EventType::kDelivered || e.type == EventType::kBounced ||
               e.type == EventType::kDropped) {
      ++finals_;
    }
    cv_.notify_all();
  }

  /// Waits until at least `n` final (delivered or bounced) events arrived.
  bool wait_finals(size_t n, milliseconds timeout = milliseconds(30'000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return finals_ >= n; });
  }
  bool wait_deferred(size_t n, milliseconds timeout = milliseconds(30'000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return deferred_ >= n; });
  }
  std::vector<Ev> events(const std::string& rcpt) {
    std::lock_guard lock(mu_);
    auto it = by_rcpt_.find(rcpt);
    return it == by_rcpt_.end() ? std::vector<Ev>{} : it->second;
  }
  std::map<std::string, std::vector<Ev>> all() {
    std::lock_guard lock(mu_);
    return by_rcpt_;
  }
  size_t finals() {
    std::lock_guard lock(mu_);
    return finals_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<Ev>> by_rcpt_;
  size_t finals_ = 0;
  size_t deferred_ = 0;
};

/// True when a DNS server on 127.0.0.1:`port` answers an A query for
/// `name` within 100 ms (any answer: the server is up).
inline bool dns_server_answers(uint16_t port, const std::string& name) {
  std::string q;
  if (!proto::dns::build_query(q, 0x4242, name, proto::dns::kTypeA).ok()) {
    return false;
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  if (::sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a) > 0) {
    pollfd p{fd, POLLIN, 0};
    char buf[512];
    ok = ::poll(&p, 1, 100) == 1 && ::recv(fd, buf, sizeof buf, 0) >= 12;
  }
  ::close(fd);
  return ok;
}

/// Waits (bounded, 30 s) until the operator listing ("list") contains
/// `needle`. A deferred event reaches subscribers before its transaction
/// ends and the retry is scheduled, so a test that moves a manual clock
/// waits for the queue state first.
inline bool wait_listing(Engine& e, const std::string& needle) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (e.control("list").find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

/// Starts an in-process Engine from TOML (no socket unless the TOML sets
/// one), on `clock` when given (engine/testing.h), and subscribes a
/// collector.
struct EmbeddedEngine {
  // The collector outlives the engine: shutdown may still emit events.
  EventCollector events;
  std::unique_ptr<Engine> engine;

  /// `toml` over the tests' base: no sockets, no event file, spool off
  /// unless `toml` has a [spool].
  static std::string full_toml(const std::string& toml) {
    std::string base = "[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n";
    if (toml.find("[spool]") == std::string::npos) {
      base += "[spool]\nmode = \"off\"\n";  // tests of durability say so explicitly
    }
    return merge(base, toml);
  }

  /// Engine::reload with `toml` over the same base as start().
  Expected<ReloadResult> reload(const std::string& toml) {
    auto c = Config::parse(full_toml(toml), "test.toml");
    if (!c.ok()) {
      return c.error();
    }
    return engine->reload(std::move(*c));
  }

  Result<void> start(const std::string& toml, const engine::Clock* clock = nullptr) {
    auto cfg = engine::parse_config(full_toml(toml), "test.toml");
    if (!cfg.ok()) {
      return std::move(cfg).take_error();
    }
    auto e = engine::start_for_test(std::move(*cfg), clock);
    if (!e.ok()) {
      return make_error(errc_of(e.error().kind), e.error().message);
    }
    engine = std::move(*e);
    engine->subscribe([this](const EventView& v) { events.add(v); });
    return ok_result();
  }

  static Errc errc_of(FailureKind kind) {
    switch (kind) {
      case FailureKind::kConfig:
        return Errc::kConfig;
      case FailureKind::kUnsupported:
        return Errc::kUnsupported;
      case FailureKind::kBusy:
        return Errc::kBusy;
      case FailureKind::kInternal:
        return Errc::kInternal;
      case FailureKind::kSystem:
        break;
    }
    return Errc::kIo;
  }

  /// Later tables of the same name in `over` win: TOML forbids repeating a
  /// table, so callers pass sections the base does not have, or override
  /// ingest/events explicitly themselves.
  static std::string merge(const std::string& base, const std::string& over) {
    if (over.find("[ingest]") != std::string::npos || over.find("[events]") != std::string::npos) {
      return over;
    }
    return base + over;
  }
};

inline std::string message_of(size_t size, const std::string& subject = "test") {
  std::string m = "From: <sender@example.test>\r\nSubject: " + subject + "\r\n\r\n";
  while (m.size() + 40 < size) {
    m += "Lorem ipsum dolor sit amet, consectetur.\r\n";
  }
  return m;
}

}  // namespace ringmail::testing
