/// sink_options.h — ringmail-sink's command line: the option set, its
/// parser and the --help text.
///
/// Pure: parsing touches no socket and no file; addresses are numeric
/// literals only (no DNS). Used once by main() before any thread starts.
/// Every option is documented where it is declared and in kSinkUsage.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/message_body.h"
#include "proto/result.h"

namespace ringmail::tools {

/// The --help text (also names the magic envelope local parts).
extern const char* const kSinkUsage;

/// One --listen ADDR:PORT, already converted to a socket address.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host;  // as written, without brackets: "127.0.0.1", "::1"
  uint16_t port = 0;
  bool ipv6 = false;
};

struct SinkOptions {
  /// --listen (repeatable). Default: 127.0.0.1:0 (an ephemeral port).
  std::vector<ListenAddress> listen;
  /// --threads: worker threads, each with its own ring and its own
  /// SO_REUSEPORT socket per listen address.
  unsigned threads = 1;
  std::string port_file;   // --port-file: first bound port, written atomically
  std::string stats_file;  // --stats-file: stats JSON, written atomically
  uint32_t stats_interval_ms = 200;
  std::string dump_dir;  // --dump-dir: accepted messages as <n>.eml
  std::string rcpt_log;  // --rcpt-log: one line per accepted recipient, appended

  // What the sink advertises and accepts.
  std::string hostname = "localhost";
  bool pipelining = true;
  bool chunking = true;
  bool size = true;  // advertise SIZE (the limit applies either way)
  bool eightbitmime = true;
  bool enhanced_status_codes = true;
  bool smtputf8 = true;
  uint64_t max_message = 50ull << 20;  // SIZE value and limit; 0 = none
  size_t max_recipients = 1000;        // per transaction (452 4.5.3 above)
  proto::BareLinePolicy bare_line = proto::BareLinePolicy::kReject;

  // Per-connection bounds.
  /// --max-connections: concurrent sessions over all threads; the next one
  /// gets a 421 greeting and is closed. 0 = no limit (the fd limit still is).
  uint32_t max_connections = 0;
  /// --max-errors: error replies per session before 421 (0 = none). Off by
  /// default: fault injection produces errors on purpose.
  uint32_t max_errors = 0;
  /// --max-commands: command lines per session before 421 (0 = none). Off
  /// by default: a benchmark connection carries millions of commands.
  uint32_t max_commands = 0;
  uint32_t idle_timeout_ms = 300'000;

  // Fault injection. Ratios are shares in [0, 1], drawn from a seeded
  // generator (deterministic for a given --seed and --threads 1).
  uint64_t seed = 1;
  double defer_ratio = 0;        // 451 4.3.0 at end of data
  double reject_ratio = 0;       // 550 5.7.1 at end of data
  double drop_ratio = 0;         // close without a reply at end of data
  double rcpt_defer_ratio = 0;   // 451 4.2.1 at RCPT
  double rcpt_reject_ratio = 0;  // 550 5.1.1 at RCPT
  uint32_t delay_ms = 0;         // delay of the end-of-data reply
  uint32_t greeting_delay_ms = 0;
  bool defer_first_attempt = false;  // 451 4.7.1 the first time a recipient is seen
};

/// Parses argv[1..]. Accepts "--opt VALUE" and "--opt=VALUE". Returns
/// kInvalidArgument naming the bad option. "--help" is not handled here
/// (see wants_help).
Result<SinkOptions> parse_sink_options(std::span<const char* const> args);

/// True when -h or --help is among the arguments.
bool wants_help(std::span<const char* const> args);

/// Parses "1.2.3.4:25" or "[::1]:25" (numeric only).
Result<ListenAddress> parse_listen_address(std::string_view text);

}  // namespace ringmail::tools
