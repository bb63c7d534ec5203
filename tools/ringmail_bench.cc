// ringmail-bench — end-to-end delivery benchmark on loopback.
//
// Starts ringmail-sink, ringmaild (with a generated configuration) and
// ringmail-inject, sends N messages and prints messages/s injected and
// delivered, latency percentiles, CPU seconds and peak RSS of the daemon,
// then one JSON summary line. Optionally measures a peer in the same run:
// Postfix's smtp-source blasting the same load into a fresh ringmail-sink
// (--peer smtp-source). With --mx-domains N, recipients are spread over N
// domains, each with its own MX host served by dnsmasq on loopback.
//
// Every process it starts listens on or talks to 127.0.0.0/8 only, and is
// stopped at the end. Bounded by --count and --timeout.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tools/cli_number.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  uint64_t count = 100'000;
  size_t size = 2048;
  uint32_t batch = 1;
  uint32_t domains = 16;
  uint32_t mx_domains = 0;
  uint32_t shards = 0;
  uint32_t sink_threads = 1;
  uint32_t conns = 20;
  uint32_t rcpts_per_txn = 100;
  uint32_t pipelined = 4;
  bool events_file = true;
  bool chunking = true;
  std::string peer;
  std::string extra_config;
  std::vector<std::string> inject_args;  // passed to ringmail-inject as they are
  double timeout_s = 600;
  std::string tag;
  std::string spool;  // "" = the daemon's default (sync)
  bool hold = false;
  bool keep = false;
};

std::string self_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) {
    return ".";
  }
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double json_num(const std::string& json, const std::string& key) {
  std::string needle = "\"" + key + "\":";
  size_t at = json.find(needle);
  if (at == std::string::npos) {
    return -1;
  }
  return std::strtod(json.c_str() + at + needle.size(), nullptr);
}

struct Proc {
  pid_t pid = -1;
  std::string out, err;

  bool start(const std::vector<std::string>& argv, const std::string& dir, const std::string& tag,
             const std::string& cwd = "") {
    out = dir + "/" + tag + ".out";
    err = dir + "/" + tag + ".err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!cwd.empty()) {
      posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    }
    std::vector<std::string> a = argv;
    std::vector<char*> c;
    for (auto& s : a) {
      c.push_back(s.data());
    }
    c.push_back(nullptr);
    int rc = posix_spawn(&pid, a[0].c_str(), &fa, nullptr, c.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      std::fprintf(stderr, "ringmail-bench: cannot start %s: %s\n", a[0].c_str(), strerror(rc));
      pid = -1;
      return false;
    }
    return true;
  }
  /// Exit code, or -1 on timeout/signal.
  int wait(double timeout_s) {
    auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(pid, &st, WNOHANG);
      if (r == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      if (Clock::now() > deadline) {
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  int stop(int sig = SIGTERM) {
    if (pid <= 0) {
      return -1;
    }
    ::kill(pid, sig);
    int rc = wait(30);
    if (rc == -1 && pid > 0) {
      ::kill(pid, SIGKILL);
      wait(5);
    }
    return rc;
  }
  ~Proc() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st;
      ::waitpid(pid, &st, 0);
    }
  }
};

/// utime+stime of a process in seconds (live processes only).
double cpu_seconds(pid_t pid) {
  std::string s = slurp("/proc/" + std::to_string(pid) + "/stat");
  size_t p = s.rfind(')');
  if (p == std::string::npos) {
    return 0;
  }
  std::istringstream is(s.substr(p + 2));
  std::string field;
  double ticks = 0;
  for (int i = 0; i < 13 && is >> field; ++i) {
    if (i == 11 || i == 12) {
      ticks += std::stod(field);
    }
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double peak_rss_mb(pid_t pid) {
  std::string s = slurp("/proc/" + std::to_string(pid) + "/status");
  size_t p = s.find("VmHWM:");
  if (p == std::string::npos) {
    return 0;
  }
  return std::strtod(s.c_str() + p + 6, nullptr) / 1024.0;
}

bool wait_for(const std::function<bool()>& cond, double timeout_s) {
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (!cond()) {
    if (Clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

/// Starts ringmail-sink on `listens` and returns the bound port.
uint16_t start_sink(Proc& p, const std::string& bin, const std::string& dir, const Options& o,
                    const std::vector<std::string>& listens, const std::string& tag) {
  std::vector<std::string> argv = {bin + "/ringmail-sink", "--threads",
                                   std::to_string(o.sink_threads), "--stats-file",
                                   dir + "/" + tag + ".json"};
  for (const auto& l : listens) {
    argv.push_back("--listen");
    argv.push_back(l);
  }
  if (!p.start(argv, dir, tag)) {
    return 0;
  }
  uint16_t port = 0;
  wait_for(
      [&] {
        std::string out = slurp(p.out);
        size_t at = out.find("listening ");
        if (at == std::string::npos || out.find('\n', at) == std::string::npos) {
          return false;
        }
        std::string line = out.substr(at, out.find('\n', at) - at);
        port = static_cast<uint16_t>(std::atoi(line.substr(line.rfind(':') + 1).c_str()));
        return true;
      },
      10);
  return port;
}

/// The sink's final stats line (printed on SIGTERM).
std::string stop_sink(Proc& p) {
  p.stop();
  std::string out = slurp(p.out);
  size_t at = out.rfind("{");
  return at == std::string::npos ? "{}" : out.substr(at);
}

double rss_mb(pid_t pid) {
  std::string s = slurp("/proc/" + std::to_string(pid) + "/status");
  size_t p = s.find("VmRSS:");
  if (p == std::string::npos) {
    return 0;
  }
  return std::strtod(s.c_str() + p + 6, nullptr) / 1024.0;
}

/// The ringmail-inject command line for the load `o` describes; `wait`:
/// until every recipient is final (else: until every batch is acknowledged).
std::vector<std::string> inject_argv(const Options& o, const std::string& bin,
                                     const std::string& dir, bool wait) {
  std::vector<std::string> a = {bin + "/ringmail-inject",
                                "--socket",
                                dir + "/ringmail.sock",
                                "--count",
                                std::to_string(o.count),
                                "--size",
                                std::to_string(o.size),
                                "--batch",
                                std::to_string(o.batch),
                                "--json",
                                "--quiet",
                                "--timeout",
                                std::to_string(static_cast<int>(o.timeout_s))};
  if (wait) {
    a.push_back("--wait");
  }
  if (o.mx_domains > 0) {
    a.insert(a.end(), {"--domains", std::to_string(o.mx_domains), "--domain", "bench.test"});
  } else {
    a.insert(a.end(), {"--domains", std::to_string(o.domains)});
  }
  a.insert(a.end(), o.inject_args.begin(), o.inject_args.end());
  return a;
}

/// Runs ringmail-ctl and returns its reply line ("" on failure).
std::string ctl(const std::string& bin, const std::string& dir, const std::string& command) {
  Proc p;
  std::vector<std::string> argv = {bin + "/ringmail-ctl", "--socket", dir + "/ringmail.sock"};
  std::istringstream words(command);
  for (std::string w; words >> w;) {
    argv.push_back(w);
  }
  if (!p.start(argv, dir, "ctl") || p.wait(60) < 0) {
    return "";
  }
  return slurp(p.out);
}

uint64_t dir_bytes(const std::string& path) {
  std::string cmd = "du -sb '" + path + "' 2>/dev/null";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) {
    return 0;
  }
  unsigned long long n = 0;
  if (std::fscanf(f, "%llu", &n) != 1) {
    n = 0;
  }
  ::pclose(f);
  return n;
}

/// --hold: memory per queued recipient, then (with a spool) crash recovery
/// time and the drain rate of the recovered queue.
int run_hold(const Options& o, const std::string& bin, const std::string& dir,
             const std::string& cfg_path, Proc& daemon, Proc& sink) {
  const double rcpts = static_cast<double>(o.count) * o.batch;
  if (ctl(bin, dir, "pause *").find("\"ok\":true") == std::string::npos) {
    std::fprintf(stderr, "ringmail-bench: could not pause destinations\n");
    return 1;
  }
  double rss0 = rss_mb(daemon.pid);
  Proc inject;
  std::vector<std::string> iargv = inject_argv(o, bin, dir, /*wait=*/false);
  auto t0 = Clock::now();
  inject.start(iargv, dir, "inject");
  int irc = inject.wait(o.timeout_s + 30);
  double accept_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string stats = ctl(bin, dir, "stats");
  double queued = json_num(stats, "unfinished");
  double rss1 = rss_mb(daemon.pid);
  double per_rcpt = queued > 0 ? (rss1 - rss0) * 1024.0 * 1024.0 / queued : 0;
  std::printf("ringmail-bench --hold: %llu batches x %u recipients, %zu-byte body, spool %s\n",
              static_cast<unsigned long long>(o.count), o.batch, o.size,
              o.spool.empty() ? "default (sync)" : o.spool.c_str());
  std::printf("  accepted   %.0f recipients in %.2f s (%.0f recipients/s), inject exit %d\n",
              queued, accept_s, accept_s > 0 ? queued / accept_s : 0, irc);
  std::printf("  memory     RSS %.1f MB before, %.1f MB queued: %.0f bytes per queued recipient\n",
              rss0, rss1, per_rcpt);
  bool ok = irc == 0 && queued == rcpts;
  double spool_bytes = 0, recover_wall = 0, recover_log_ms = -1, drain_s = 0, rss2 = 0;
  std::string recovered_line;
  if (ok && o.spool != "off") {
    spool_bytes = static_cast<double>(dir_bytes(dir + "/spool"));
    std::printf("  spool      %.1f MB on disk (%.0f bytes per recipient)\n", spool_bytes / 1048576,
                spool_bytes / rcpts);
    daemon.stop(SIGKILL);
    ::unlink((dir + "/ringmail.sock").c_str());
    double sink0 = json_num(slurp(dir + "/sink.json"), "recipients");
    auto r0 = Clock::now();
    if (!daemon.start({bin + "/ringmaild", "--config", cfg_path}, dir, "ringmaild2", dir)) {
      return 1;
    }
    // The socket exists before recovery ends; the "started" line comes
    // after every shard has rebuilt its queue.
    ok = wait_for([&] { return slurp(daemon.err).find("ringmaild started") != std::string::npos; },
                  o.timeout_s);
    recover_wall = std::chrono::duration<double>(Clock::now() - r0).count();
    rss2 = rss_mb(daemon.pid);
    // One "spool: recovered ..." line per shard; the slowest shard counts.
    std::istringstream log(slurp(daemon.err));
    for (std::string line; std::getline(log, line);) {
      size_t at = line.find("spool: recovered");
      if (at == std::string::npos) {
        continue;
      }
      recovered_line += (recovered_line.empty() ? "" : "\n             ") + line.substr(at);
      size_t in = line.rfind(" in ");
      if (in != std::string::npos) {
        recover_log_ms = std::max(recover_log_ms, std::strtod(line.c_str() + in + 4, nullptr));
      }
    }
    std::printf("  restart    after SIGKILL: accepting again in %.2f s, RSS %.1f MB\n",
                recover_wall, rss2);
    std::printf("  recovery   %s\n", recovered_line.c_str());
    // Paused patterns are not persistent: the recovered queue drains now.
    ok =
        ok &&
        wait_for([&] { return json_num(slurp(dir + "/sink.json"), "recipients") - sink0 >= rcpts; },
                 o.timeout_s);
    drain_s = std::chrono::duration<double>(Clock::now() - r0).count();
    std::printf("  drained    %.0f recipients in %.2f s after the restart (%.0f recipients/s)\n",
                rcpts, drain_s, drain_s > 0 ? rcpts / drain_s : 0);
  }
  daemon.stop();
  std::string sink_stats = stop_sink(sink);
  if (!ok) {
    std::printf("  PROBLEM: inject said %s; stats %s; sink %s; ringmaild stderr: %s\n",
                slurp(inject.out).c_str(), stats.c_str(), sink_stats.c_str(),
                slurp(daemon.err).substr(0, 2000).c_str());
  }
  std::printf(
      "{\"tag\":\"%s\",\"mode\":\"hold\",\"spool\":\"%s\",\"count\":%llu,\"batch\":%u,"
      "\"size\":%zu,\"queued\":%.0f,\"accept_s\":%.2f,\"rss_before_mb\":%.1f,"
      "\"rss_queued_mb\":%.1f,\"bytes_per_rcpt\":%.0f,\"spool_bytes\":%.0f,"
      "\"restart_s\":%.2f,\"recovery_ms\":%.0f,\"rss_recovered_mb\":%.1f,\"drain_s\":%.2f,"
      "\"ok\":%s}\n",
      o.tag.c_str(), o.spool.c_str(), static_cast<unsigned long long>(o.count), o.batch, o.size,
      queued, accept_s, rss0, rss1, per_rcpt, spool_bytes, recover_wall, recover_log_ms, rss2,
      drain_s, ok ? "true" : "false");
  return ok ? 0 : 1;
}

void remove_dir(const Options& o, const std::string& dir) {
  if (o.keep) {
    std::fprintf(stderr, "ringmail-bench: kept %s\n", dir.c_str());
    return;
  }
  std::string rm = "rm -rf '" + dir + "'";
  int rc = std::system(rm.c_str());
  (void)rc;
}

bool parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> std::string {
      if (i + 1 >= argc) {
        throw std::invalid_argument(a + " needs a value");
      }
      return argv[++i];
    };
    // Option values are read strictly (tools/cli_number.h); a bad one is a
    // usage error naming the option.
    auto whole = [&](uint64_t min, uint64_t max, auto* out) {
      std::string v = need();
      std::string error;
      if (!ringmail::tools::parse_whole_number(a, v, min, max, out, &error)) {
        throw std::invalid_argument(error);
      }
    };
    try {
      if (a == "--count") {
        whole(1, 1'000'000'000'000, &o->count);
      } else if (a == "--size") {
        whole(1, 1u << 30, &o->size);
      } else if (a == "--batch") {
        whole(1, 10'000'000, &o->batch);
      } else if (a == "--domains") {
        whole(1, 1'000'000, &o->domains);
      } else if (a == "--mx-domains") {
        whole(0, 100'000, &o->mx_domains);
      } else if (a == "--shards") {
        whole(0, 256, &o->shards);
      } else if (a == "--sink-threads") {
        whole(1, 256, &o->sink_threads);
      } else if (a == "--conns") {
        whole(1, 10'000, &o->conns);
      } else if (a == "--rcpts-per-txn") {
        whole(1, 1000, &o->rcpts_per_txn);
      } else if (a == "--pipelined") {
        whole(1, 64, &o->pipelined);
      } else if (a == "--no-events-file") {
        o->events_file = false;
      } else if (a == "--no-chunking") {
        o->chunking = false;
      } else if (a == "--peer") {
        o->peer = need();
      } else if (a == "--extra-config") {
        o->extra_config = need();
      } else if (a == "--inject-arg") {
        o->inject_args.push_back(need());
      } else if (a == "--timeout") {
        std::string v = need();
        std::string error;
        if (!ringmail::tools::parse_seconds(a, v, 30 * 86'400, &o->timeout_s, &error)) {
          throw std::invalid_argument(error);
        }
        if (o->timeout_s < 1) {  // ringmail-inject gets it in whole seconds
          throw std::invalid_argument(a + ": expected at least 1 second, got \"" + v + "\"");
        }
      } else if (a == "--tag") {
        o->tag = need();
      } else if (a == "--spool") {
        o->spool = need();
        if (o->spool != "off" && o->spool != "async" && o->spool != "sync") {
          throw std::invalid_argument("--spool takes off, async or sync");
        }
      } else if (a == "--hold") {
        o->hold = true;
      } else if (a == "--keep") {
        o->keep = true;
      } else if (a == "--help" || a == "-h") {
        return false;
      } else {
        throw std::invalid_argument("unknown option " + a);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ringmail-bench: %s\n", e.what());
      return false;
    }
  }
  return true;
}

void usage() {
  std::fprintf(stderr,
               "usage: ringmail-bench [options]\n"
               "  --count N            messages (batches) to send (default 100000)\n"
               "  --size BYTES         message size (default 2048)\n"
               "  --batch K            recipients per batch (default 1)\n"
               "  --domains D          recipient domains, all routed to the sink (default 16)\n"
               "  --mx-domains N       instead: N domains, each with its own MX host served\n"
               "                       by dnsmasq on loopback (needs /usr/sbin/dnsmasq)\n"
               "  --shards S           ringmaild shards (default: one per CPU)\n"
               "  --sink-threads T     ringmail-sink threads (default 1)\n"
               "  --conns C            connections per destination (default 20)\n"
               "  --rcpts-per-txn R    recipients per transaction (default 100)\n"
               "  --pipelined P        transactions in flight per connection (default 4)\n"
               "  --no-chunking        use DATA even though the sink offers BDAT\n"
               "  --no-events-file     do not write the event file\n"
               "  --extra-config FILE  TOML appended to the generated configuration\n"
               "  --inject-arg ARG     pass ARG to ringmail-inject (repeatable), e.g.\n"
               "                       --inject-arg --personalise\n"
               "  --peer smtp-source   also time Postfix's smtp-source (100 sessions, reused)\n"
               "                       sending the same load into a fresh ringmail-sink\n"
               "  --spool MODE         off, async or sync (default: the daemon's default, sync)\n"
               "  --hold               queue instead of delivering: pause every destination,\n"
               "                       inject, report memory per queued recipient; with a spool,\n"
               "                       SIGKILL the daemon, restart it, report recovery time,\n"
               "                       then the rate at which the recovered queue drains\n"
               "  --keep               keep the working directory (logs, events, spool)\n"
               "  --timeout S          give up after S seconds (default 600)\n"
               "  --tag TEXT           label for the JSON line\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  const std::string bin = self_dir();
  char tmpl[] = "/tmp/ringmail-bench.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);

  // --- receiving side
  std::vector<std::string> listens = {"127.0.0.1:0"};
  Proc dns;
  uint16_t dns_port = 0;
  const uint32_t kMxAddrs = 8;
  if (o.mx_domains > 0) {
    listens.clear();
    listens.push_back("127.0.1.1:0");
  }
  Proc sink;
  uint16_t port = start_sink(sink, bin, dir, o, listens, "sink");
  if (port == 0) {
    std::fprintf(stderr, "ringmail-bench: ringmail-sink did not start (%s)\n",
                 slurp(sink.err).c_str());
    return 1;
  }
  if (o.mx_domains > 0) {
    // More listeners on the same port: each MX host gets one of 8 addresses.
    sink.stop();
    std::vector<std::string> more;
    for (uint32_t i = 1; i <= kMxAddrs; ++i) {
      more.push_back("127.0.1." + std::to_string(i) + ":" + std::to_string(port));
    }
    port = start_sink(sink, bin, dir, o, more, "sink");
    // dnsmasq serving d<i>.bench.test MX mx<i>.bench.test -> 127.0.1.(i%8+1)
    std::ofstream conf(dir + "/dnsmasq.conf");
    for (uint32_t i = 0; i < o.mx_domains; ++i) {
      conf << "mx-host=d" << i << ".bench.test,mx" << i << ".bench.test,10\n";
      conf << "host-record=mx" << i << ".bench.test,127.0.1." << (i % kMxAddrs + 1) << "\n";
    }
    conf.close();
    for (int attempt = 0; attempt < 5 && dns_port == 0; ++attempt) {
      uint16_t p = static_cast<uint16_t>(20000 + (getpid() * 7 + attempt * 131) % 30000);
      dns.start({"/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=" + std::to_string(p),
                 "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                 "--local=/test/", "--local-ttl=3600", "--conf-file=" + dir + "/dnsmasq.conf",
                 "--pid-file=" + dir + "/dnsmasq.pid"},
                dir, "dnsmasq");
      if (wait_for([&] { return ::access((dir + "/dnsmasq.pid").c_str(), F_OK) == 0; }, 5)) {
        dns_port = p;
      } else {
        dns.stop();
      }
    }
    if (dns_port == 0) {
      std::fprintf(stderr, "ringmail-bench: dnsmasq did not start\n");
      return 1;
    }
  }

  // --- ringmaild
  std::string cfg_path = dir + "/ringmail.toml";
  {
    std::ofstream cfg(cfg_path);
    // info in --hold mode: the recovery report is an info line.
    cfg << "log_level = \"" << (o.hold ? "info" : "warning")
        << "\"\n[engine]\nshards = " << o.shards << "\n";
    if (!o.spool.empty()) {
      cfg << "[spool]\nmode = \"" << o.spool << "\"\n";
    }
    // The injector follows every recipient's events on its one connection
    // while it is still building batches; on 2 CPUs shared with the daemon
    // and the sink it can fall behind a million-recipient run by more than
    // the default 64 MiB backlog.
    cfg << "[ingest]\nsocket = \"" << dir
        << "/ringmail.sock\"\nmax_subscriber_backlog = \"1GiB\"\n";
    cfg << "[events]\nfile = \"" << (o.events_file ? dir + "/events.jsonl" : "") << "\"\n";
    cfg << "[delivery]\nmax_conns_per_destination = " << o.conns
        << "\nmax_rcpts_per_txn = " << o.rcpts_per_txn << "\nmax_pipelined_txns = " << o.pipelined
        << "\nchunking = " << (o.chunking ? "true" : "false") << "\n";
    if (o.mx_domains > 0) {
      cfg << "port = " << port << "\n[routing]\ndefault = \"mx\"\n";
      cfg << "[dns]\nservers = [\"127.0.0.1:" << dns_port << "\"]\nallow_loopback = true\n";
    } else {
      cfg << "[routing]\ndefault = \"127.0.0.1:" << port << "\"\n";
    }
    if (!o.extra_config.empty()) {
      cfg << slurp(o.extra_config);
    }
  }
  Proc daemon;
  if (!daemon.start({bin + "/ringmaild", "--config", cfg_path}, dir, "ringmaild", dir)) {
    return 1;
  }
  if (!wait_for([&] { return ::access((dir + "/ringmail.sock").c_str(), F_OK) == 0; }, 10)) {
    std::fprintf(stderr, "ringmail-bench: ringmaild did not start: %s\n",
                 slurp(daemon.err).c_str());
    return 1;
  }

  if (o.hold) {
    int rc = run_hold(o, bin, dir, cfg_path, daemon, sink);
    if (o.mx_domains > 0) {
      dns.stop();
    }
    remove_dir(o, dir);
    return rc;
  }

  // --- load
  double cpu0 = cpu_seconds(daemon.pid), sink_cpu0 = cpu_seconds(sink.pid);
  Proc inject;
  std::vector<std::string> iargv = inject_argv(o, bin, dir, /*wait=*/true);
  auto t0 = Clock::now();
  inject.start(iargv, dir, "inject");
  int irc = inject.wait(o.timeout_s + 30);
  double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  double cpu = cpu_seconds(daemon.pid) - cpu0;
  double sink_cpu = cpu_seconds(sink.pid) - sink_cpu0;
  double rss = peak_rss_mb(daemon.pid);
  std::string ijson = slurp(inject.out);
  ijson = ijson.substr(std::min(ijson.rfind('{'), ijson.size()));
  daemon.stop();
  std::string sink_stats = stop_sink(sink);
  if (o.mx_domains > 0) {
    dns.stop();
  }
  double delivered = json_num(ijson, "delivered");
  double final_s = json_num(ijson, "final_s");
  double inject_s = json_num(ijson, "inject_s");
  double msgs = static_cast<double>(o.count);
  double rate = final_s > 0 ? delivered / final_s : 0;
  std::printf("ringmail-bench: %llu messages of %zu bytes, %u recipient(s) each, %s\n",
              static_cast<unsigned long long>(o.count), o.size, o.batch,
              o.mx_domains > 0 ? (std::to_string(o.mx_domains) + " MX domains via DNS").c_str()
                               : (std::to_string(o.domains) + " domains, static route").c_str());
  std::printf("  injected   %.0f batches/s (%.2f s)\n", inject_s > 0 ? msgs / inject_s : 0,
              inject_s);
  std::printf("  delivered  %.0f recipients/s (%.0f in %.2f s); sink saw %s\n", rate, delivered,
              final_s, sink_stats.c_str());
  std::printf("  latency    p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
              json_num(ijson, "p50_ms"), json_num(ijson, "p90_ms"), json_num(ijson, "p99_ms"),
              json_num(ijson, "max_ms"));
  std::printf("  ringmaild  %.2f CPU s (%.1f CPU ms per 1,000 delivered), peak RSS %.1f MB\n", cpu,
              delivered > 0 ? cpu * 1e6 / delivered : 0, rss);
  std::printf("  sink       %.2f CPU s\n", sink_cpu);
  bool ok = irc == 0 && delivered == msgs * o.batch &&
            json_num(sink_stats, "recipients") == msgs * o.batch;
  if (!ok) {
    std::printf("  PROBLEM: inject exit %d; inject said %s; ringmaild stderr: %s\n", irc,
                ijson.c_str(), slurp(daemon.err).substr(0, 2000).c_str());
  }

  // --- peer: smtp-source into a fresh sink
  std::string peer_json;
  if (o.peer == "smtp-source") {
    Proc psink;
    uint16_t pport = start_sink(psink, bin, dir, o, {"127.0.0.1:0"}, "peer-sink");
    Proc src;
    double pcpu0 = cpu_seconds(psink.pid);
    auto p0 = Clock::now();
    src.start({"/usr/sbin/smtp-source", "-s", "100", "-m", std::to_string(o.count), "-l",
               std::to_string(o.size), "-d", "-N", "-M", "bench.test", "-f", "sender@bench.test",
               "-t", "rcpt@bench.test", "127.0.0.1:" + std::to_string(pport)},
              dir, "smtp-source");
    std::string pstats = psink.out;
    bool done = wait_for(
        [&] { return json_num(slurp(dir + "/peer-sink.json"), "messages") >= msgs; }, o.timeout_s);
    double pwall = std::chrono::duration<double>(Clock::now() - p0).count();
    double ppcpu = cpu_seconds(psink.pid) - pcpu0;
    int src_rc = src.wait(30);
    std::string ps = stop_sink(psink);
    double prate = done ? msgs / pwall : 0;
    std::printf(
        "  peer smtp-source -s 100 -d: %.0f messages/s (%.2f s), sink %.2f CPU s, "
        "smtp-source exit %d; sink saw %s\n",
        prate, pwall, ppcpu, src_rc, ps.c_str());
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  ",\"peer\":\"smtp-source\",\"peer_msgs_per_s\":%.0f,\"peer_sink_cpu_s\":%.2f,"
                  "\"ratio\":%.2f",
                  prate, ppcpu, prate > 0 ? rate / prate : 0);
    peer_json = buf;
  }
  std::printf(
      "{\"tag\":\"%s\",\"count\":%llu,\"size\":%zu,\"batch\":%u,\"domains\":%u,\"mx_domains\":%u,"
      "\"delivered\":%.0f,\"inject_per_s\":%.0f,\"delivered_per_s\":%.0f,\"p50_ms\":%.2f,"
      "\"p99_ms\":%.2f,\"daemon_cpu_s\":%.2f,\"cpu_ms_per_1000\":%.1f,\"peak_rss_mb\":%.1f,"
      "\"sink_cpu_s\":%.2f,\"wall_s\":%.2f,\"ok\":%s%s}\n",
      o.tag.c_str(), static_cast<unsigned long long>(o.count), o.size, o.batch, o.domains,
      o.mx_domains, delivered, inject_s > 0 ? msgs / inject_s : 0, rate, json_num(ijson, "p50_ms"),
      json_num(ijson, "p99_ms"), cpu, delivered > 0 ? cpu * 1e6 / delivered : 0, rss, sink_cpu,
      wall, ok ? "true" : "false", peer_json.c_str());
  remove_dir(o, dir);
  return ok ? 0 : 1;
}
