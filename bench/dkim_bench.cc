// DKIM: signatures per second per core (rsa-2048, ed25519), the whole
// signer on a 10 KB message, and canonicalise+hash of a 10 KB body.
//   build/bench/dkim-bench --benchmark_repetitions=9
//     --benchmark_report_aggregates_only=true
// items_per_second of BM_Sign* is signatures per second on one core.
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
// clang-format on

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/dkim.h"
#include "proto/dkim.h"

namespace ringmail::engine {
namespace {

std::string pem_of(std::vector<byte> der, int type) {
  std::string pem(der.size() * 2 + 256, '\0');
  int n = wc_DerToPem(der.data(), static_cast<word32>(der.size()),
                      reinterpret_cast<byte*>(pem.data()), static_cast<word32>(pem.size()), type);
  pem.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return pem;
}

std::string make_key_pem(bool ed) {
  WC_RNG rng;
  wc_InitRng(&rng);
  std::vector<byte> der(8192);
  int n = 0;
  std::string pem;
  if (ed) {
    ed25519_key k;
    wc_ed25519_init(&k);
    wc_ed25519_make_key(&rng, ED25519_KEY_SIZE, &k);
    n = wc_Ed25519PrivateKeyToDer(&k, der.data(), static_cast<word32>(der.size()));
    wc_ed25519_free(&k);
    der.resize(n > 0 ? static_cast<size_t>(n) : 0);
    pem = pem_of(der, ED25519_TYPE);
  } else {
    RsaKey k;
    wc_InitRsaKey(&k, nullptr);
    wc_MakeRsaKey(&k, 2048, WC_RSA_EXPONENT, &rng);
    n = wc_RsaKeyToDer(&k, der.data(), static_cast<word32>(der.size()));
    wc_FreeRsaKey(&k);
    der.resize(n > 0 ? static_cast<size_t>(n) : 0);
    pem = pem_of(der, PRIVATEKEY_TYPE);
  }
  wc_FreeRng(&rng);
  return pem;
}

std::unique_ptr<DkimPrivateKey> load_key(bool ed) {
  auto k = DkimPrivateKey::from_pem(make_key_pem(ed), "bench");
  if (!k.ok()) {
    std::fprintf(stderr, "dkim-bench: %s\n", k.error().message.c_str());
    std::abort();
  }
  return std::move(k).value();
}

const DkimPrivateKey& key(bool ed) {
  static std::unique_ptr<DkimPrivateKey> rsa = load_key(false);
  static std::unique_ptr<DkimPrivateKey> ed25519 = load_key(true);
  return ed ? *ed25519 : *rsa;
}

std::string message(size_t body_size) {
  std::string m =
      "From: News <news@example.com>\r\n"
      "To: reader@example.net\r\n"
      "Subject: The weekly letter, folded\r\n"
      "  over two lines\r\n"
      "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
      "Message-ID: <bench@example.com>\r\n"
      "MIME-Version: 1.0\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "\r\n";
  size_t line = 0;
  while (m.size() < body_size) {
    m += (line % 5 == 0) ? "indented  text   with  runs  \r\n" : "";
    m += std::string(70, static_cast<char>('a' + line % 26)) + "\r\n";
    ++line;
  }
  return m;
}

// The private-key operation alone: signatures per second per core.
void BM_SignDigest(benchmark::State& state) {
  const DkimPrivateKey& k = key(state.range(0) != 0);
  proto::Sha256::Digest d{};
  for (auto _ : state) {
    auto s = k.sign(d);
    benchmark::DoNotOptimize(s);
    d[0]++;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(state.range(0) != 0 ? "ed25519" : "rsa-2048");
}
BENCHMARK(BM_SignDigest)->Arg(0)->Arg(1);

// The whole signer on one 10 KB message: header parse, body canonicalise +
// hash, header hash, signature, field text.
void BM_SignMessage(benchmark::State& state) {
  const bool ed = state.range(0) != 0;
  DkimSigner::Key k;
  k.domain = "example.com";
  k.selector = "bench";
  k.headers.emplace_back("From");
  for (std::string_view h : proto::kDefaultSignedHeaders) {
    k.headers.emplace_back(h);
  }
  k.oversign.emplace_back("From");
  k.key = load_key(ed);
  std::vector<DkimSigner::Key> keys;
  keys.push_back(std::move(k));
  auto signer = DkimSigner::from_keys(std::move(keys));
  const std::string m = message(10 * 1024);
  for (auto _ : state) {
    auto s = signer->sign(m, 1767225600);
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(ed ? "ed25519" : "rsa-2048");
}
BENCHMARK(BM_SignMessage)->Arg(0)->Arg(1);

// Canonicalise + SHA-256 of a 10 KB body (what a shared message costs once).
void BM_CanonHashBody(benchmark::State& state) {
  const proto::Canon c = state.range(0) != 0 ? proto::Canon::kRelaxed : proto::Canon::kSimple;
  const std::string m = message(10 * 1024);
  for (auto _ : state) {
    WolfSha256 sha;
    proto::BodyCanonicalizer bc(c, &sha);
    bc.update(m);
    bc.finish();
    benchmark::DoNotOptimize(sha.finish());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * m.size()));
  state.SetLabel(state.range(0) != 0 ? "relaxed" : "simple");
}
BENCHMARK(BM_CanonHashBody)->Arg(0)->Arg(1);

}  // namespace
}  // namespace ringmail::engine

BENCHMARK_MAIN();
