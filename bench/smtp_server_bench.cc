// Server session cost per message (what ringmail-sink pays), and the raw
// command parser.
#include <benchmark/benchmark.h>

#include <string>

#include "proto/smtp_server.h"

namespace ringmail::proto {
namespace {

// Feeds one client write and accepts every decision.
void drive(ServerSession& s, std::string_view bytes) {
  while (true) {
    ServerSession::FeedResult r = s.feed(std::span<const char>(bytes.data(), bytes.size()));
    bytes.remove_prefix(r.consumed);
    if (r.action == ServerSession::Action::kDecide) {
      s.accept();
      continue;
    }
    if (r.action == ServerSession::Action::kFlush) {
      s.consume_output(s.output().size());
      continue;
    }
    break;
  }
  s.consume_output(s.output().size());
}

// One connection, `messages` pipelined transactions of 2 KB with `rcpts` recipients.
void BM_SessionTransactions(benchmark::State& state) {
  const int rcpts = static_cast<int>(state.range(0));
  const bool keep_body = state.range(1) != 0;
  std::string group = "MAIL FROM:<sender@example.com> SIZE=2048\r\n";
  for (int i = 0; i < rcpts; ++i) {
    group += "RCPT TO:<user" + std::to_string(i) + "@example.net>\r\n";
  }
  group += "DATA\r\n";
  std::string body;
  while (body.size() < 2048) {
    body += "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
  }
  body += ".\r\n";
  ServerConfig config;
  config.keep_body = keep_body;
  size_t messages = 0;
  for (auto _ : state) {
    state.PauseTiming();
    ServerSession s(config);
    s.start();
    drive(s, "EHLO client.example\r\n");
    state.ResumeTiming();
    for (int m = 0; m < 100; ++m) {
      drive(s, group);
      drive(s, body);
    }
    drive(s, "QUIT\r\n");
    messages += 100;
  }
  state.SetItemsProcessed(static_cast<int64_t>(messages));
}
// Args: recipients per message, keep_body.
BENCHMARK(BM_SessionTransactions)->Args({1, 0})->Args({1, 1})->Args({50, 0});

void BM_CommandParser(benchmark::State& state) {
  const std::string wire =
      "MAIL FROM:<sender@example.com> SIZE=12345 BODY=8BITMIME\r\n"
      "RCPT TO:<first.last@example.net> NOTIFY=FAILURE\r\nRCPT TO:<x@example.org>\r\nDATA\r\n";
  CommandParser p;
  for (auto _ : state) {
    std::span<const char> rest(wire.data(), wire.size());
    while (!rest.empty()) {
      ParseResult r = p.parse(rest);
      benchmark::DoNotOptimize(p.command().verb);
      rest = rest.subspan(r.consumed);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 4));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire.size()));
}
BENCHMARK(BM_CommandParser);

}  // namespace
}  // namespace ringmail::proto
