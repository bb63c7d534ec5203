// ringmail-sink: an io_uring SMTP sink for tests and benchmarks.
//
// main() parses the options, binds every listening socket (so the ports are
// known before any thread runs), starts one Worker per --threads, prints
// "listening ADDR:PORT" lines, then only waits for SIGTERM/SIGINT with
// sigtimedwait() — the signals are blocked in every thread, so no handler
// ever runs — rewriting the stats file every --stats-interval-ms when the
// counts changed. On a signal it stops the workers, prints the stats line
// and exits 0. See sink_options.cc for the command line and sink_policy.h
// for the magic envelope local parts.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "tools/sink_options.h"
#include "tools/sink_worker.h"

namespace ringmail::tools {
namespace {

// Pending connections per listening socket (the kernel caps it at somaxconn).
constexpr int kListenBacklog = 4096;

Result<int> open_listener(const ListenAddress& a, uint16_t port, bool reuse_port) {
  sockaddr_storage ss = a.addr;
  if (a.ipv6) {
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return make_error(Errc::kIo, std::string("socket: ") + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) {
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  }
  if (a.ipv6) {
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), a.addr_len) != 0 ||
      ::listen(fd, kListenBacklog) != 0) {
    int err = errno;
    ::close(fd);
    return make_error(Errc::kIo,
                      "bind " + a.host + ":" + std::to_string(port) + ": " + std::strerror(err));
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return 0;
  }
  if (ss.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// Writes `content` to `path` through a temporary file and rename(2), so a
// reader sees the old file or the new one, never a partial one.
bool write_atomically(const std::string& path, std::string_view content) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "we");
  if (f == nullptr) {
    return false;
  }
  bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size();
  ok = (std::fclose(f) == 0) && ok;
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
  }
  if (!ok) {
    std::remove(tmp.c_str());
  }
  return ok;
}

StatsSnapshot collect(const std::vector<std::unique_ptr<Worker>>& workers) {
  StatsSnapshot s;
  int64_t first = 0;
  int64_t last = 0;
  for (const auto& w : workers) {
    const WorkerStats& st = w->stats();
    // messages first (acquire): the recipients read after are at least as new.
    s.messages += st.messages.load(std::memory_order_acquire);
    s.recipients += st.recipients.load(std::memory_order_relaxed);
    s.connections += st.connections.load(std::memory_order_relaxed);
    s.deferred += st.deferred.load(std::memory_order_relaxed);
    s.rejected += st.rejected.load(std::memory_order_relaxed);
    s.dropped += st.dropped.load(std::memory_order_relaxed);
    s.rcpt_refused += st.rcpt_refused.load(std::memory_order_relaxed);
    s.bytes += st.bytes.load(std::memory_order_relaxed);
    int64_t f = st.first_connection_ns.load(std::memory_order_relaxed);
    int64_t l = st.last_message_ns.load(std::memory_order_relaxed);
    if (f != 0 && (first == 0 || f < first)) {
      first = f;
    }
    last = std::max(last, l);
  }
  if (first != 0 && last > first) {
    s.elapsed_s = static_cast<double>(last - first) / 1e9;
  }
  return s;
}

void write_stats_file(const SinkOptions& o, const StatsSnapshot& s) {
  if (o.stats_file.empty()) {
    return;
  }
  std::string line;
  s.append_json(line);
  line.push_back('\n');
  if (!write_atomically(o.stats_file, line)) {
    std::fprintf(stderr, "ringmail-sink: cannot write %s: %s\n", o.stats_file.c_str(),
                 std::strerror(errno));
  }
}

// Raises the soft descriptor limit to the hard one: 10,000 idle
// connections must not fail with EMFILE at the default 1024.
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Binds every listener for every worker: the first socket of an address
// picks the port (0 = ephemeral), the others join it with SO_REUSEPORT.
Result<std::vector<std::vector<int>>> bind_all(SinkOptions& o) {
  std::vector<std::vector<int>> fds(o.threads);
  bool reuse_port = o.threads > 1;
  for (ListenAddress& a : o.listen) {
    for (unsigned t = 0; t < o.threads; ++t) {
      auto fd = open_listener(a, a.port, reuse_port);
      if (!fd.ok()) {
        for (auto& v : fds) {
          for (int f : v) {
            ::close(f);
          }
        }
        return std::move(fd).take_error();
      }
      if (t == 0) {
        a.port = bound_port(*fd);
      }
      fds[t].push_back(*fd);
    }
  }
  return fds;
}

using Workers = std::vector<std::unique_ptr<Worker>>;

// Starts one thread per worker and waits until each has set up its ring.
// Returns the first set-up error; threads whose set-up failed have returned.
std::optional<Error> start_workers(const Workers& workers, std::vector<std::thread>* threads) {
  std::mutex mu;
  std::condition_variable cv;
  size_t started = 0;
  std::optional<Error> error;
  for (const auto& w : workers) {
    threads->emplace_back([&, worker = w.get()] {
      Result<void> r = worker->init();
      {
        std::lock_guard<std::mutex> lock(mu);
        ++started;
        if (!r.ok() && !error) {
          error = r.error();
        }
        cv.notify_one();  // under the lock: `cv` lives on main()'s stack
      }
      if (r.ok()) {
        worker->run();
      }
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return started == workers.size(); });
  return error;
}

// Port file and first stats file, then the "listening" lines: a reader of
// those lines may look at the files next.
void announce(const SinkOptions& o, const StatsSnapshot& stats) {
  if (!o.port_file.empty() &&
      !write_atomically(o.port_file, std::to_string(o.listen[0].port) + "\n")) {
    std::fprintf(stderr, "ringmail-sink: cannot write %s\n", o.port_file.c_str());
  }
  write_stats_file(o, stats);
  for (const ListenAddress& a : o.listen) {
    std::printf(a.ipv6 ? "listening [%s]:%u\n" : "listening %s:%u\n", a.host.c_str(),
                static_cast<unsigned>(a.port));
  }
  std::fflush(stdout);
}

// Rewrites the stats file every interval when it changed, until SIGTERM or
// SIGINT (blocked in every thread, so no handler ever runs).
void serve_until_signal(const sigset_t& signals, const SinkOptions& o, const Workers& workers) {
  StatsSnapshot last = collect(workers);
  announce(o, last);
  timespec interval{};
  interval.tv_sec = o.stats_interval_ms / 1000;
  interval.tv_nsec = static_cast<long>(o.stats_interval_ms % 1000) * 1'000'000;
  for (;;) {
    int sig = sigtimedwait(&signals, nullptr, &interval);
    if (sig == SIGTERM || sig == SIGINT) {
      return;
    }
    StatsSnapshot now = collect(workers);
    if (!(now == last)) {
      write_stats_file(o, now);
      last = now;
    }
  }
}

int run_sink(SinkOptions options) {
  raise_fd_limit();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // Blocked here, before any thread starts, so every worker inherits it.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto fds = bind_all(options);
  if (!fds.ok()) {
    std::fprintf(stderr, "ringmail-sink: %s\n", fds.error().message.c_str());
    return 1;
  }
  SinkShared shared(options);
  if (!options.rcpt_log.empty()) {
    shared.rcpt_log_fd =
        ::open(options.rcpt_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (shared.rcpt_log_fd < 0) {
      std::fprintf(stderr, "ringmail-sink: --rcpt-log %s: %s\n", options.rcpt_log.c_str(),
                   std::strerror(errno));
      return 1;
    }
  }
  Workers workers;
  for (unsigned t = 0; t < options.threads; ++t) {
    workers.push_back(std::make_unique<Worker>(shared, t, std::move((*fds)[t])));
  }
  std::vector<std::thread> threads;
  std::optional<Error> error = start_workers(workers, &threads);
  if (error) {
    std::fprintf(stderr, "ringmail-sink: %s\n", error->message.c_str());
  } else {
    serve_until_signal(signals, options, workers);
  }
  for (auto& w : workers) {
    w->request_stop();
  }
  for (auto& t : threads) {
    t.join();
  }
  if (error) {
    return 1;
  }
  StatsSnapshot final_stats = collect(workers);
  std::string line;
  final_stats.append_json(line);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  write_stats_file(options, final_stats);
  return 0;
}

}  // namespace
}  // namespace ringmail::tools

int main(int argc, char** argv) {
  std::span<const char* const> args(const_cast<const char* const*>(argv) + 1,
                                    static_cast<size_t>(argc > 0 ? argc - 1 : 0));
  if (ringmail::tools::wants_help(args)) {
    std::fputs(ringmail::tools::kSinkUsage, stdout);
    return 0;
  }
  auto options = ringmail::tools::parse_sink_options(args);
  if (!options.ok()) {
    std::fprintf(stderr, "ringmail-sink: %s\n", options.error().message.c_str());
    return 2;
  }
  return ringmail::tools::run_sink(std::move(*options));
}
