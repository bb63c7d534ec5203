// TLS handshakes per second over memory buffers (engine/tls.h): a client
// and a server TlsChannel joined in one thread, so each handshake counts
// both sides' work. Full handshakes versus resumed ones, TLS 1.3 and 1.2,
// with an EC P-256 certificate made by the openssl CLI at start.
//
//   build-bench/bench/ringmail-tls-bench --benchmark_repetitions=9
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tls.h"

namespace ringmail::engine {
namespace {

using Status = TlsChannel::Status;

struct Certs {
  std::string dir;
  bool ok = false;
  Certs() {
    char tmpl[] = "/tmp/ringmail-tls-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return;
    }
    dir = tmpl;
    std::string cmd = "cd " + dir +
                      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                      "-keyout key.pem -out cert.pem -days 2 -subj /CN=mx.test "
                      "-addext subjectAltName=DNS:mx.test > gen.log 2>&1";
    ok = std::system(cmd.c_str()) == 0;
  }
  ~Certs() {
    if (!dir.empty()) {
      std::string cmd = "rm -rf " + dir;
      (void)!std::system(cmd.c_str());
    }
  }
};

const Certs& certs() {
  static Certs c;
  return c;
}

struct Pair {
  std::unique_ptr<TlsContext> server;
  std::unique_ptr<TlsContext> client;
};

Pair contexts(bool tls12) {
  TlsConfig cfg;
  cfg.ca_file = certs().dir + "/cert.pem";
  Pair p;
  auto s = TlsContext::server(cfg, certs().dir + "/cert.pem", certs().dir + "/key.pem");
  auto c = TlsContext::client(cfg);
  if (!s.ok() || !c.ok()) {
    return p;
  }
  p.server = std::move(*s);
  p.client = std::move(*c);
  if (tls12) {
    wolfSSL_CTX_set_max_proto_version(p.server->native(), TLS1_2_VERSION);
  }
  return p;
}

void pump(TlsChannel& from, TlsChannel& to, std::string& wire) {
  wire.clear();
  from.take_output(&wire);
  to.feed(wire);
}

/// One handshake; returns the client channel (for its session), or null.
std::unique_ptr<TlsChannel> handshake(const Pair& p, WOLFSSL_SESSION* resume, bool verify) {
  TlsChannel::ClientParams cp;
  cp.server_name = "mx.test";
  cp.verify = verify;
  cp.resume = resume;
  auto c = TlsChannel::client(*p.client, cp);
  auto s = TlsChannel::server(*p.server);
  if (!c.ok() || !s.ok()) {
    return nullptr;
  }
  std::string wire;
  Status cs = Status::kWant, ss = Status::kWant;
  while (cs == Status::kWant || ss == Status::kWant) {
    if (cs == Status::kWant) {
      cs = (*c)->handshake();
    }
    pump(**c, **s, wire);
    if (ss == Status::kWant) {
      ss = (*s)->handshake();
    }
    pump(**s, **c, wire);
    if (cs == Status::kFailed || ss == Status::kFailed) {
      return nullptr;
    }
  }
  // The first application data carries the TLS 1.3 ticket to the client.
  if ((*s)->write(std::span<const char>("220 x\r\n", 7)) != Status::kDone) {
    return nullptr;
  }
  pump(**s, **c, wire);
  char buf[64];
  size_t n = 0;
  if ((*c)->read(std::span<char>(buf, sizeof buf), &n) != Status::kDone) {
    return nullptr;
  }
  return std::move(*c);
}

// Args: {tls12 (0/1), resumed (0/1), verify (0/1)}.
void BM_Handshake(benchmark::State& state) {
  const bool tls12 = state.range(0) != 0;
  const bool resumed = state.range(1) != 0;
  const bool verify = state.range(2) != 0;
  if (!certs().ok) {
    state.SkipWithError("openssl could not make a certificate");
    return;
  }
  Pair p = contexts(tls12);
  if (!p.client || !p.server) {
    state.SkipWithError("TLS contexts");
    return;
  }
  TlsSessionPtr session;
  if (resumed) {
    auto first = handshake(p, nullptr, verify);
    if (!first) {
      state.SkipWithError("first handshake failed");
      return;
    }
    session = first->session();
  }
  size_t resumed_count = 0;
  for (auto _ : state) {
    auto c = handshake(p, session.get(), verify);
    if (!c) {
      state.SkipWithError("handshake failed");
      return;
    }
    resumed_count += c->resumed() ? 1 : 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["resumed_share"] =
      static_cast<double>(resumed_count) / static_cast<double>(state.iterations());
}

BENCHMARK(BM_Handshake)
    ->ArgNames({"tls12", "resumed", "verify"})
    ->Args({0, 0, 0})
    ->Args({0, 1, 0})
    ->Args({0, 0, 1})
    ->Args({0, 1, 1})
    ->Args({1, 0, 0})
    ->Args({1, 1, 0})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace ringmail::engine

BENCHMARK_MAIN();
