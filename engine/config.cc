#include "engine/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/provider_rules.h"
#include "proto/address.h"

namespace ringmail::engine {
namespace {

/// A configuration file is a few kilobytes; this only stops a wrong path
/// (a device, a log file) from being read into memory whole.
constexpr size_t kMaxConfigBytes = 16u << 20;

/// Rates outside these bounds are typing mistakes: far below one a day the
/// token bucket's wait for its next token overflows the clock, and a
/// destination that takes a million messages a second needs no limit.
constexpr double kMinRatePerSecond = 1.0 / 86400;
constexpr double kMaxRatePerSecond = 1'000'000;

constexpr std::string_view kDefaultConfig = R"(# ringmail built-in default configuration.
# Every key is documented in docs/configuration.md.

log_level = "info"

[engine]
shards = 0                 # one shard per online CPU
ring_entries = 1024
shutdown_grace = "10s"
user = ""                  # run as this user once sockets are bound ("" = as started)
group = ""                 # default: the user's primary group

[ingest]
socket = "ringmail.sock"   # relative to the working directory
socket_mode = "0660"
allowed_users = []         # besides the file mode: SO_PEERCRED users (names or uids)
allowed_groups = []        #   and groups; both empty: anyone who can open the socket
max_frame_bytes = "128MiB"
max_message_bytes = "32MiB"
max_recipients = 1000000
max_connections = 256
frame_timeout = "60s"
max_subscriber_backlog = "64MiB"
max_buffered_bytes = "256MiB"  # frame bytes buffered over all clients
hello_timeout = "10s"
idle_timeout = "5m"        # a client with nothing in progress is closed

[control]
enabled = true             # ringmail-ctl's socket: operator commands, all events
socket = ""                # "" = next to ingest.socket: ringmail-ctl.sock
socket_mode = "0600"
allowed_users = []         # root and ringmail's own user always; these besides
allowed_groups = []

[events]
file = "ringmail-events.jsonl"

[delivery]
ehlo_name = ""             # empty: the machine's host name
port = 25                  # port for MX delivery
max_rcpts_per_txn = 100
max_msgs_per_conn = 1000
max_conns_per_destination = 10
max_pipelined_txns = 4
max_connecting = 256       # per shard: connections being set up at once (all destinations)
pipelining = true
chunking = true
msg_rate = ""              # per source and destination, e.g. "100/s"; "" = unlimited
connect_rate = ""          # new connections per source and destination
backoff = "5m"             # how long a throttled destination backs off
backoff_after = 10         # throttling replies (4.7.x, "rate limit") within
backoff_window = "1m"      #   this window that start a backoff; 421 and
                           #   refused connections back off at once
tls = "opportunistic"      # none | opportunistic | required | verify

[delivery.timeouts]
connect = "30s"
greeting = "300s"
ehlo = "300s"
mail = "300s"
rcpt = "300s"
data_init = "120s"
data_block = "180s"
data_done = "600s"
rset = "20s"
quit = "10s"
idle = "5s"

[routing]
# The demo default: everything to a local sink. Production: default = "mx".
default = "127.0.0.1:2525"

[dns]
servers = []               # empty: the system's /etc/resolv.conf
timeout = "5s"
tries = 2
ttl_floor = "30s"
ttl_ceiling = "1d"
negative_ttl = "5m"
error_ttl = "30s"
prefer = "ipv4"
max_mx = 10
max_addresses = 10
allow_loopback = false
max_inflight = 100
cache_size = 100000

[retry]
schedule = ["1m", "5m", "15m", "30m", "1h"]
max_age = "5d"
jitter_percent = 10

[bounces]
dsn = false                # RFC 3464 reports to envelope senders
dsn_delay = "30s"

[limits]
max_queued_recipients = 10000000
max_queued_bytes = "2GiB"

[spool]
mode = "sync"              # off | async | sync (acknowledge after fsync)
dir = "spool"              # relative to the working directory
segment_size = "64MiB"
async_interval = "100ms"
compact_percent = 25

[tls]
ca_file = "/etc/ssl/certs/ca-certificates.crt"
min_version = "1.2"
handshake_timeout = "30s"
session_resumption = true

[submission]
# No listeners by default; add [[submission.listeners]] tables.
hostname = ""
credentials_file = ""
trusted_networks = []
max_message_bytes = "32MiB"
max_recipients = 1000
max_line = 2048
max_commands = 10000
max_errors = 20
idle_timeout = "300s"
command_timeout = "60s"
data_min_rate = "1KiB"     # bytes per second, after data_rate_grace
data_rate_grace = "30s"
max_sessions = 1000
max_sessions_per_ip = 20
reclaim_idle_after = "10s"
tls_handshake_timeout = "10s"
max_tls_handshakes = 100
auth_fail_limit = 5
auth_fail_window = "60s"

[http]
listen = ""                # "127.0.0.1:9100": /metrics and /api/inject/v1; "" = off
api_tokens_file = ""       # bearer tokens for /api/inject/v1, one per line; "" = no injection
max_connections = 64
max_body_bytes = "32MiB"
header_timeout = "10s"     # the request head must be complete this long after its first byte
body_min_rate = "64KiB"    # bytes per second the body must keep up after header_timeout
idle_timeout = "60s"       # a keep-alive connection waiting for its next request
metrics_destinations = 50  # destinations with their own label in /metrics; the rest: "other"

[suppression]
enabled = true
invalid_ttl = "30d"
unsubscribe_ttl = "0s"     # 0s: until an operator removes it
file = ""
flush_interval = "1s"      # new entries reach `file` this often (and at shutdown)

[provider_shaping]
builtin = true             # ringmail's rules for the big mailbox providers
files = []                 # rules files in KumoMTA's shaping.toml shape, merged in order
)";

bool valid_cidr(const std::string& text) {
  size_t slash = text.find('/');
  std::string ip = text.substr(0, slash);
  unsigned char buf[16];
  int bits = 32;
  if (inet_pton(AF_INET, ip.c_str(), buf) != 1) {
    if (inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
      return false;
    }
    bits = 128;
  }
  if (slash == std::string::npos) {
    return true;
  }
  int len = -1;
  auto [p, ec] = std::from_chars(text.data() + slash + 1, text.data() + text.size(), len);
  return ec == std::errc() && p == text.data() + text.size() && len >= 0 && len <= bits;
}

/// Reads one TOML table, remembering which keys were used so unknown ones
/// can be reported by their full name.
class Section {
 public:
  Section(const toml::table* table, std::string prefix)
      : table_(table), prefix_(std::move(prefix)) {}

  std::string name(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  const toml::node* get(std::string_view key) {
    used_.insert(std::string(key));
    return table_ == nullptr ? nullptr : table_->get(key);
  }

  Error bad(std::string_view key, std::string_view what) const {
    return make_error(Errc::kConfig, name(key) + ": " + std::string(what));
  }

  Result<void> str(std::string_view key, std::string* out) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    auto v = n->value<std::string>();
    if (!v || !n->is_string()) {
      return bad(key, "must be a string");
    }
    *out = *v;
    return ok_result();
  }

  Result<void> boolean(std::string_view key, bool* out) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    if (!n->is_boolean()) {
      return bad(key, "must be true or false");
    }
    *out = *n->value<bool>();
    return ok_result();
  }

  template <class T>
  Result<void> integer(std::string_view key, T* out, uint64_t min, uint64_t max) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    if (!n->is_integer()) {
      return bad(key, "must be an integer");
    }
    int64_t v = *n->value<int64_t>();
    if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max) {
      return bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                          ", got " + std::to_string(v));
    }
    *out = static_cast<T>(v);
    return ok_result();
  }

  /// An integer number of bytes, or a string with a KiB/MiB/GiB suffix.
  template <class T>
  Result<void> bytes(std::string_view key, T* out, uint64_t min, uint64_t max) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    uint64_t v = 0;
    if (n->is_integer()) {
      int64_t i = *n->value<int64_t>();
      if (i < 0) {
        return bad(key, "must not be negative");
      }
      v = static_cast<uint64_t>(i);
    } else if (n->is_string()) {
      std::string s = *n->value<std::string>();
      uint64_t mult = 1;
      std::string_view num = s;
      for (auto [suffix, m] : {std::pair<std::string_view, uint64_t>{"KiB", 1ull << 10},
                               {"MiB", 1ull << 20},
                               {"GiB", 1ull << 30}}) {
        if (num.size() > suffix.size() && num.ends_with(suffix)) {
          num.remove_suffix(suffix.size());
          mult = m;
          break;
        }
      }
      auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (ec != std::errc() || p != num.data() + num.size() || v > (~uint64_t{0}) / mult) {
        return bad(key, "must be a byte count such as 1048576 or \"32MiB\", got \"" + s + "\"");
      }
      v *= mult;
    } else {
      return bad(key, "must be a byte count such as 1048576 or \"32MiB\"");
    }
    if (v < min || v > max) {
      return bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                          " bytes, got " + std::to_string(v));
    }
    *out = static_cast<T>(v);
    return ok_result();
  }

  Result<void> duration(std::string_view key, Millis* out, Millis min, Millis max) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    if (!n->is_string()) {
      return bad(key, "must be a duration string such as \"30s\", \"5m\" or \"250ms\"");
    }
    auto d = parse_duration(*n->value<std::string>());
    if (!d.ok()) {
      return bad(key, d.error().message);
    }
    if (*d < min || *d > max) {
      return bad(key, "must be between " + std::to_string(min.count()) + "ms and " +
                          std::to_string(max.count()) + "ms");
    }
    *out = *d;
    return ok_result();
  }

  Result<Section> sub(std::string_view key) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return Section(nullptr, name(key));
    }
    if (!n->is_table()) {
      return bad(key, "must be a table");
    }
    return Section(n->as_table(), name(key));
  }

  /// An array of tables ([[key]]); each element is a Section named key[i].
  Result<std::vector<Section>> tables(std::string_view key) {
    const toml::node* n = get(key);
    std::vector<Section> out;
    if (n == nullptr) {
      return out;
    }
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      return bad(key, "must be an array of tables ([[" + std::string(key) + "]])");
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::table* t = (*arr)[i].as_table();
      if (t == nullptr) {
        return bad(key, "must be an array of tables ([[" + std::string(key) + "]])");
      }
      out.emplace_back(t, name(key) + "[" + std::to_string(i) + "]");
    }
    return out;
  }

  Result<void> rate(std::string_view key, Rate* out) {
    std::string text;
    bool present = get(key) != nullptr;
    RM_TRY(str(key, &text));
    if (!present) {
      return ok_result();
    }
    auto r = parse_rate(text);
    if (!r.ok()) {
      return bad(key, r.error().message);
    }
    *out = *r;
    return ok_result();
  }

  Result<void> durations(std::string_view key, std::vector<Millis>* out) {
    const toml::node* n = get(key);
    if (n == nullptr) {
      return ok_result();
    }
    const toml::array* arr = n->as_array();
    if (arr == nullptr || arr->empty()) {
      return bad(key, "must be a non-empty array of durations");
    }
    out->clear();
    for (const auto& item : *arr) {
      auto v = item.value<std::string>();
      if (!v) {
        return bad(key, "must contain duration strings such as \"5m\"");
      }
      auto d = parse_duration(*v);
      if (!d.ok()) {
        return bad(key, d.error().message);
      }
      if (*d < Millis(1)) {
        return bad(key, "retry intervals must be positive");
      }
      out->push_back(*d);
    }
    return ok_result();
  }

  bool has(std::string_view key) const { return table_ != nullptr && table_->contains(key); }

  /// Every key present but never asked for is an error.
  Result<void> finish() const {
    if (table_ == nullptr) {
      return ok_result();
    }
    for (auto&& [k, v] : *table_) {
      if (!used_.contains(std::string(k.str()))) {
        return make_error(Errc::kConfig, "unknown key '" + name(k.str()) + "'");
      }
    }
    return ok_result();
  }

  const toml::table* table() const { return table_; }

 private:
  const toml::table* table_;
  std::string prefix_;
  std::set<std::string> used_;
};

Result<void> read_engine(Section& s, EngineConfig* e) {
  RM_TRY(s.integer("shards", &e->shards, 0, 256));
  RM_TRY(s.integer("ring_entries", &e->ring_entries, 64, 32768));
  RM_TRY(s.duration("shutdown_grace", &e->shutdown_grace, Millis(0), Millis(3'600'000)));
  RM_TRY(s.str("user", &e->user));
  RM_TRY(s.str("group", &e->group));
  if (!e->user.empty()) {
    errno = 0;
    if (::getpwnam(e->user.c_str()) == nullptr) {
      return s.bad("user", "no such user: " + e->user);
    }
  }
  if (!e->group.empty()) {
    if (e->user.empty()) {
      return s.bad("group", "needs engine.user");
    }
    if (::getgrnam(e->group.c_str()) == nullptr) {
      return s.bad("group", "no such group: " + e->group);
    }
  }
  return s.finish();
}

Result<void> read_socket_mode(Section& s, uint32_t* out) {
  std::string mode;
  RM_TRY(s.str("socket_mode", &mode));
  if (!mode.empty()) {
    uint32_t m = 0;
    auto [p, ec] = std::from_chars(mode.data(), mode.data() + mode.size(), m, 8);
    if (ec != std::errc() || p != mode.data() + mode.size() || m > 0777) {
      return s.bad("socket_mode", "must be an octal mode string such as \"0660\"");
    }
    *out = m;
  }
  return ok_result();
}

/// allowed_users / allowed_groups: names or numeric ids, resolved now.
Result<void> read_peers(Section& s, PeerPolicy* p) {
  for (bool users : {true, false}) {
    const char* key = users ? "allowed_users" : "allowed_groups";
    const toml::node* n = s.get(key);
    if (n == nullptr) {
      continue;
    }
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      return s.bad(key, "must be an array of names or numeric ids");
    }
    std::vector<uint32_t>& out = users ? p->uids : p->gids;
    out.clear();
    for (const auto& item : *arr) {
      if (auto id = item.value<int64_t>(); id && item.is_integer()) {
        if (*id < 0 || *id > 0xFFFFFFFE) {
          return s.bad(key, "ids must be between 0 and 4294967294");
        }
        out.push_back(static_cast<uint32_t>(*id));
        continue;
      }
      auto name = item.value<std::string>();
      if (!name || !item.is_string()) {
        return s.bad(key, "must be an array of names or numeric ids");
      }
      if (users) {
        const passwd* pw = ::getpwnam(name->c_str());
        if (pw == nullptr) {
          return s.bad(key, "no such user: " + *name);
        }
        out.push_back(pw->pw_uid);
      } else {
        const group* gr = ::getgrnam(name->c_str());
        if (gr == nullptr) {
          return s.bad(key, "no such group: " + *name);
        }
        out.push_back(gr->gr_gid);
      }
    }
  }
  return ok_result();
}

Result<void> read_control(Section& s, ControlConfig* c) {
  RM_TRY(s.boolean("enabled", &c->enabled));
  RM_TRY(s.str("socket", &c->socket));
  RM_TRY(read_socket_mode(s, &c->socket_mode));
  RM_TRY(read_peers(s, &c->peers));
  return s.finish();
}

Result<void> read_ingest(Section& s, IngestConfig* i) {
  RM_TRY(s.str("socket", &i->socket));
  RM_TRY(read_socket_mode(s, &i->socket_mode));
  RM_TRY(read_peers(s, &i->peers));
  RM_TRY(s.bytes("max_frame_bytes", &i->max_frame_bytes, 1024, 1ull << 31));
  RM_TRY(s.bytes("max_message_bytes", &i->max_message_bytes, 1024, 1ull << 30));
  RM_TRY(s.integer("max_recipients", &i->max_recipients, 1, 10'000'000));
  RM_TRY(s.integer("max_connections", &i->max_connections, 1, 100'000));
  RM_TRY(s.duration("frame_timeout", &i->frame_timeout, Millis(100), Millis(3'600'000)));
  RM_TRY(s.bytes("max_subscriber_backlog", &i->max_subscriber_backlog, 64 * 1024, 1ull << 34));
  RM_TRY(s.bytes("max_buffered_bytes", &i->max_buffered_bytes, 64 * 1024, 1ull << 40));
  RM_TRY(s.duration("hello_timeout", &i->hello_timeout, Millis(100), Millis(3'600'000)));
  RM_TRY(s.duration("idle_timeout", &i->idle_timeout, Millis(100), Millis(86'400'000)));
  if (i->max_message_bytes > i->max_frame_bytes) {
    return s.bad("max_message_bytes", "must not exceed ingest.max_frame_bytes");
  }
  return s.finish();
}

Result<void> read_timeouts(Section& s, SmtpTimeouts* t) {
  const Millis lo(10), hi(3'600'000);
  RM_TRY(s.duration("connect", &t->connect, lo, hi));
  RM_TRY(s.duration("greeting", &t->greeting, lo, hi));
  RM_TRY(s.duration("ehlo", &t->ehlo, lo, hi));
  RM_TRY(s.duration("mail", &t->mail, lo, hi));
  RM_TRY(s.duration("rcpt", &t->rcpt, lo, hi));
  RM_TRY(s.duration("data_init", &t->data_init, lo, hi));
  RM_TRY(s.duration("data_block", &t->data_block, lo, hi));
  RM_TRY(s.duration("data_done", &t->data_done, lo, hi));
  RM_TRY(s.duration("rset", &t->rset, lo, hi));
  RM_TRY(s.duration("quit", &t->quit, lo, hi));
  RM_TRY(s.duration("idle", &t->idle, Millis(0), hi));
  return s.finish();
}

std::optional<TlsPolicy> parse_tls_policy(std::string_view s) {
  if (s == "none") {
    return TlsPolicy::kNone;
  }
  if (s == "opportunistic") {
    return TlsPolicy::kOpportunistic;
  }
  if (s == "required") {
    return TlsPolicy::kRequired;
  }
  if (s == "verify") {
    return TlsPolicy::kVerify;
  }
  return std::nullopt;
}

Result<void> read_delivery(Section& s, DeliveryConfig* d) {
  RM_TRY(s.str("ehlo_name", &d->ehlo_name));
  RM_TRY(s.integer("port", &d->port, 1, 65535));
  if (!d->ehlo_name.empty()) {
    auto v = proto::validate_domain(d->ehlo_name);
    if (!v.ok()) {
      return s.bad("ehlo_name", v.error().message);
    }
  }
  RM_TRY(s.integer("max_rcpts_per_txn", &d->max_rcpts_per_txn, 1, 1000));
  RM_TRY(s.integer("max_msgs_per_conn", &d->max_msgs_per_conn, 1, 1'000'000));
  RM_TRY(s.integer("max_conns_per_destination", &d->max_conns_per_destination, 1, 10'000));
  RM_TRY(s.integer("max_pipelined_txns", &d->max_pipelined_txns, 1, 64));
  RM_TRY(s.integer("max_connecting", &d->max_connecting, 1, 100'000));
  RM_TRY(s.rate("msg_rate", &d->msg_rate));
  RM_TRY(s.rate("connect_rate", &d->connect_rate));
  RM_TRY(s.duration("backoff", &d->backoff, Millis(0), Millis(86'400'000)));
  RM_TRY(s.integer("backoff_after", &d->backoff_after, 1, 100'000));
  RM_TRY(s.duration("backoff_window", &d->backoff_window, Millis(1'000), Millis(86'400'000)));
  std::string tls;
  RM_TRY(s.str("tls", &tls));
  if (!tls.empty()) {
    auto p = parse_tls_policy(tls);
    if (!p) {
      return s.bad("tls", "must be one of none, opportunistic, required, verify");
    }
    d->tls = *p;
  }
  RM_TRY(s.boolean("pipelining", &d->pipelining));
  RM_TRY(s.boolean("chunking", &d->chunking));
  auto t = s.sub("timeouts");
  RM_TRY(t);
  RM_TRY(read_timeouts(*t, &d->timeouts));
  return s.finish();
}

Result<void> read_routing(Section& s, RoutingConfig* r) {
  std::string def;
  RM_TRY(s.str("default", &def));
  if (!def.empty()) {
    auto route = parse_route(def);
    if (!route.ok()) {
      return s.bad("default", route.error().message);
    }
    r->default_route = std::move(*route);
  }
  auto domains = s.sub("domains");
  RM_TRY(domains);
  if (domains->table() != nullptr) {
    r->domains.clear();
    for (auto&& [k, v] : *domains->table()) {
      std::string key(k.str());
      const toml::node* n = domains->get(key);
      if (!n->is_string()) {
        return domains->bad(key, "must be a route string such as \"10.0.0.1:25\"");
      }
      std::string_view dom = key;
      bool wildcard = dom.starts_with("*.");
      auto valid = proto::validate_domain(wildcard ? dom.substr(2) : dom);
      if (!valid.ok()) {
        return domains->bad(key, "is not a domain: " + valid.error().message);
      }
      auto route = parse_route(*n->value<std::string>());
      if (!route.ok()) {
        return domains->bad(key, route.error().message);
      }
      r->domains.push_back(DomainRoute{proto::normalize_domain(key), std::move(*route)});
    }
    RM_TRY(domains->finish());
  }
  if (r->default_route.hosts.empty()) {
    return s.bad("default", "a default route is required (\"mx\" for DNS MX routing)");
  }
  return s.finish();
}

Result<void> read_dns(Section& s, DnsConfig* d) {
  const toml::node* n = s.get("servers");
  if (n != nullptr) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      return s.bad("servers", "must be an array of \"ip[:port]\" strings");
    }
    d->servers.clear();
    for (const auto& item : *arr) {
      auto v = item.value<std::string>();
      if (!v) {
        return s.bad("servers", "must contain \"ip[:port]\" strings");
      }
      auto ep = parse_endpoint(*v, 53);
      if (!ep.ok() || ep->kind != Endpoint::Kind::kAddress) {
        return s.bad("servers", "\"" + *v + "\" is not an IP address with an optional port");
      }
      d->servers.push_back(*v);
    }
  }
  RM_TRY(s.duration("timeout", &d->timeout, Millis(10), Millis(120'000)));
  RM_TRY(s.integer("tries", &d->tries, 1, 10));
  RM_TRY(s.duration("ttl_floor", &d->ttl_floor, Millis(0), Millis(86'400'000)));
  RM_TRY(s.duration("ttl_ceiling", &d->ttl_ceiling, Millis(1'000), Millis(7LL * 86'400'000)));
  RM_TRY(s.duration("negative_ttl", &d->negative_ttl, Millis(0), Millis(86'400'000)));
  RM_TRY(s.duration("error_ttl", &d->error_ttl, Millis(0), Millis(3'600'000)));
  std::string prefer;
  RM_TRY(s.str("prefer", &prefer));
  if (prefer == "ipv4" || prefer.empty()) {
    d->prefer = AddressPreference::kIpv4;
  } else if (prefer == "ipv6") {
    d->prefer = AddressPreference::kIpv6;
  } else if (prefer == "ipv4_only") {
    d->prefer = AddressPreference::kIpv4Only;
  } else if (prefer == "ipv6_only") {
    d->prefer = AddressPreference::kIpv6Only;
  } else {
    return s.bad("prefer", "must be one of ipv4, ipv6, ipv4_only, ipv6_only");
  }
  RM_TRY(s.integer("max_mx", &d->max_mx, 1, 100));
  RM_TRY(s.integer("max_addresses", &d->max_addresses, 1, 100));
  RM_TRY(s.boolean("allow_loopback", &d->allow_loopback));
  RM_TRY(s.integer("max_inflight", &d->max_inflight, 1, 100'000));
  RM_TRY(s.integer("cache_size", &d->cache_size, 16, 10'000'000));
  if (d->ttl_floor > d->ttl_ceiling) {
    return s.bad("ttl_floor", "must not exceed dns.ttl_ceiling");
  }
  return s.finish();
}

Result<void> read_retry(Section& s, RetryConfig* r) {
  RM_TRY(s.durations("schedule", &r->schedule));
  RM_TRY(s.duration("max_age", &r->max_age, Millis(1'000), Millis(90LL * 24 * 3600 * 1000)));
  RM_TRY(s.integer("jitter_percent", &r->jitter_percent, 0, 50));
  return s.finish();
}

Result<void> read_shaping(Section& root, Config* c) {
  auto rules = root.tables("shaping");
  RM_TRY(rules);
  for (Section& s : *rules) {
    ShapingRule r;
    RM_TRY(s.str("match", &r.match));
    if (r.match.empty()) {
      return s.bad("match", "is required: a domain, \"*.suffix\" or \"*\"");
    }
    if (r.match != "*") {
      std::string_view m = r.match;
      auto valid = proto::validate_domain(m.starts_with("*.") ? m.substr(2) : m);
      if (!valid.ok()) {
        return s.bad("match", "is not a domain pattern: " + valid.error().message);
      }
      r.match = proto::normalize_domain(r.match);
    }
    auto opt_u32 = [&](std::string_view key, std::optional<uint32_t>* out, uint32_t lo,
                       uint32_t hi) -> Result<void> {
      if (!s.has(key)) {
        s.get(key);
        return ok_result();
      }
      uint32_t v = 0;
      RM_TRY(s.integer(key, &v, lo, hi));
      *out = v;
      return ok_result();
    };
    RM_TRY(opt_u32("max_connections", &r.max_connections, 1, 10'000));
    RM_TRY(opt_u32("max_msgs_per_conn", &r.max_msgs_per_conn, 1, 1'000'000));
    RM_TRY(opt_u32("max_rcpts_per_txn", &r.max_rcpts_per_txn, 1, 1000));
    if (s.has("msg_rate")) {
      Rate rate;
      RM_TRY(s.rate("msg_rate", &rate));
      r.msg_rate = rate;
    }
    if (s.has("connect_rate")) {
      Rate rate;
      RM_TRY(s.rate("connect_rate", &rate));
      r.connect_rate = rate;
    }
    if (s.has("backoff")) {
      Millis d{0};
      RM_TRY(s.duration("backoff", &d, Millis(0), Millis(86'400'000)));
      r.backoff = d;
    }
    RM_TRY(opt_u32("backoff_after", &r.backoff_after, 1, 100'000));
    if (s.has("backoff_window")) {
      Millis d{0};
      RM_TRY(s.duration("backoff_window", &d, Millis(1'000), Millis(86'400'000)));
      r.backoff_window = d;
    }
    if (s.has("max_age")) {
      Millis d{0};
      RM_TRY(s.duration("max_age", &d, Millis(1'000), Millis(90LL * 86'400'000)));
      r.max_age = d;
    }
    if (s.has("retry_schedule")) {
      std::vector<Millis> v;
      RM_TRY(s.durations("retry_schedule", &v));
      r.retry_schedule = std::move(v);
    }
    if (s.has("tls")) {
      std::string v;
      RM_TRY(s.str("tls", &v));
      auto p = parse_tls_policy(v);
      if (!p) {
        return s.bad("tls", "must be one of none, opportunistic, required, verify");
      }
      r.tls = *p;
    }
    auto opt_bool = [&](std::string_view key, std::optional<bool>* out) -> Result<void> {
      if (!s.has(key)) {
        s.get(key);
        return ok_result();
      }
      bool v = false;
      RM_TRY(s.boolean(key, &v));
      *out = v;
      return ok_result();
    };
    auto opt_str = [&](std::string_view key, std::optional<std::string>* out) -> Result<void> {
      if (!s.has(key)) {
        s.get(key);
        return ok_result();
      }
      std::string v;
      RM_TRY(s.str(key, &v));
      *out = v;
      return ok_result();
    };
    RM_TRY(opt_bool("implicit_tls", &r.implicit_tls));
    RM_TRY(opt_str("auth_user", &r.auth_user));
    RM_TRY(opt_str("auth_password", &r.auth_password));
    RM_TRY(opt_bool("auth_plaintext", &r.auth_plaintext));
    if (r.auth_user.has_value() != r.auth_password.has_value()) {
      return s.bad("auth_user", "auth_user and auth_password go together");
    }
    RM_TRY(s.finish());
    c->shaping.push_back(std::move(r));
  }
  return ok_result();
}

Result<void> parse_bind(Section& s, std::string_view key, bool v6, SourceConfig* src) {
  std::string text;
  RM_TRY(s.str(key, &text));
  if (text.empty()) {
    return ok_result();
  }
  sockaddr_storage& ss = v6 ? src->bind_v6 : src->bind_v4;
  std::memset(&ss, 0, sizeof ss);
  if (!v6) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    if (inet_pton(AF_INET, text.c_str(), &a->sin_addr) != 1) {
      return s.bad(key, "must be an IPv4 address");
    }
    a->sin_family = AF_INET;
    src->has_v4 = true;
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET6, text.c_str(), &a->sin6_addr) != 1) {
      return s.bad(key, "must be an IPv6 address");
    }
    a->sin6_family = AF_INET6;
    src->has_v6 = true;
  }
  return ok_result();
}

Result<void> read_egress(Section& root, Config* c) {
  EgressConfig& e = c->egress;
  auto sources = root.tables("sources");
  RM_TRY(sources);
  for (Section& s : *sources) {
    SourceConfig src;
    RM_TRY(s.str("name", &src.name));
    if (src.name.empty()) {
      return s.bad("name", "is required");
    }
    for (const auto& other : e.sources) {
      if (other.name == src.name) {
        return s.bad("name", "\"" + src.name + "\" is defined twice");
      }
    }
    RM_TRY(parse_bind(s, "bind", false, &src));
    RM_TRY(parse_bind(s, "bind6", true, &src));
    RM_TRY(s.str("ehlo_name", &src.ehlo_name));
    if (!src.ehlo_name.empty() && !proto::validate_domain(src.ehlo_name).ok()) {
      return s.bad("ehlo_name", "is not a valid host name");
    }
    RM_TRY(s.finish());
    e.sources.push_back(std::move(src));
  }
  if (e.sources.empty()) {
    SourceConfig def;
    def.name = "default";
    e.sources.push_back(def);
  }
  for (auto& src : e.sources) {
    if (src.ehlo_name.empty()) {
      src.ehlo_name = c->delivery.ehlo_name;
    }
  }
  auto pools = root.tables("pools");
  RM_TRY(pools);
  for (Section& s : *pools) {
    PoolConfig p;
    RM_TRY(s.str("name", &p.name));
    if (p.name.empty()) {
      return s.bad("name", "is required");
    }
    const toml::node* n = s.get("sources");
    const toml::array* arr = n != nullptr ? n->as_array() : nullptr;
    if (arr == nullptr || arr->empty()) {
      return s.bad("sources", "must be a non-empty array of source names");
    }
    for (const auto& item : *arr) {
      auto v = item.value<std::string>();
      uint32_t idx = 0;
      bool found = false;
      for (; v && idx < e.sources.size(); ++idx) {
        if (e.sources[idx].name == *v) {
          found = true;
          break;
        }
      }
      if (!found) {
        return s.bad("sources", "names an undefined source \"" + v.value_or("?") + "\"");
      }
      p.sources.push_back(idx);
    }
    RM_TRY(s.finish());
    e.pools.push_back(std::move(p));
  }
  if (e.pools.empty()) {
    PoolConfig def;
    def.name = "default";
    for (uint32_t i = 0; i < e.sources.size(); ++i) {
      def.sources.push_back(i);
    }
    e.pools.push_back(def);
  }
  e.default_pool = 0;
  for (uint32_t i = 0; i < e.pools.size(); ++i) {
    if (e.pools[i].name == "default") {
      e.default_pool = i;
    }
  }
  auto rules = root.tables("pool_rules");
  RM_TRY(rules);
  for (Section& s : *rules) {
    PoolRule r;
    std::string pool;
    RM_TRY(s.str("sender_domain", &r.sender_domain));
    RM_TRY(s.str("pool", &pool));
    std::string_view m = r.sender_domain;
    if (m.empty() || !proto::validate_domain(m.starts_with("*.") ? m.substr(2) : m).ok()) {
      return s.bad("sender_domain", "must be a domain or \"*.suffix\"");
    }
    r.sender_domain = proto::normalize_domain(r.sender_domain);
    bool found = false;
    for (uint32_t i = 0; i < e.pools.size(); ++i) {
      if (e.pools[i].name == pool) {
        r.pool = i;
        found = true;
      }
    }
    if (!found) {
      return s.bad("pool", "names an undefined pool \"" + pool + "\"");
    }
    RM_TRY(s.finish());
    e.rules.push_back(std::move(r));
  }
  return ok_result();
}

Result<void> read_spool(Section& s, SpoolConfig* c) {
  std::string mode;
  RM_TRY(s.str("mode", &mode));
  if (mode == "off") {
    c->mode = SpoolMode::kOff;
  } else if (mode == "async") {
    c->mode = SpoolMode::kAsync;
  } else if (mode == "sync" || mode.empty()) {
    c->mode = SpoolMode::kSync;
  } else {
    return s.bad("mode", "must be off, async or sync");
  }
  RM_TRY(s.str("dir", &c->dir));
  if (c->mode != SpoolMode::kOff && c->dir.empty()) {
    return s.bad("dir", "is required unless spool.mode = \"off\"");
  }
  RM_TRY(s.bytes("segment_size", &c->segment_size, 64 * 1024, 1ull << 34));
  RM_TRY(s.duration("async_interval", &c->async_interval, Millis(1), Millis(60'000)));
  RM_TRY(s.integer("compact_percent", &c->compact_percent, 0, 100));
  return s.finish();
}

Result<void> read_tls(Section& s, TlsConfig* t) {
  RM_TRY(s.str("ca_file", &t->ca_file));
  RM_TRY(s.str("min_version", &t->min_version));
  if (t->min_version != "1.2" && t->min_version != "1.3") {
    return s.bad("min_version", "must be \"1.2\" or \"1.3\"");
  }
  RM_TRY(s.duration("handshake_timeout", &t->handshake_timeout, Millis(100), Millis(600'000)));
  RM_TRY(s.boolean("session_resumption", &t->session_resumption));
  return s.finish();
}

Result<void> read_submission(Section& s, SubmissionConfig* c) {
  RM_TRY(s.str("hostname", &c->hostname));
  RM_TRY(s.str("credentials_file", &c->credentials_file));
  const toml::node* n = s.get("trusted_networks");
  if (n != nullptr) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      return s.bad("trusted_networks", "must be an array of CIDR strings");
    }
    for (const auto& item : *arr) {
      auto v = item.value<std::string>();
      if (!v || !valid_cidr(*v)) {
        return s.bad("trusted_networks", "must contain CIDRs such as \"127.0.0.0/8\"");
      }
      c->trusted_networks.push_back(*v);
    }
  }
  RM_TRY(s.bytes("max_message_bytes", &c->max_message_bytes, 1024, 1ull << 30));
  RM_TRY(s.integer("max_recipients", &c->max_recipients, 100, 100'000));
  RM_TRY(s.integer("max_line", &c->max_line, 512, 65'536));
  RM_TRY(s.integer("max_commands", &c->max_commands, 10, 10'000'000));
  RM_TRY(s.integer("max_errors", &c->max_errors, 1, 10'000));
  RM_TRY(s.duration("idle_timeout", &c->idle_timeout, Millis(100), Millis(3'600'000)));
  RM_TRY(s.integer("max_sessions", &c->max_sessions, 1, 1'000'000));
  RM_TRY(s.duration("command_timeout", &c->command_timeout, Millis(100), Millis(3'600'000)));
  RM_TRY(s.bytes("data_min_rate", &c->data_min_rate, 1, 1ull << 30));
  RM_TRY(s.duration("data_rate_grace", &c->data_rate_grace, Millis(100), Millis(3'600'000)));
  RM_TRY(s.integer("max_sessions_per_ip", &c->max_sessions_per_ip, 1, 1'000'000));
  RM_TRY(s.duration("reclaim_idle_after", &c->reclaim_idle_after, Millis(0), Millis(3'600'000)));
  RM_TRY(
      s.duration("tls_handshake_timeout", &c->tls_handshake_timeout, Millis(100), Millis(600'000)));
  RM_TRY(s.integer("max_tls_handshakes", &c->max_tls_handshakes, 1, 100'000));
  RM_TRY(s.integer("auth_fail_limit", &c->auth_fail_limit, 1, 10'000));
  RM_TRY(s.duration("auth_fail_window", &c->auth_fail_window, Millis(1'000), Millis(86'400'000)));
  auto listeners = s.tables("listeners");
  RM_TRY(listeners);
  for (Section& l : *listeners) {
    SubmissionListener sl;
    RM_TRY(l.str("listen", &sl.listen));
    auto ep = parse_endpoint(sl.listen, 587);
    if (sl.listen.empty() || !ep.ok() || ep->kind != Endpoint::Kind::kAddress) {
      return l.bad("listen", "must be an address with a port such as \"127.0.0.1:587\"");
    }
    sl.addr = ep->addr;
    sl.addr_len = ep->addr_len;
    std::string tls = "starttls";
    RM_TRY(l.str("tls", &tls));
    if (tls == "starttls") {
      sl.tls = SubmissionListener::Tls::kStartTls;
    } else if (tls == "implicit") {
      sl.tls = SubmissionListener::Tls::kImplicit;
    } else if (tls == "none") {
      sl.tls = SubmissionListener::Tls::kNone;
    } else {
      return l.bad("tls", "must be one of starttls, implicit, none");
    }
    RM_TRY(l.str("cert_file", &sl.cert_file));
    RM_TRY(l.str("key_file", &sl.key_file));
    if (sl.tls != SubmissionListener::Tls::kNone && (sl.cert_file.empty() || sl.key_file.empty())) {
      return l.bad("cert_file", "cert_file and key_file are required with tls = \"" + tls + "\"");
    }
    RM_TRY(l.finish());
    c->listeners.push_back(std::move(sl));
  }
  return s.finish();
}

Result<void> read_http(Section& s, HttpConfig* c) {
  RM_TRY(s.str("listen", &c->listen));
  if (!c->listen.empty()) {
    auto ep = parse_endpoint(c->listen, 0);
    if (!ep.ok() || ep->kind != Endpoint::Kind::kAddress || !ep->port_given || ep->port == 0) {
      return s.bad("listen", "must be an address with a port such as \"127.0.0.1:9100\"");
    }
    c->addr = ep->addr;
    c->addr_len = ep->addr_len;
  }
  RM_TRY(s.str("api_tokens_file", &c->api_tokens_file));
  RM_TRY(s.integer("max_connections", &c->max_connections, 1, 10'000));
  RM_TRY(s.bytes("max_body_bytes", &c->max_body_bytes, 1024, 1ull << 30));
  RM_TRY(s.duration("header_timeout", &c->header_timeout, Millis(100), Millis(600'000)));
  RM_TRY(s.bytes("body_min_rate", &c->body_min_rate, 1, 1ull << 30));
  RM_TRY(s.duration("idle_timeout", &c->idle_timeout, Millis(100), Millis(3'600'000)));
  RM_TRY(s.integer("metrics_destinations", &c->metrics_destinations, 0, 1000));
  return s.finish();
}

Result<void> read_dkim(Section& root, Config* c) {
  auto keys = root.tables("dkim");
  RM_TRY(keys);
  for (Section& s : *keys) {
    DkimKey k;
    RM_TRY(s.str("domain", &k.domain));
    if (k.domain.empty() || !proto::validate_domain(k.domain).ok()) {
      return s.bad("domain", "must be the signing domain (d=)");
    }
    k.domain = proto::normalize_domain(k.domain);
    RM_TRY(s.str("selector", &k.selector));
    if (k.selector.empty() || !proto::validate_domain(k.selector).ok()) {
      return s.bad("selector", "must be a DNS label sequence (s=)");
    }
    RM_TRY(s.str("key_file", &k.key_file));
    if (k.key_file.empty()) {
      return s.bad("key_file", "is required (a PEM RSA or Ed25519 private key)");
    }
    RM_TRY(s.str("canonicalization", &k.canonicalization));
    if (k.canonicalization != "relaxed/relaxed" && k.canonicalization != "relaxed/simple" &&
        k.canonicalization != "simple/simple" && k.canonicalization != "simple/relaxed") {
      return s.bad("canonicalization",
                   "must be relaxed/relaxed, relaxed/simple, simple/simple "
                   "or simple/relaxed");
    }
    const toml::node* n = s.get("headers");
    if (n != nullptr) {
      const toml::array* arr = n->as_array();
      if (arr == nullptr) {
        return s.bad("headers", "must be an array of header field names");
      }
      for (const auto& item : *arr) {
        auto v = item.value<std::string>();
        if (!v || v->empty()) {
          return s.bad("headers", "must contain header field names");
        }
        k.headers.push_back(*v);
      }
    }
    RM_TRY(s.duration("expire", &k.expire, Millis(0), Millis(365LL * 86'400'000)));
    RM_TRY(s.boolean("body_length", &k.body_length));
    RM_TRY(s.finish());
    c->dkim.push_back(std::move(k));
  }
  return ok_result();
}

Result<void> read_provider_shaping(Section& s, ProviderShapingConfig* c) {
  RM_TRY(s.boolean("builtin", &c->builtin));
  const toml::node* n = s.get("files");
  if (n != nullptr) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      return s.bad("files", "must be an array of file names");
    }
    c->files.clear();
    for (const auto& item : *arr) {
      auto f = item.value<std::string>();
      if (!f || f->empty()) {
        return s.bad("files", "must be an array of file names");
      }
      c->files.push_back(*f);
    }
  }
  std::vector<std::pair<std::string, std::string>> texts;
  if (c->builtin) {
    texts.emplace_back("<built-in provider rules>", std::string(builtin_shaping_rules()));
  }
  for (const auto& f : c->files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      return s.bad("files", "cannot read " + f);
    }
    std::ostringstream os;
    os << in.rdbuf();
    texts.emplace_back(f, os.str());
  }
  if (!texts.empty()) {
    auto rules = ProviderRules::parse(texts);
    if (!rules.ok()) {
      return s.bad("files", rules.error().message);
    }
    c->rules = std::move(*rules);
  }
  return s.finish();
}

Result<void> read_suppression(Section& s, SuppressionConfig* c) {
  RM_TRY(s.boolean("enabled", &c->enabled));
  RM_TRY(s.duration("invalid_ttl", &c->invalid_ttl, Millis(0), Millis(3650LL * 86'400'000)));
  RM_TRY(
      s.duration("unsubscribe_ttl", &c->unsubscribe_ttl, Millis(0), Millis(3650LL * 86'400'000)));
  RM_TRY(s.str("file", &c->file));
  RM_TRY(s.duration("flush_interval", &c->flush_interval, Millis(10), Millis(3'600'000)));
  return s.finish();
}

Result<Config> read_root(const toml::table& root) {
  Config c;
  Section s(&root, "");
  RM_TRY(s.str("log_level", &c.log_level));
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warning" &&
      c.log_level != "error") {
    return s.bad("log_level", "must be one of debug, info, warning, error");
  }
  auto engine = s.sub("engine");
  RM_TRY(engine);
  RM_TRY(read_engine(*engine, &c.engine));
  auto ingest = s.sub("ingest");
  RM_TRY(ingest);
  RM_TRY(read_ingest(*ingest, &c.ingest));
  auto control = s.sub("control");
  RM_TRY(control);
  RM_TRY(read_control(*control, &c.control));
  if (!c.control.enabled) {
    c.control.socket.clear();
  } else if (c.control.socket.empty() && !c.ingest.socket.empty()) {
    const std::string& in = c.ingest.socket;
    c.control.socket =
        in.ends_with(".sock") ? in.substr(0, in.size() - 5) + "-ctl.sock" : in + "-ctl";
  }
  if (!c.control.socket.empty() && c.control.socket == c.ingest.socket) {
    return control->bad("socket", "must differ from ingest.socket");
  }
  auto events = s.sub("events");
  RM_TRY(events);
  RM_TRY(events->str("file", &c.events.file));
  RM_TRY(events->finish());
  auto delivery = s.sub("delivery");
  RM_TRY(delivery);
  RM_TRY(read_delivery(*delivery, &c.delivery));
  auto routing = s.sub("routing");
  RM_TRY(routing);
  RM_TRY(read_routing(*routing, &c.routing));
  auto dns = s.sub("dns");
  RM_TRY(dns);
  RM_TRY(read_dns(*dns, &c.dns));
  auto retry = s.sub("retry");
  RM_TRY(retry);
  RM_TRY(read_retry(*retry, &c.retry));
  auto bounces = s.sub("bounces");
  RM_TRY(bounces);
  RM_TRY(bounces->boolean("dsn", &c.bounces.dsn));
  RM_TRY(bounces->duration("dsn_delay", &c.bounces.dsn_delay, Millis(0), Millis(3'600'000)));
  RM_TRY(bounces->finish());
  auto limits = s.sub("limits");
  RM_TRY(limits);
  RM_TRY(
      limits->integer("max_queued_recipients", &c.limits.max_queued_recipients, 1, 1'000'000'000));
  RM_TRY(limits->bytes("max_queued_bytes", &c.limits.max_queued_bytes, 1u << 20, 1ull << 40));
  RM_TRY(limits->finish());
  if (c.delivery.ehlo_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0 && proto::validate_domain(host).ok()) {
      c.delivery.ehlo_name = host;
    } else {
      c.delivery.ehlo_name = "localhost";
    }
  }
  auto spool = s.sub("spool");
  RM_TRY(spool);
  RM_TRY(read_spool(*spool, &c.spool));
  auto tls = s.sub("tls");
  RM_TRY(tls);
  RM_TRY(read_tls(*tls, &c.tls));
  auto submission = s.sub("submission");
  RM_TRY(submission);
  RM_TRY(read_submission(*submission, &c.submission));
  if (c.submission.hostname.empty()) {
    c.submission.hostname = c.delivery.ehlo_name;
  }
  auto http = s.sub("http");
  RM_TRY(http);
  RM_TRY(read_http(*http, &c.http));
  auto suppression = s.sub("suppression");
  RM_TRY(suppression);
  RM_TRY(read_suppression(*suppression, &c.suppression));
  RM_TRY(read_dkim(s, &c));
  RM_TRY(read_shaping(s, &c));
  auto provider_shaping = s.sub("provider_shaping");
  RM_TRY(provider_shaping);
  RM_TRY(read_provider_shaping(*provider_shaping, &c.provider_shaping));
  RM_TRY(read_egress(s, &c));
  RM_TRY(s.finish());
  return c;
}

Result<toml::table> parse_toml(std::string_view text, std::string_view origin) {
  try {
    return toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return make_error(Errc::kConfig, os.str());
  }
}

/// Overlays `over` onto `base` (tables merge key by key, other values replace).
void overlay(toml::table& base, const toml::table& over) {
  for (auto&& [k, v] : over) {
    toml::node* existing = base.get(k.str());
    if (existing != nullptr && existing->is_table() && v.is_table()) {
      overlay(*existing->as_table(), *v.as_table());
    } else {
      base.insert_or_assign(k, v);
    }
  }
}

}  // namespace

std::string Route::describe() const {
  std::string s;
  for (const auto& h : hosts) {
    if (!s.empty()) {
      s += ",";
    }
    switch (h.kind) {
      case Endpoint::Kind::kRecipientMx:
        s += "mx";
        continue;
      case Endpoint::Kind::kHost:
        s += "[" + h.host + "]";
        break;
      case Endpoint::Kind::kAddress:
        s += h.addr.ss_family == AF_INET6 ? "[" + h.host + "]" : h.host;
        break;
      case Endpoint::Kind::kMx:
        s += h.host;
        break;
    }
    s += ":" + std::to_string(h.port);
  }
  return s;
}

bool Route::needs_dns() const {
  for (const auto& h : hosts) {
    if (h.kind != Endpoint::Kind::kAddress) {
      return true;
    }
  }
  return false;
}

const Route& RoutingConfig::route_for(std::string_view domain) const {
  const DomainRoute* best = nullptr;
  size_t best_len = 0;
  for (const auto& d : domains) {
    if (d.domain == domain) {
      return d.route;
    }
    if (d.domain.starts_with("*.")) {
      std::string_view suffix = std::string_view(d.domain).substr(1);  // ".example.com"
      if (domain.size() > suffix.size() && domain.ends_with(suffix) && suffix.size() > best_len) {
        best = &d;
        best_len = suffix.size();
      }
    }
  }
  return best != nullptr ? best->route : default_route;
}

std::string_view default_config_toml() {
  return kDefaultConfig;
}

Result<Rate> parse_rate(std::string_view text) {
  if (text.empty()) {
    return Rate{};
  }
  auto not_a_rate = [&] {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\" is not a rate (use e.g. \"100/s\", \"6000/m\", "
                                         "\"20000/h\", or \"\" for unlimited)");
  };
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return not_a_rate();
  }
  std::string_view count = text.substr(0, slash);
  std::string_view unit = text.substr(slash + 1);
  double per = 0;
  if (unit == "s") {
    per = 1;
  } else if (unit == "m") {
    per = 60;
  } else if (unit == "h") {
    per = 3600;
  } else if (unit == "d") {
    per = 86400;
  }
  // from_chars also reads "nan", "inf" and "infinity": only a plain decimal
  // number (digits, one optional '.', an optional exponent) is a count.
  bool digits_only =
      !count.empty() && count.find_first_not_of("0123456789.eE+-") == std::string_view::npos;
  double n = 0;
  auto [p, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (!digits_only || ec != std::errc() || p != count.data() + count.size() || per == 0 ||
      !std::isfinite(n) || n <= 0) {
    return not_a_rate();
  }
  double per_second = n / per;
  if (!(per_second >= kMinRatePerSecond && per_second <= kMaxRatePerSecond)) {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\" is out of range: a rate must be between 1/d and " +
                                         std::to_string(static_cast<uint64_t>(kMaxRatePerSecond)) +
                                         "/s");
  }
  return Rate{per_second};
}

std::string_view tls_policy_name(TlsPolicy p) {
  switch (p) {
    case TlsPolicy::kNone:
      return "none";
    case TlsPolicy::kOpportunistic:
      return "opportunistic";
    case TlsPolicy::kRequired:
      return "required";
    case TlsPolicy::kVerify:
      return "verify";
  }
  return "?";
}

bool PeerPolicy::allows(uint32_t uid, std::span<const uint32_t> peer_gids,
                        uint32_t self_uid) const {
  if (uid == 0 || uid == self_uid) {
    return true;
  }
  if (uids.empty() && gids.empty()) {
    return open_by_default;
  }
  if (std::find(uids.begin(), uids.end(), uid) != uids.end()) {
    return true;
  }
  for (uint32_t g : peer_gids) {
    if (std::find(gids.begin(), gids.end(), g) != gids.end()) {
      return true;
    }
  }
  return false;
}

Shaping Config::shaping_for(std::string_view domain, std::span<const std::string> mx_hosts) const {
  Shaping s;
  s.max_connections = delivery.max_conns_per_destination;
  s.max_msgs_per_conn = delivery.max_msgs_per_conn;
  s.max_rcpts_per_txn = delivery.max_rcpts_per_txn;
  s.msg_rate = delivery.msg_rate;
  s.connect_rate = delivery.connect_rate;
  s.backoff = delivery.backoff;
  s.backoff_after = delivery.backoff_after;
  s.backoff_window = delivery.backoff_window;
  s.retry_schedule = retry.schedule;
  s.max_age = retry.max_age;
  s.tls = delivery.tls;
  if (provider_shaping.rules != nullptr) {
    provider_shaping.rules->match(domain, mx_hosts).limits.apply(s);
  }
  const ShapingRule* best = nullptr;
  size_t best_rank = 0;  // 3 exact, 2 + suffix length for wildcards, 1 "*"
  for (const auto& r : shaping) {
    size_t rank = 0;
    if (r.match == domain) {
      rank = SIZE_MAX;
    } else if (r.match == "*") {
      rank = 1;
    } else if (r.match.starts_with("*.")) {
      std::string_view suffix = std::string_view(r.match).substr(1);
      if (domain.size() > suffix.size() && domain.ends_with(suffix)) {
        rank = 2 + suffix.size();
      }
    }
    if (rank > best_rank) {
      best = &r;
      best_rank = rank;
    }
  }
  if (best != nullptr) {
    s.tls = best->tls.value_or(s.tls);
    s.implicit_tls = best->implicit_tls.value_or(false);
    s.auth_user = best->auth_user.value_or("");
    s.auth_password = best->auth_password.value_or("");
    s.auth_plaintext = best->auth_plaintext.value_or(false);
    s.max_connections = best->max_connections.value_or(s.max_connections);
    s.max_msgs_per_conn = best->max_msgs_per_conn.value_or(s.max_msgs_per_conn);
    s.max_rcpts_per_txn = best->max_rcpts_per_txn.value_or(s.max_rcpts_per_txn);
    s.msg_rate = best->msg_rate.value_or(s.msg_rate);
    s.connect_rate = best->connect_rate.value_or(s.connect_rate);
    s.backoff = best->backoff.value_or(s.backoff);
    s.backoff_after = best->backoff_after.value_or(s.backoff_after);
    s.backoff_window = best->backoff_window.value_or(s.backoff_window);
    s.max_age = best->max_age.value_or(s.max_age);
    if (best->retry_schedule) {
      s.retry_schedule = *best->retry_schedule;
    }
  }
  return s;
}

std::string SourceConfig::describe_bind() const {
  char buf[INET6_ADDRSTRLEN] = {};
  std::string out;
  if (has_v4) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&bind_v4)->sin_addr, buf, sizeof buf);
    out += buf;
  }
  if (has_v6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&bind_v6)->sin6_addr, buf,
              sizeof buf);
    out += out.empty() ? "" : ",";
    out += buf;
  }
  return out.empty() ? "any" : out;
}

std::optional<uint32_t> EgressConfig::pool_for(std::string_view option,
                                               std::string_view sender_domain) const {
  if (!option.empty()) {
    for (uint32_t i = 0; i < pools.size(); ++i) {
      if (pools[i].name == option) {
        return i;
      }
    }
    return std::nullopt;
  }
  const PoolRule* best = nullptr;
  size_t best_len = 0;
  for (const auto& r : rules) {
    if (r.sender_domain == sender_domain) {
      return r.pool;
    }
    if (r.sender_domain.starts_with("*.")) {
      std::string_view suffix = std::string_view(r.sender_domain).substr(1);
      if (sender_domain.size() > suffix.size() && sender_domain.ends_with(suffix) &&
          suffix.size() > best_len) {
        best = &r;
        best_len = suffix.size();
      }
    }
  }
  return best != nullptr ? best->pool : default_pool;
}

Result<Config> parse_config(std::string_view text, std::string_view origin) {
  auto base = parse_toml(kDefaultConfig, "<default>");
  RM_ASSERT(base.ok());
  auto user = parse_toml(text, origin);
  if (!user.ok()) {
    return std::move(user).take_error();
  }
  // Route tables replace rather than merge: a file's [routing.domains] is
  // the whole list.
  overlay(*base, *user);
  auto c = read_root(*base);
  if (!c.ok()) {
    return make_error(Errc::kConfig, std::string(origin) + ": " + c.error().message);
  }
  for (const auto& [key, node] : *base) {
    std::ostringstream canonical;
    canonical << toml::toml_formatter(node);
    c->sections.emplace(std::string(key.str()), canonical.str());
  }
  return c;
}

Result<Config> load_config_file(const std::string& path) {
  // open(2) succeeds on a directory and only read(2) fails: check the kind
  // first, and treat every read error as fatal rather than as an empty file
  // (which would mean "the built-in default").
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(Errc::kConfig, path + ": cannot open: " + std::strerror(errno));
  }
  auto fail = [&](const std::string& why) {
    ::close(fd);
    return make_error(Errc::kConfig, path + ": " + why);
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return fail(std::string("cannot read: ") + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    return fail("is a directory, not a configuration file");
  }
  std::string text;
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return fail(std::string("cannot read: ") + std::strerror(errno));
    }
    if (n == 0) {
      break;
    }
    if (text.size() + static_cast<size_t>(n) > kMaxConfigBytes) {
      return fail("larger than " + std::to_string(kMaxConfigBytes >> 20) +
                  " MiB; not a configuration file");
    }
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return parse_config(text, path);
}

Result<Millis> parse_duration(std::string_view text) {
  const std::string quoted = "\"" + std::string(text) + "\"";
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t pos = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    ++pos;
  }
  std::string_view whole_digits = text.substr(0, pos);
  std::string_view frac_digits;
  if (pos < text.size() && text[pos] == '.') {
    size_t start = ++pos;
    while (pos < text.size() && is_digit(text[pos])) {
      ++pos;
    }
    frac_digits = text.substr(start, pos - start);
    if (frac_digits.empty()) {
      whole_digits = {};  // "1.s": a fraction needs digits on both sides
    }
  }
  if (whole_digits.empty()) {
    return make_error(Errc::kConfig,
                      quoted + " is not a duration (use e.g. 250ms, 1.5s, 30s, 5m, 2h, 5d)");
  }
  std::string_view unit = text.substr(pos);
  uint64_t mult = 0;
  if (unit == "ms") {
    mult = 1;
  } else if (unit == "s") {
    mult = 1000;
  } else if (unit == "m") {
    mult = 60'000;
  } else if (unit == "h") {
    mult = 3'600'000;
  } else if (unit == "d") {
    mult = 86'400'000;
  } else {
    return make_error(Errc::kConfig, quoted + " has no valid unit (use ms, s, m, h or d)");
  }
  constexpr uint64_t kMaxMillis = uint64_t{1} << 40;  // about 34 years
  uint64_t whole = 0;
  auto [p, ec] =
      std::from_chars(whole_digits.data(), whole_digits.data() + whole_digits.size(), whole);
  if (ec != std::errc() || whole > kMaxMillis / mult) {
    return make_error(Errc::kConfig, quoted + " is too long");
  }
  uint64_t ms = whole * mult;
  while (!frac_digits.empty() && frac_digits.back() == '0') {
    frac_digits.remove_suffix(1);
  }
  if (!frac_digits.empty()) {
    // mult * fraction must be a whole number of milliseconds. The largest
    // unit, a day, is 2^10 * 3^3 * 5^5 ms, so no fraction with more than
    // ten significant digits can be; eleven keep the product below 2^64.
    auto finer = [&] {
      return make_error(Errc::kConfig, quoted +
                                           " is not a whole number of milliseconds (the "
                                           "finest step is 1ms)");
    };
    if (frac_digits.size() > 11) {
      return finer();
    }
    uint64_t frac = 0;
    uint64_t scale = 1;
    for (char c : frac_digits) {
      frac = frac * 10 + static_cast<uint64_t>(c - '0');
      scale *= 10;
    }
    if (frac * mult % scale != 0) {
      return finer();
    }
    ms += frac * mult / scale;
    if (ms > kMaxMillis) {
      return make_error(Errc::kConfig, quoted + " is too long");
    }
  }
  return Millis(static_cast<int64_t>(ms));
}

Result<Endpoint> parse_endpoint(std::string_view text, uint16_t default_port) {
  Endpoint ep;
  ep.port = default_port;
  if (text == "mx" || text == "MX") {
    ep.kind = Endpoint::Kind::kRecipientMx;
    ep.host = "mx";
    return ep;
  }
  std::string_view host = text;
  std::string_view port;
  bool bracketed = false;
  if (host.starts_with("[")) {
    size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return make_error(Errc::kConfig, "\"" + std::string(text) + "\": missing ']'");
    }
    std::string_view rest = host.substr(close + 1);
    host = host.substr(1, close - 1);
    bracketed = true;
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return make_error(Errc::kConfig, "\"" + std::string(text) + "\": expected ':port'");
      }
      port = rest.substr(1);
    }
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos && host.find(':') == colon) {
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
    }
  }
  if (!port.empty()) {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535) {
      return make_error(Errc::kConfig, "\"" + std::string(text) + "\": bad port");
    }
    ep.port = static_cast<uint16_t>(p);
    ep.port_given = true;
  }
  ep.host = std::string(host);
  std::memset(&ep.addr, 0, sizeof ep.addr);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ep.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ep.addr);
  if (inet_pton(AF_INET, ep.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(ep.port);
    ep.addr_len = sizeof(sockaddr_in);
    ep.kind = Endpoint::Kind::kAddress;
    return ep;
  }
  if (inet_pton(AF_INET6, ep.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(ep.port);
    ep.addr_len = sizeof(sockaddr_in6);
    ep.kind = Endpoint::Kind::kAddress;
    return ep;
  }
  auto valid = proto::validate_domain(ep.host);
  if (!valid.ok()) {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\": not an address or a host name (" +
                                         valid.error().message + ")");
  }
  ep.host = proto::normalize_domain(ep.host);
  ep.kind = bracketed ? Endpoint::Kind::kHost : Endpoint::Kind::kMx;
  return ep;
}

Result<Route> parse_route(std::string_view text) {
  Route r;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view part =
        text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    while (!part.empty() && part.front() == ' ') {
      part.remove_prefix(1);
    }
    while (!part.empty() && part.back() == ' ') {
      part.remove_suffix(1);
    }
    if (part.empty()) {
      return make_error(Errc::kConfig, "empty host in route \"" + std::string(text) + "\"");
    }
    auto ep = parse_endpoint(part, 25);
    if (!ep.ok()) {
      return std::move(ep).take_error();
    }
    r.hosts.push_back(std::move(*ep));
    if (comma == std::string_view::npos) {
      break;
    }
    start = comma + 1;
  }
  return r;
}

}  // namespace ringmail::engine
