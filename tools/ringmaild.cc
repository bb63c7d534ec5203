// ringmaild — the ringmail delivery daemon: a thin main over the public
// embedding API (include/ringmail/ringmail.hpp).
//
//   ringmaild [--config FILE] [--check-config] [--print-default-config]
//
// Without --config the embedded default configuration is used (see
// docs/configuration.md). Signals (docs/operations.md):
//   SIGTERM, SIGINT  stop cleanly: ingest stops, queued mail gets
//                    engine.shutdown_grace to finish, then exit 0;
//   SIGHUP           reload the configuration file (what can change without
//                    a restart, docs/operations.md) and reopen the event
//                    file (log rotation).
// Under a service manager ($NOTIFY_SOCKET, systemd Type=notify; see
// tools/service_notify.h): READY=1 once the sockets accept batches,
// STATUS= lines with the queue, RELOADING=1 .. READY=1 around SIGHUP,
// STOPPING=1 at shutdown, and with $WATCHDOG_USEC a WATCHDOG=1 keepalive
// only while every shard's loop keeps turning.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <ringmail/ringmail.hpp>

#include "engine/log.h"
#include "tools/service_notify.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ringmaild [--config FILE] [--check-config] [--print-default-config]\n"
               "  --config FILE           TOML configuration (default: built-in, see\n"
               "                          docs/configuration.md)\n"
               "  --check-config          validate the configuration and exit\n"
               "  --print-default-config  print the built-in configuration and exit\n");
}

/// How often STATUS= is refreshed when the queue changed.
constexpr std::chrono::seconds kStatusInterval{5};

/// The daemon once the engine runs: signals, the service manager and the
/// watchdog. Main thread only.
class Daemon {
 public:
  Daemon(ringmail::Engine& engine, const ringmail::tools::NotifyEnv& env, bool from_file)
      : engine_(engine), notifier_(env.socket), from_file_(from_file) {
    if (notifier_.enabled() && env.watchdog) {
      // Four looks per period: a keepalive goes out at least every half
      // period while the shards turn, and one slow iteration is forgiven.
      check_every_ =
          std::max<SteadyClock::duration>(std::chrono::milliseconds(1), *env.watchdog / 4);
      RM_LOG_INFO(
          "watchdog: keepalive while every shard turns (period %lldms)",
          static_cast<long long>(
              std::chrono::duration_cast<std::chrono::milliseconds>(*env.watchdog).count()));
    }
  }

  void ready(const std::string& what) {
    liveness_.all_turned(engine_.loop_iterations());  // the baseline
    auto now = SteadyClock::now();
    next_check_ = now + check_every_;
    next_status_ = now + kStatusInterval;
    last_status_ = queue_status();
    notify("READY=1\nSTATUS=" + what + "; " + last_status_);
  }

  /// Takes signals until one asks to stop; returns it.
  int run(const sigset_t& set) {
    for (;;) {
      int sig = wait_signal(set);
      if (sig < 0) {
        tick();
        continue;
      }
      if (sig == SIGHUP) {
        hangup();
        continue;
      }
      return sig;
    }
  }

  void stopping(const std::string& what) {
    stopped_ = true;
    notify("STOPPING=1\nSTATUS=" + what);
  }

 private:
  /// A signal of `set`, or -1 when it is time for tick().
  int wait_signal(const sigset_t& set) {
    if (!notifier_.enabled()) {
      int sig = 0;
      return sigwait(&set, &sig) == 0 ? sig : -1;
    }
    auto next = next_status_;
    if (check_every_.count() > 0) {
      next = std::min(next, next_check_);
    }
    auto left =
        std::max<SteadyClock::duration>(SteadyClock::duration::zero(), next - SteadyClock::now());
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    int sig = sigtimedwait(&set, nullptr, &ts);
    return sig > 0 ? sig : -1;  // EAGAIN: the timeout; EINTR: look again
  }

  /// SIGHUP: everything that can change without a restart. The
  /// configuration file is read again (with the built-in default there is
  /// nothing to read) and the event file reopened (log rotation). A file
  /// that does not load leaves the running configuration as it was; the
  /// engine logs why.
  void hangup() {
    RM_LOG_INFO("SIGHUP: reloading the configuration and reopening the event file");
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) +
           "\nSTATUS=reloading");
    std::string status;
    if (from_file_) {
      auto c = engine_.reload();
      status = c.ok() ? "configuration reloaded" : "configuration kept: " + c.error().message;
    } else {
      status = "built-in configuration, nothing to reload";
    }
    auto r = engine_.reopen_event_file();
    status += r.ok() ? ", event file reopened" : ", event file not reopened: " + r.error().message;
    last_status_ = queue_status();
    notify("READY=1\nSTATUS=" + status + "; " + last_status_);
  }

  void tick() {
    auto now = SteadyClock::now();
    if (check_every_.count() > 0 && now >= next_check_) {
      next_check_ = now + check_every_;
      if (liveness_.all_turned(engine_.loop_iterations())) {
        notify("WATCHDOG=1");
        stuck_logged_ = false;
      } else if (!liveness_.stuck().empty() && !stuck_logged_) {
        stuck_logged_ = true;
        RM_LOG_WARN("watchdog: shard %u has not turned since the last look; no keepalive",
                    liveness_.stuck().front());
      }
    }
    if (now >= next_status_) {
      next_status_ = now + kStatusInterval;
      std::string status = queue_status();
      if (status != last_status_) {
        last_status_ = status;
        notify("STATUS=" + status);
      }
    }
  }

  /// The queue in a few words.
  std::string queue_status() const {
    auto st = engine_.stats();
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "%llu recipients queued; %llu delivered, %llu deferred, %llu "
                  "bounced since start",
                  static_cast<unsigned long long>(st.unfinished),
                  static_cast<unsigned long long>(st.delivered),
                  static_cast<unsigned long long>(st.deferred),
                  static_cast<unsigned long long>(st.bounced));
    return buf;
  }

  void notify(const std::string& state) {
    if (!notifier_.enabled() || (stopped_ && state.rfind("STOPPING=1", 0) != 0)) {
      return;
    }
    auto r = notifier_.send(state);
    if (!r.ok() && !notify_error_logged_) {
      notify_error_logged_ = true;
      RM_LOG_WARN("service manager notification failed: %s", r.error().message.c_str());
    }
  }

  static uint64_t monotonic_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
  }

  ringmail::Engine& engine_;
  ringmail::tools::ServiceNotifier notifier_;
  bool from_file_ = false;  // --config given: SIGHUP reads it again
  ringmail::tools::LivenessCheck liveness_;
  SteadyClock::duration check_every_{0};  // zero: no watchdog
  SteadyClock::time_point next_check_{};
  SteadyClock::time_point next_status_{};
  std::string last_status_;
  bool stuck_logged_ = false;
  bool notify_error_logged_ = false;
  bool stopped_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--check-config") {
      check_only = true;
    } else if (a == "--print-default-config") {
      auto d = ringmail::Config::default_toml();
      std::fwrite(d.data(), 1, d.size(), stdout);
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "ringmaild: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  auto config = config_path.empty() ? ringmail::Config::parse("", "<default>")
                                    : ringmail::Config::load(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "ringmaild: configuration error: %s\n", config.error().message.c_str());
    return 1;
  }
  if (check_only) {
    std::printf("configuration ok\n");
    return 0;
  }

  // Signals are taken synchronously by this thread; every engine thread
  // inherits the blocked mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const auto env = ringmail::tools::read_notify_env(
      [](const char* name) -> const char* { return std::getenv(name); }, ::getpid());
  std::string socket_path = config->ingest_socket();
  std::string route = config->default_route();
  auto grace = config->shutdown_grace();
  auto engine = ringmail::Engine::start(std::move(*config));
  if (!engine.ok()) {
    std::fprintf(stderr, "ringmaild: cannot start: %s\n", engine.error().message.c_str());
    ringmail::tools::ServiceNotifier failed(env.socket);
    (void)failed.send("STATUS=cannot start: " + engine.error().message);
    return 1;
  }
#ifdef RINGMAIL_MIMALLOC
  const char* allocator = "mimalloc";
#else
  const char* allocator = "system";
#endif
  RM_LOG_INFO("ringmaild started: pid %d, socket %s, default route %s, allocator %s",
              static_cast<int>(getpid()), socket_path.empty() ? "(none)" : socket_path.c_str(),
              route.c_str(), allocator);
  Daemon daemon(**engine, env, !config_path.empty());
  daemon.ready("accepting batches on " + (socket_path.empty() ? "(no socket)" : socket_path) +
               ", " + std::to_string((*engine)->loop_iterations().size()) + " shards");
  int sig = daemon.run(set);
  RM_LOG_INFO("signal %d: stopping (up to %lldms for queued mail)", sig,
              static_cast<long long>(grace.count()));
  daemon.stopping("stopping: " + std::to_string((*engine)->stats().unfinished) +
                  " recipients queued, up to " + std::to_string(grace.count()) + "ms for them");
  (*engine)->shutdown(grace);
  auto st = (*engine)->stats();
  RM_LOG_INFO(
      "stopped: delivered %llu, deferred %llu, bounced %llu, still queued %llu",
      static_cast<unsigned long long>(st.delivered), static_cast<unsigned long long>(st.deferred),
      static_cast<unsigned long long>(st.bounced), static_cast<unsigned long long>(st.unfinished));
  return 0;
}
