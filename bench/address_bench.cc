// Mailbox parsing: once per recipient at ingest, so per-address cost matters.
#include <benchmark/benchmark.h>

#include <string>

#include "proto/address.h"

namespace ringmail::proto {
namespace {

void run(benchmark::State& state, std::string_view address) {
  for (auto _ : state) {
    Result<Mailbox> m = parse_mailbox(address);
    benchmark::DoNotOptimize(m.ok());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_AddressTypical(benchmark::State& s) {
  run(s, "firstname.lastname+tag@mail.example.com");
}
BENCHMARK(BM_AddressTypical);

void BM_AddressQuoted(benchmark::State& s) {
  run(s, "\"john \\\"jd\\\" doe\"@example.org");
}
BENCHMARK(BM_AddressQuoted);

void BM_AddressUtf8(benchmark::State& s) {
  run(s, "\xc3\xa9l\xc3\xa8ve@\xc3\xa9\x63ole.example");
}
BENCHMARK(BM_AddressUtf8);

void BM_AddressLiteral(benchmark::State& s) {
  run(s, "postmaster@[IPv6:2001:db8:85a3::8a2e:370:7334]");
}
BENCHMARK(BM_AddressLiteral);

void BM_AddressInvalid(benchmark::State& s) {
  run(s, "user@example.com>\r\nRSET");
}
BENCHMARK(BM_AddressInvalid);

void BM_NormalizeDomain(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(normalize_domain("Mail.Example.COM."));
  }
}
BENCHMARK(BM_NormalizeDomain);

}  // namespace
}  // namespace ringmail::proto
