// Message body preparation (client side: normalise + dot-stuff, done once
// per message) and the server's DataReader, on 2 KB and 1 MB bodies.
#include <benchmark/benchmark.h>

#include <string>

#include "proto/message_body.h"

namespace ringmail::proto {
namespace {

// A plausible body: 72-column lines, some starting with '.', LF or CRLF ends.
std::string make_body(size_t size, bool crlf) {
  std::string body = "From: a@example.com\r\nSubject: benchmark\r\n\r\n";
  size_t line = 0;
  while (body.size() < size) {
    body += (line % 17 == 0) ? ".dotted line " : "text ";
    body += std::string(60, static_cast<char>('a' + line % 26));
    body += crlf ? "\r\n" : "\n";
    ++line;
  }
  body.resize(size);
  return body;
}

void BM_NormalizeAndStuff(benchmark::State& state) {
  const std::string raw = make_body(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  std::string normalized;
  std::string stuffed;
  for (auto _ : state) {
    normalized.clear();
    stuffed.clear();
    BodyInfo info = normalize_body(raw, normalized);
    append_dot_stuffed(normalized, stuffed);
    benchmark::DoNotOptimize(info);
    benchmark::DoNotOptimize(stuffed.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * raw.size()));
}
// Args: body size, CRLF already (1) or LF line ends (0).
BENCHMARK(BM_NormalizeAndStuff)
    ->Args({2048, 0})
    ->Args({2048, 1})
    ->Args({1 << 20, 0})
    ->Args({1 << 20, 1});

void BM_ScanBody(benchmark::State& state) {
  const std::string raw = make_body(static_cast<size_t>(state.range(0)), true);
  for (auto _ : state) {
    benchmark::DoNotOptimize(scan_body(raw));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * raw.size()));
}
BENCHMARK(BM_ScanBody)->Arg(2048)->Arg(1 << 20);

void BM_DataReader(benchmark::State& state) {
  std::string normalized;
  normalize_body(make_body(static_cast<size_t>(state.range(0)), true), normalized);
  std::string wire;
  append_dot_stuffed(normalized, wire);
  wire += ".\r\n";
  std::string sink;
  for (auto _ : state) {
    DataReader reader;
    sink.clear();
    ParseResult r = reader.feed(std::span<const char>(wire.data(), wire.size()), &sink);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire.size()));
}
BENCHMARK(BM_DataReader)->Arg(2048)->Arg(1 << 20);

}  // namespace
}  // namespace ringmail::proto
