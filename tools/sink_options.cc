// ringmail-sink command line (see sink_options.h).
#include "tools/sink_options.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace ringmail::tools {

const char* const kSinkUsage =
    R"(usage: ringmail-sink [options]

An io_uring SMTP sink for tests and benchmarks. It accepts mail, stores
nothing (unless --dump-dir), counts messages and recipients exactly, and can
delay, defer, reject or drop a share of transactions.

Listening:
  --listen ADDR:PORT        IPv4 or [IPv6] literal; repeatable (default
                            127.0.0.1:0). Port 0 binds an ephemeral port. For
                            each listener one line "listening ADDR:PORT" is
                            printed on stdout once the sink accepts.
  --port-file FILE          write the first bound port to FILE (atomically)
  --threads N               worker threads, each with its own io_uring and its
                            own SO_REUSEPORT socket (default 1)
  --max-connections K       at most K concurrent sessions over all threads;
                            beyond, "421 4.7.0 too many connections" and close
                            (default 0 = no limit)
  --idle-timeout-ms N       421 4.4.2 after N ms without input (default 300000)

Capabilities (each switch changes what EHLO advertises and what is accepted):
  --hostname NAME           name in the greeting and EHLO reply (default localhost)
  --no-pipelining --no-chunking --no-size --no-8bitmime
  --no-enhancedstatuscodes --no-smtputf8
  --max-message BYTES       SIZE value and message limit (default 52428800;
                            0 = no limit); --no-size keeps the limit
  --max-recipients N        recipients per transaction (default 1000)
  --max-errors N            error replies per session before 421 (default 0 = none)
  --max-commands N          commands per session before 421 (default 0 = none)
  --bare-line=reject|normalize
                            a bare CR or LF in DATA: 550 5.6.0 (default: reject,
                            ringmail must never send one) or store it as CRLF

Faults (ratios are shares in [0,1]; deterministic for a given --seed):
  --seed S                  generator seed (default 1)
  --defer-ratio R           451 4.3.0 at end of data
  --reject-ratio R          550 5.7.1 at end of data
  --drop-ratio R            close the connection without a reply at end of data
  --rcpt-defer-ratio R      451 4.2.1 per recipient at RCPT
  --rcpt-reject-ratio R     550 5.1.1 per recipient at RCPT
  --delay-ms N              delay the end-of-data reply by N ms
  --greeting-delay-ms N     delay the 220 greeting by N ms
  --defer-first-attempt     451 4.7.1 for each recipient address the first
                            time it is seen at RCPT; accepted afterwards

Magic envelope local parts (any domain, ASCII case-insensitive; they take
precedence over the fault options above, and recipients with a magic local
part are never subject to RCPT faults):
  MAIL FROM rejectsender@   550 5.7.1 at MAIL
  RCPT TO reject@           550 5.1.1 at RCPT
  RCPT TO defer@            451 4.2.1 at RCPT
  RCPT TO full@             452 4.2.2 at RCPT
  RCPT TO disconnect-in-data@  connection closed without a reply at end of data
  RCPT TO bigreject@        552 5.3.4 at end of data (whole transaction)
  RCPT TO rejectdata@       554 5.7.1 at end of data
  RCPT TO deferdata@        451 4.3.0 at end of data
  At end of data the first that applies, in this order, wins.

Reports:
  --stats-file FILE         stats JSON, rewritten atomically every
                            --stats-interval-ms (default 200) when it changed,
                            and at exit
  --rcpt-log FILE           append every accepted recipient to FILE, one per line,
                            before the message is answered (crash tests count
                            deliveries per recipient with it)
  --dump-dir DIR            write each accepted message to DIR/<n>.eml, after
                            X-Sink-Mail-From: and X-Sink-Rcpt-To: lines
  -h, --help                this text

On SIGTERM or SIGINT the sink stops and prints one JSON line on stdout:
  {"messages":N,"recipients":N,"connections":N,"deferred":N,"rejected":N,
   "dropped":N,"rcpt_refused":N,"bytes":N,"elapsed_s":X}
messages: transactions answered 2xx at end of data; recipients: accepted
recipients of those; deferred/rejected/dropped: transactions the sink
answered 4xx/5xx or dropped at end of data; rcpt_refused: recipients the
sink refused at RCPT; bytes: bytes read from clients; elapsed_s: first
connection to last accepted message.
)";

namespace {

Error bad(std::string_view opt, std::string_view why) {
  std::string m(opt);
  m += ": ";
  m += why;
  return make_error(Errc::kInvalidArgument, std::move(m));
}

template <class T>
bool parse_number(std::string_view s, T* out) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
    return false;
  }
  *out = v;
  return true;
}

bool parse_ratio(std::string_view s, double* out) {
  // std::from_chars for double is missing from libc++ 14: strtod on a
  // bounded NUL-terminated copy instead.
  if (s.empty() || s.size() > 32) {
    return false;
  }
  char buf[33];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  char* end = nullptr;
  double v = std::strtod(buf, &end);
  if (end != buf + s.size() || !(v >= 0.0 && v <= 1.0)) {
    return false;
  }
  *out = v;
  return true;
}

// Options that take no value.
bool apply_flag(std::string_view name, SinkOptions* o) {
  struct Flag {
    const char* name;
    bool SinkOptions::*field;
    bool value;
  };
  static constexpr Flag kFlags[] = {
      {"--no-pipelining", &SinkOptions::pipelining, false},
      {"--no-chunking", &SinkOptions::chunking, false},
      {"--no-size", &SinkOptions::size, false},
      {"--no-8bitmime", &SinkOptions::eightbitmime, false},
      {"--no-enhancedstatuscodes", &SinkOptions::enhanced_status_codes, false},
      {"--no-smtputf8", &SinkOptions::smtputf8, false},
      {"--defer-first-attempt", &SinkOptions::defer_first_attempt, true},
  };
  for (const Flag& f : kFlags) {
    if (name == f.name) {
      o->*f.field = f.value;
      return true;
    }
  }
  return false;
}

// --- Options that take a value: one table row each.

using ApplyFn = Result<void> (*)(std::string_view name, std::string_view v, SinkOptions* o);

struct ValueOption {
  std::string_view name;
  ApplyFn apply;
};

template <auto kField, uint64_t kMin = 0, uint64_t kMax = UINT64_MAX>
Result<void> number(std::string_view name, std::string_view v, SinkOptions* o) {
  auto& field = o->*kField;
  if (!parse_number(v, &field) || field < kMin || field > kMax) {
    if (kMax != UINT64_MAX) {
      return bad(
          name, "expected an integer from " + std::to_string(kMin) + " to " + std::to_string(kMax));
    }
    return bad(name, kMin > 0 ? "expected a positive integer" : "expected a non-negative integer");
  }
  return ok_result();
}

template <auto kField>
Result<void> ratio(std::string_view name, std::string_view v, SinkOptions* o) {
  if (!parse_ratio(v, &(o->*kField))) {
    return bad(name, "expected a number between 0 and 1");
  }
  return ok_result();
}

template <auto kField>
Result<void> text(std::string_view name, std::string_view v, SinkOptions* o) {
  if (v.empty()) {
    return bad(name, "empty value");
  }
  o->*kField = v;
  return ok_result();
}

Result<void> listen(std::string_view name, std::string_view v, SinkOptions* o) {
  auto a = parse_listen_address(v);
  if (!a.ok()) {
    return bad(name, a.error().message);
  }
  o->listen.push_back(std::move(*a));
  return ok_result();
}

Result<void> hostname(std::string_view name, std::string_view v, SinkOptions* o) {
  if (v.empty() || v.find_first_of(" \r\n\t") != std::string_view::npos) {
    return bad(name, "expected a host name");
  }
  o->hostname = v;
  return ok_result();
}

Result<void> bare_line(std::string_view name, std::string_view v, SinkOptions* o) {
  if (v == "reject") {
    o->bare_line = proto::BareLinePolicy::kReject;
  } else if (v == "normalize") {
    o->bare_line = proto::BareLinePolicy::kNormalize;
  } else {
    return bad(name, "expected reject or normalize");
  }
  return ok_result();
}

using O = SinkOptions;
constexpr ValueOption kValueOptions[] = {
    {"--listen", &listen},
    {"--threads", &number<&O::threads, 1, 256>},
    {"--port-file", &text<&O::port_file>},
    {"--stats-file", &text<&O::stats_file>},
    {"--stats-interval-ms", &number<&O::stats_interval_ms, 1>},
    {"--dump-dir", &text<&O::dump_dir>},
    {"--rcpt-log", &text<&O::rcpt_log>},
    {"--hostname", &hostname},
    {"--bare-line", &bare_line},
    {"--max-message", &number<&O::max_message>},
    {"--max-recipients", &number<&O::max_recipients, 1>},
    {"--max-connections", &number<&O::max_connections>},
    {"--max-errors", &number<&O::max_errors>},
    {"--max-commands", &number<&O::max_commands>},
    {"--idle-timeout-ms", &number<&O::idle_timeout_ms, 1>},
    {"--seed", &number<&O::seed>},
    {"--defer-ratio", &ratio<&O::defer_ratio>},
    {"--reject-ratio", &ratio<&O::reject_ratio>},
    {"--drop-ratio", &ratio<&O::drop_ratio>},
    {"--rcpt-defer-ratio", &ratio<&O::rcpt_defer_ratio>},
    {"--rcpt-reject-ratio", &ratio<&O::rcpt_reject_ratio>},
    {"--delay-ms", &number<&O::delay_ms>},
    {"--greeting-delay-ms", &number<&O::greeting_delay_ms>},
};

Result<void> apply_option(std::string_view name, std::string_view v, SinkOptions* o) {
  for (const ValueOption& opt : kValueOptions) {
    if (name == opt.name) {
      return opt.apply(name, v, o);
    }
  }
  return bad(name, "unknown option (see --help)");
}

}  // namespace

bool wants_help(std::span<const char* const> args) {
  for (const char* a : args) {
    if (std::strcmp(a, "-h") == 0 || std::strcmp(a, "--help") == 0) {
      return true;
    }
  }
  return false;
}

Result<ListenAddress> parse_listen_address(std::string_view text) {
  ListenAddress a;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_error(Errc::kInvalidArgument, "expected [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    a.ipv6 = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return make_error(Errc::kInvalidArgument, "expected ADDR:PORT");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (!parse_number(port, &a.port)) {
    return make_error(Errc::kInvalidArgument, "bad port");
  }
  a.host = host;
  if (a.ipv6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&a.addr);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(a.port);
    if (inet_pton(AF_INET6, a.host.c_str(), &sa->sin6_addr) != 1) {
      return make_error(Errc::kInvalidArgument, "bad IPv6 address");
    }
    a.addr_len = sizeof(sockaddr_in6);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&a.addr);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(a.port);
    if (inet_pton(AF_INET, a.host.c_str(), &sa->sin_addr) != 1) {
      return make_error(Errc::kInvalidArgument, "bad IPv4 address");
    }
    a.addr_len = sizeof(sockaddr_in);
  }
  return a;
}

Result<SinkOptions> parse_sink_options(std::span<const char* const> args) {
  SinkOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (apply_flag(arg, &o)) {
      continue;
    }
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      return bad(arg, "unexpected argument (see --help)");
    }
    std::string_view name = arg;
    std::string_view value;
    size_t eq = arg.find('=');
    if (eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return bad(arg, "missing value");
    }
    RM_TRY(apply_option(name, value, &o));
  }
  if (o.defer_ratio + o.reject_ratio + o.drop_ratio > 1.0 + 1e-9) {
    return bad("--defer-ratio/--reject-ratio/--drop-ratio", "shares add up to more than 1");
  }
  if (o.rcpt_defer_ratio + o.rcpt_reject_ratio > 1.0 + 1e-9) {
    return bad("--rcpt-defer-ratio/--rcpt-reject-ratio", "shares add up to more than 1");
  }
  if (o.listen.empty()) {
    auto def = parse_listen_address("127.0.0.1:0");
    o.listen.push_back(std::move(*def));
  }
  return o;
}

}  // namespace ringmail::tools
