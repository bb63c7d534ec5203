// ringmail-tls-delivery-bench — delivery rate with STARTTLS versus
// plaintext, measured in the same run against the same receiver.
//
//   ringmail-tls-delivery-bench [--messages N] [--size BYTES] [--rcpts R]
//                               [--rounds K] [--shards S] [--conns C]
//
// The receiver runs in this process: proto::ServerSession (the code the
// submission listener and ringmail-sink use) with TlsChannel, one thread
// per connection, bodies counted and dropped. It listens twice: "plain"
// (no STARTTLS offered) and "tls" (STARTTLS offered, an EC P-256
// certificate made by the openssl CLI at start). An embedded engine
// (opportunistic TLS, session resumption on) delivers N messages of R
// recipients to each, alternating the order every round (plain, tls, tls,
// plain, ...), and the time from the first submit to the last delivered
// event is measured per phase. Prints each phase, then the medians and the
// ratio tls/plain. The spool is off: this measures delivery, not fsync.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <ringmail/ringmail.hpp>

#include "engine/tls.h"
#include "proto/smtp_server.h"

namespace {

using Clock = std::chrono::steady_clock;
using ringmail::engine::TlsChannel;
using ringmail::engine::TlsContext;

struct Options {
  int messages = 2000;
  int size = 10 * 1024;
  int rcpts = 1;
  int rounds = 5;
  int shards = 1;
  int conns = 4;
};

// --- the receiver ------------------------------------------------------------

class Receiver {
 public:
  Receiver(const TlsContext* tls) : tls_(tls) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 128);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~Receiver() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(fd_);
    std::lock_guard lock(mu_);
    for (auto& t : conns_) {
      t.join();
    }
  }
  uint16_t port() const { return port_; }
  uint64_t messages() const { return messages_.load(); }

 private:
  void accept_loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) {
        return;
      }
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mu_);
      conns_.emplace_back([this, c] { serve(c); });
    }
  }

  static bool send_all(int fd, std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      s.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  void serve(int fd) {
    ringmail::proto::ServerConfig cfg;
    cfg.hostname = "bench-sink";
    cfg.starttls = tls_ != nullptr;
    cfg.keep_body = false;
    cfg.max_message = 0;
    ringmail::proto::ServerSession s(cfg);
    std::unique_ptr<TlsChannel> tls;
    std::string in, wire;
    size_t in_pos = 0;
    char buf[65536];
    s.start();
    auto flush = [&]() {
      std::string_view out = s.output();
      if (out.empty()) {
        return true;
      }
      bool ok;
      if (tls != nullptr) {
        ok = tls->write(std::span<const char>(out.data(), out.size())) == TlsChannel::Status::kDone;
        wire.clear();
        tls->take_output(&wire);
        ok = ok && send_all(fd, wire);
      } else {
        ok = send_all(fd, out);
      }
      s.consume_output(out.size());
      return ok;
    };
    auto read_more = [&]() {
      for (;;) {
        if (tls != nullptr) {
          size_t n = 0;
          auto st = tls->read(std::span<char>(buf, sizeof buf), &n);
          if (st == TlsChannel::Status::kDone) {
            in.append(buf, n);
            return true;
          }
          if (st != TlsChannel::Status::kWant) {
            return false;
          }
        }
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
          return false;
        }
        if (tls == nullptr) {
          in.append(buf, static_cast<size_t>(n));
          return true;
        }
        tls->feed(std::span<const char>(buf, static_cast<size_t>(n)));
      }
    };
    for (;;) {
      auto [used, action] = s.feed(std::span<const char>(in.data() + in_pos, in.size() - in_pos));
      in_pos += used;
      if (in_pos == in.size()) {
        in.clear();
        in_pos = 0;
      }
      using Action = ringmail::proto::ServerSession::Action;
      if (action == Action::kDecide) {
        if (s.decision().kind == ringmail::proto::DecisionKind::kMessage) {
          messages_.fetch_add(1, std::memory_order_relaxed);
        }
        s.accept();
        continue;
      }
      if (!flush()) {
        break;
      }
      if (action == Action::kClose) {
        break;
      }
      if (action == Action::kStartTls) {
        in.clear();
        in_pos = 0;
        auto ch = TlsChannel::server(*tls_);
        if (!ch.ok()) {
          break;
        }
        tls = std::move(*ch);
        bool ok = true;
        for (;;) {
          auto st = tls->handshake();
          wire.clear();
          tls->take_output(&wire);
          ok = send_all(fd, wire);
          if (st == TlsChannel::Status::kDone || st == TlsChannel::Status::kFailed || !ok) {
            ok = ok && st == TlsChannel::Status::kDone;
            break;
          }
          ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n <= 0) {
            ok = false;
            break;
          }
          tls->feed(std::span<const char>(buf, static_cast<size_t>(n)));
        }
        if (!ok) {
          break;
        }
        s.tls_established();
        continue;
      }
      if (action == Action::kNeedInput && !read_more()) {
        break;
      }
    }
    ::close(fd);
  }

  const TlsContext* tls_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> messages_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
};

// --- the driver --------------------------------------------------------------

struct Counter {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t delivered = 0, other = 0;
};

double run_phase(ringmail::Engine& eng, Counter& ctr, const std::string& domain, const Options& o,
                 int round, const std::string& body) {
  uint64_t target;
  {
    std::lock_guard lock(ctr.mu);
    target = ctr.delivered + static_cast<uint64_t>(o.messages) * static_cast<uint64_t>(o.rcpts);
  }
  auto t0 = Clock::now();
  for (int i = 0; i < o.messages; ++i) {
    ringmail::Batch b;
    b.sender = "bench@example.test";
    b.message = body;
    for (int r = 0; r < o.rcpts; ++r) {
      b.recipients.push_back("r" + std::to_string(round) + "-" + std::to_string(i) + "-" +
                             std::to_string(r) + "@" + domain);
    }
    auto ack = eng.submit(b);
    if (ack.status != ringmail::AckStatus::kAccepted) {
      std::fprintf(stderr, "submit refused: %s\n", ack.reason.c_str());
      std::exit(1);
    }
  }
  double submit_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (std::getenv("BENCH_DEBUG") != nullptr) {
    std::fprintf(stderr, "submitted in %.3f s\n", submit_s);
  }
  std::unique_lock lock(ctr.mu);
  bool done = ctr.cv.wait_for(lock, std::chrono::seconds(300),
                              [&] { return ctr.delivered >= target || ctr.other > 0; });
  if (!done || ctr.other > 0) {
    std::fprintf(stderr, "phase %s failed: %llu not delivered\n", domain.c_str(),
                 static_cast<unsigned long long>(ctr.other));
    std::exit(1);
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--messages") {
      o.messages = v;
    } else if (a == "--size") {
      o.size = v;
    } else if (a == "--rcpts") {
      o.rcpts = v;
    } else if (a == "--rounds") {
      o.rounds = v;
    } else if (a == "--shards") {
      o.shards = v;
    } else if (a == "--conns") {
      o.conns = v;
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  char tmpl[] = "/tmp/ringmail-tls-delivery-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return 1;
  }
  std::string dir = tmpl;
  std::string cmd = "cd " + dir +
                    " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout key.pem -out cert.pem -days 2 -subj /CN=localhost > gen.log 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "openssl failed\n");
    return 1;
  }
  ringmail::engine::TlsConfig tc;
  auto sctx = TlsContext::server(tc, dir + "/cert.pem", dir + "/key.pem");
  if (!sctx.ok()) {
    std::fprintf(stderr, "%s\n", sctx.error().message.c_str());
    return 1;
  }
  Receiver plain(nullptr);
  Receiver tls(sctx->get());

  std::string toml = "log_level = \"warning\"\n[engine]\nshards = " + std::to_string(o.shards) +
                     "\n[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n"
                     "[delivery]\nehlo_name = \"bench.test\"\ntls = \"opportunistic\"\n"
                     "max_conns_per_destination = " +
                     std::to_string(o.conns) +
                     "\n[routing]\ndefault = \"127.0.0.1:1\"\n[routing.domains]\n"
                     "\"plain.test\" = \"127.0.0.1:" +
                     std::to_string(plain.port()) +
                     "\"\n\"tls.test\" = \"127.0.0.1:" + std::to_string(tls.port()) +
                     "\"\n[limits]\nmax_queued_bytes = \"8GiB\"\n[spool]\nmode = \"off\"\n"
                     "[tls]\nsession_resumption = true\n";
  auto eng = ringmail::Engine::start_toml(toml);
  if (!eng.ok()) {
    std::fprintf(stderr, "%s\n", eng.error().message.c_str());
    return 1;
  }
  Counter ctr;
  std::atomic<uint64_t> tls_delivered{0};
  (*eng)->subscribe([&](const ringmail::EventView& e) {
    std::lock_guard lock(ctr.mu);
    if (e.type == ringmail::EventType::kDelivered) {
      ++ctr.delivered;
      if (e.json.find("\"tls\":\"TLS") != std::string_view::npos) {
        tls_delivered.fetch_add(1, std::memory_order_relaxed);
      }
    } else {
      ++ctr.other;
    }
    ctr.cv.notify_all();
  });
  std::string body = "From: <bench@example.test>\r\nSubject: tls bench\r\n\r\n";
  while (body.size() + 64 < static_cast<size_t>(o.size)) {
    body += "The quick brown fox jumps over the lazy dog, again and again.\r\n";
  }
  std::vector<double> plain_rate, tls_rate;
  for (int round = 0; round < o.rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      bool tls_first = round % 2 == 1;
      bool use_tls = (k == 0) == tls_first;
      std::string domain = use_tls ? "tls.test" : "plain.test";
      double secs = run_phase(**eng, ctr, domain, o, round, body);
      double rate = o.messages / secs;
      (use_tls ? tls_rate : plain_rate).push_back(rate);
      std::printf("round %d %-9s %6d messages in %7.3f s = %8.0f msg/s\n", round,
                  use_tls ? "starttls" : "plaintext", o.messages, secs, rate);
    }
  }
  double mp = median(plain_rate), mt = median(tls_rate);
  std::printf(
      "median: plaintext %.0f msg/s, STARTTLS %.0f msg/s, ratio %.2f "
      "(size %d B, %d rcpt/msg, %d shards, %d conns/destination, %d rounds)\n",
      mp, mt, mp > 0 ? mt / mp : 0, o.size, o.rcpts, o.shards, o.conns, o.rounds);
  std::printf("deliveries with TLS: %llu; receiver counted %llu plain + %llu TLS messages\n",
              static_cast<unsigned long long>(tls_delivered.load()),
              static_cast<unsigned long long>(plain.messages()),
              static_cast<unsigned long long>(tls.messages()));
  (*eng)->shutdown(std::chrono::seconds(5));
  eng->reset();
  cmd = "rm -rf " + dir;
  (void)!std::system(cmd.c_str());
  return 0;
}
