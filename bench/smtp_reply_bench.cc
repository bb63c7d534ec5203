// Reply parser throughput: the per-reply cost the delivery session pays.
#include <benchmark/benchmark.h>

#include <string>

#include "proto/smtp_reply.h"

namespace ringmail::proto {
namespace {

const std::string kEhlo =
    "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
    "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
    "250 CHUNKING\r\n";

void parse_all(benchmark::State& state, const std::string& wire) {
  ReplyParser p;
  size_t replies = 0;
  for (auto _ : state) {
    std::span<const char> rest(wire.data(), wire.size());
    while (!rest.empty()) {
      ParseResult r = p.parse(rest);
      benchmark::DoNotOptimize(p.reply().code);
      rest = rest.subspan(r.consumed);
      ++replies;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire.size()));
  state.SetItemsProcessed(static_cast<int64_t>(replies));
}

void BM_ReplySingleLine(benchmark::State& state) {
  parse_all(state, "250 2.1.5 Ok\r\n");
}
BENCHMARK(BM_ReplySingleLine);

void BM_ReplyEhloCapabilities(benchmark::State& state) {
  parse_all(state, kEhlo);
}
BENCHMARK(BM_ReplyEhloCapabilities);

// A pipelined transaction's replies arriving in one read: MAIL, 50 RCPTs, DATA.
void BM_ReplyPipelinedTransaction(benchmark::State& state) {
  std::string wire = "250 2.1.0 Ok\r\n";
  for (int i = 0; i < 50; ++i) {
    wire += i % 10 == 9 ? "550 5.1.1 <x@example.com>: Recipient address rejected\r\n"
                        : "250 2.1.5 Ok\r\n";
  }
  wire += "354 End data with <CR><LF>.<CR><LF>\r\n";
  parse_all(state, wire);
}
BENCHMARK(BM_ReplyPipelinedTransaction);

// Worst realistic split: the reply arrives one byte at a time.
void BM_ReplyByteByByte(benchmark::State& state) {
  ReplyParser p;
  for (auto _ : state) {
    for (char c : kEhlo) {
      ParseResult r = p.parse(std::span<const char>(&c, 1));
      benchmark::DoNotOptimize(r);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kEhlo.size()));
}
BENCHMARK(BM_ReplyByteByByte);

}  // namespace
}  // namespace ringmail::proto
