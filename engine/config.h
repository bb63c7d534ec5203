/// config.h — ringmail's configuration: a TOML file (docs/configuration.md
/// documents every key) over an embedded default.
///
/// Loading never half-succeeds: the first problem is returned as an error
/// naming the full key ("delivery.max_rcpts_per_txn: must be between 1 and
/// 1000, got 0"). Unknown keys are errors too (a misspelt limit silently
/// ignored is worse than a refused start).
/// Thread safety: a Config is an immutable value once loaded; shards copy
/// what they need at start.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "proto/result.h"

namespace ringmail::engine {

class ProviderRules;  // engine/provider_rules.h

/// Per-phase SMTP client timeouts (RFC 5321 4.5.3.2 minimums by default).
struct SmtpTimeouts {
  Millis connect{30'000};
  Millis greeting{300'000};
  Millis ehlo{300'000};
  Millis mail{300'000};
  Millis rcpt{300'000};
  Millis data_init{120'000};
  Millis data_block{180'000};  // no send progress for this long while sending the body
  Millis data_done{600'000};   // RFC 5321: at least 10 minutes (duplicates otherwise)
  Millis rset{20'000};
  Millis quit{10'000};
  Millis idle{5'000};  // an idle connection is kept this long for reuse
};

/// One element of a route (Postfix transport-map semantics):
///   "mx"             MX lookup of the recipient's domain (delivery.port);
///   "host[:port]"    MX lookup of `host` (implicit MX when it has none);
///   "[host][:port]"  address lookup of `host` only, no MX;
///   an IP address    that address (brackets optional).
struct Endpoint {
  enum class Kind : uint8_t { kRecipientMx, kMx, kHost, kAddress };
  Kind kind = Kind::kAddress;
  std::string host;  // as configured (a name or an address)
  uint16_t port = 25;
  bool port_given = false;
  sockaddr_storage addr{};  // kAddress only
  socklen_t addr_len = 0;
};

struct Route {
  std::vector<Endpoint> hosts;  // tried in order
  std::string describe() const;
  bool needs_dns() const;
};

struct DomainRoute {
  std::string domain;  // lower-case; "*.example.com" matches subdomains
  Route route;
};

struct EngineConfig {
  uint32_t shards = 0;  // 0 = one per online CPU
  uint32_t ring_entries = 1024;
  Millis shutdown_grace{10'000};  // how long SIGTERM waits for queued mail
  /// Run as this user (and group: default the user's primary group) once
  /// the listening sockets are bound. Empty: keep the starting identity.
  std::string user;
  std::string group;
};

/// Who may use a Unix socket of ringmail, checked with SO_PEERCRED on
/// every connection (in addition to the socket file's mode).
struct PeerPolicy {
  std::vector<uint32_t> uids;  // allowed users (names resolved at load)
  std::vector<uint32_t> gids;  // allowed groups (the peer's primary or supplementary)
  /// Without lists, anyone the file mode lets connect (ingest), or only
  /// root and ringmail's own user (control) — see `open_by_default`.
  bool open_by_default = true;
  /// `peer_gids`: the peer's primary group and supplementary groups.
  bool allows(uint32_t uid, std::span<const uint32_t> peer_gids, uint32_t self_uid) const;
};

struct IngestConfig {
  std::string socket;  // empty = no socket listener
  uint32_t socket_mode = 0660;
  uint32_t max_frame_bytes = 128u << 20;
  uint32_t max_message_bytes = 32u << 20;
  uint32_t max_recipients = 1'000'000;
  uint32_t max_connections = 256;
  Millis frame_timeout{60'000};                 // a started frame must complete within this
  uint64_t max_subscriber_backlog = 64u << 20;  // unsent event bytes per subscriber
  /// Frame bytes buffered across all clients (charged to
  /// limits.max_queued_bytes too); a frame that would go over is refused.
  uint64_t max_buffered_bytes = 256u << 20;
  Millis hello_timeout{10'000};  // HELLO must arrive this soon after connecting
  Millis idle_timeout{300'000};  // a client with nothing in progress is closed after this
  PeerPolicy peers;
};

/// The operator socket: CONTROL commands and subscriptions to all events.
struct ControlConfig {
  bool enabled = true;
  /// Default (empty in the file): next to ingest.socket, "NAME-ctl.sock"
  /// for "NAME.sock"; none when there is no ingest socket. After loading
  /// it holds the path, or is empty when there is no control socket.
  std::string socket;
  uint32_t socket_mode = 0600;
  PeerPolicy peers{.uids = {}, .gids = {}, .open_by_default = false};
};

struct EventsConfig {
  std::string file;  // empty = no event file
};

/// A rate such as "100/s", "6000/m" or "20000/h"; unlimited when zero.
struct Rate {
  double per_second = 0;
  bool limited() const { return per_second > 0; }
};
Result<Rate> parse_rate(std::string_view text);

/// Per-destination TLS policy (RFC 7435 terms): none; opportunistic (try
/// STARTTLS when offered, plaintext on a new connection when the handshake
/// fails); required (defer without TLS); verify (required, and the
/// certificate chain and host name must check against tls.ca_file).
enum class TlsPolicy : uint8_t { kNone, kOpportunistic, kRequired, kVerify };
std::string_view tls_policy_name(TlsPolicy p);

/// The limits of one destination (a recipient domain, per egress source).
struct Shaping {
  uint32_t max_connections = 10;
  uint32_t max_msgs_per_conn = 1000;
  uint32_t max_rcpts_per_txn = 100;
  Rate msg_rate;      // messages (transactions) per source and destination
  Rate connect_rate;  // new connections per source and destination
  Millis backoff{300'000};
  /// Throttling replies to transactions (4.7.x, "rate limit", … but not
  /// 421, connection failures or greylisting, which act at once or not at
  /// all) that put the source into backoff when this many arrive within
  /// backoff_window. One such reply only defers its own recipients.
  uint32_t backoff_after = 10;
  Millis backoff_window{60'000};
  std::vector<Millis> retry_schedule;
  Millis max_age{0};
  TlsPolicy tls = TlsPolicy::kOpportunistic;
  bool implicit_tls = false;  // TLS from the first byte (port 465 style smart hosts)
  std::string auth_user;      // AUTH to a smart host when set
  std::string auth_password;
  bool auth_plaintext = false;  // allow AUTH without TLS (only if explicitly set)
};

/// A [[shaping]] table: overrides for domains matching `match` ("example.com",
/// "*.example.com", or "*").
struct ShapingRule {
  std::string match;
  std::optional<uint32_t> max_connections, max_msgs_per_conn, max_rcpts_per_txn;
  std::optional<Rate> msg_rate, connect_rate;
  std::optional<Millis> backoff, max_age, backoff_window;
  std::optional<uint32_t> backoff_after;
  std::optional<std::vector<Millis>> retry_schedule;
  std::optional<TlsPolicy> tls;
  std::optional<bool> implicit_tls;
  std::optional<std::string> auth_user, auth_password;
  std::optional<bool> auth_plaintext;
};

struct SourceConfig {
  std::string name;
  std::string ehlo_name;  // default: delivery.ehlo_name
  bool has_v4 = false, has_v6 = false;
  sockaddr_storage bind_v4{}, bind_v6{};
  std::string describe_bind() const;
};

struct PoolConfig {
  std::string name;
  std::vector<uint32_t> sources;  // indexes into EgressConfig::sources
};

struct PoolRule {
  std::string sender_domain;  // lower-case; "*.suffix" matches subdomains
  uint32_t pool = 0;
};

struct EgressConfig {
  std::vector<SourceConfig> sources;  // never empty after loading
  std::vector<PoolConfig> pools;      // never empty after loading
  std::vector<PoolRule> rules;
  uint32_t default_pool = 0;
  /// The pool for a batch: its "pool=" option (by name), else the first rule
  /// matching the sender's domain, else the default pool. nullopt when the
  /// named pool does not exist.
  std::optional<uint32_t> pool_for(std::string_view option, std::string_view sender_domain) const;
};

struct TlsConfig {
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";  // for TlsPolicy::kVerify
  std::string min_version = "1.2";                             // "1.2" or "1.3"
  Millis handshake_timeout{30'000};
  bool session_resumption = true;  // per destination (client side)
};

/// One submission listener (RFC 6409 / RFC 8314).
struct SubmissionListener {
  std::string listen;  // "ip:port"
  enum class Tls : uint8_t { kStartTls, kImplicit, kNone } tls = Tls::kStartTls;
  std::string cert_file;
  std::string key_file;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
};

struct SubmissionConfig {
  std::vector<SubmissionListener> listeners;
  std::string hostname;          // greeting name; default delivery.ehlo_name
  std::string credentials_file;  // "user:iterations:salt-hex:hash-hex" lines, PBKDF2-SHA256
  std::vector<std::string> trusted_networks;  // CIDRs that may relay without AUTH
  uint64_t max_message_bytes = 32u << 20;
  uint32_t max_recipients = 1000;
  uint32_t max_line = 2048;
  uint32_t max_commands = 10'000;
  uint32_t max_errors = 20;
  Millis idle_timeout{300'000};  // without any input: 421 4.4.2
  /// A command or AUTH response line must be complete this long after its
  /// first byte arrived (421 4.4.2), however it is trickled. Threat: a
  /// client that sends one byte per idle_timeout holds a session forever.
  Millis command_timeout{60'000};
  /// Message content (DATA, or every chunk of one BDAT transfer) must keep
  /// up an average of data_min_rate bytes/s once data_rate_grace has
  /// passed: its deadline is start + grace + bytes / rate (421 4.4.2, the
  /// message is not accepted). Threat: a body trickled below idle_timeout.
  uint64_t data_min_rate = 1024;
  Millis data_rate_grace{30'000};
  uint32_t max_sessions = 1000;
  uint32_t max_sessions_per_ip = 20;
  /// With max_sessions reached, a session that has waited this long for a
  /// command is closed (421 4.3.2) to admit a new client; sessions outside
  /// a transaction go first. Threat: many addresses, each under
  /// max_sessions_per_ip, holding every session idle.
  Millis reclaim_idle_after{10'000};
  /// Listener-side TLS handshake deadline (implicit TLS and STARTTLS);
  /// tls.handshake_timeout is the client side's.
  Millis tls_handshake_timeout{10'000};
  /// Connections in a TLS handshake, counted apart from max_sessions; when
  /// full, the oldest handshake is dropped for the new one. Threat: a flood
  /// of connections that never handshake.
  uint32_t max_tls_handshakes = 100;
  uint32_t auth_fail_limit = 5;  // failed AUTH per client address per window
  Millis auth_fail_window{60'000};
};

/// The HTTP listener ([http], engine/http_server.h): /metrics and the
/// injection API. Off while `listen` is empty.
struct HttpConfig {
  std::string listen;  // "ip:port"; "" = no listener
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  /// Bearer tokens for /api/inject/v1, one per line; "" = injection off.
  std::string api_tokens_file;
  uint32_t max_connections = 64;        // clients at once; more are answered 503 and closed
  uint64_t max_body_bytes = 32u << 20;  // 413 above it
  /// The request head must be complete this long after its first byte
  /// (408, close). Threat: a client trickling a head to hold a connection.
  Millis header_timeout{10'000};
  /// The body must arrive at this average rate (bytes/s) after
  /// header_timeout: deadline = head end + header_timeout + length / rate.
  uint64_t body_min_rate = 64 * 1024;
  Millis idle_timeout{60'000};  // a keep-alive connection without a request
  /// Destinations (domain and pool) with their own label in the outcome
  /// counters of /metrics; the rest are counted as domain="other".
  uint32_t metrics_destinations = 50;
};

/// A DKIM signing key (RFC 6376, RFC 8463). Several entries for one domain
/// put several signatures on a message (e.g. rsa-sha256 and ed25519-sha256).
struct DkimKey {
  std::string domain;    // d=, lower-case; messages whose From domain is this are signed
  std::string selector;  // s=
  std::string key_file;  // PEM: RSA (1024-4096 bits) or Ed25519 private key
  std::string canonicalization = "relaxed/relaxed";  // header/body: relaxed or simple
  std::vector<std::string> headers;  // signed header fields; empty = the default list
  Millis expire{0};                  // x= after signing; 0 = none
  bool body_length = false;          // l= (never by default)
};

struct SuppressionConfig {
  bool enabled = true;
  Millis invalid_ttl{30LL * 86'400'000};  // how long an invalid-recipient bounce suppresses
  Millis unsubscribe_ttl{0};              // 0 = until removed by an operator
  std::string file;             // where the list persists across restarts; empty = memory only
  Millis flush_interval{1000};  // how often new entries are written to `file`
};

struct BouncesConfig {
  bool dsn = false;          // send RFC 3464 reports to envelope senders
  Millis dsn_delay{30'000};  // collect a message's bounces this long into one report
};

enum class SpoolMode : uint8_t {
  kOff,    // memory only: the platform owns durability
  kAsync,  // acknowledged once written; fsync every async_interval
  kSync,   // acknowledged only after the fsync that covers the batch
};
std::string_view spool_mode_name(SpoolMode m);

struct SpoolConfig {
  SpoolMode mode = SpoolMode::kSync;
  std::string dir = "spool";          // one sub-directory per shard
  uint64_t segment_size = 64u << 20;  // a new segment file after this many bytes
  Millis async_interval{100};         // fsync cadence in async mode
  uint32_t compact_percent = 25;      // rewrite an old segment's live jobs below this share
};

struct LimitsConfig {
  uint64_t max_queued_recipients = 10'000'000;
  uint64_t max_queued_bytes = 2ull << 30;  // message bodies plus per-recipient state
};

struct DeliveryConfig {
  std::string ehlo_name;  // default: the host name
  uint16_t port = 25;     // port for MX delivery
  uint32_t max_rcpts_per_txn = 100;
  uint32_t max_msgs_per_conn = 1000;
  uint32_t max_conns_per_destination = 10;
  Rate msg_rate;
  Rate connect_rate;
  Millis backoff{300'000};
  uint32_t backoff_after = 10;  // see Shaping::backoff_after
  Millis backoff_window{60'000};
  TlsPolicy tls = TlsPolicy::kOpportunistic;
  uint32_t max_pipelined_txns = 4;
  /// Per shard, over all destinations: connections between connect() and a
  /// usable session (TCP, greeting, EHLO, TLS) at once. A queue that
  /// suddenly needs thousands of connections (a restart with a full spool,
  /// a burst to many domains) opens them in waves instead of a SYN flood.
  uint32_t max_connecting = 256;
  bool pipelining = true;
  bool chunking = true;
  SmtpTimeouts timeouts;
};

struct RoutingConfig {
  Route default_route;
  std::vector<DomainRoute> domains;
  /// The route for `domain` (lower-case): exact match first, then the
  /// longest "*.suffix" match, then the default.
  const Route& route_for(std::string_view domain) const;
};

enum class AddressPreference : uint8_t { kIpv4, kIpv6, kIpv4Only, kIpv6Only };

struct DnsConfig {
  std::vector<std::string> servers;  // "ip[:port]"; empty: the system's resolv.conf
  Millis timeout{5'000};             // per try
  uint32_t tries = 2;
  Millis ttl_floor{30'000};
  Millis ttl_ceiling{86'400'000};
  Millis negative_ttl{300'000};  // NXDOMAIN/NODATA without an SOA
  Millis error_ttl{30'000};      // SERVFAIL, timeouts, malformed answers
  AddressPreference prefer = AddressPreference::kIpv4;
  uint32_t max_mx = 10;           // MX hosts considered per domain
  uint32_t max_addresses = 10;    // addresses tried per connection attempt
  bool allow_loopback = false;    // MX answers pointing at 127/8, ::1, 0.0.0.0
  uint32_t max_inflight = 100;    // queries outstanding per shard
  uint32_t cache_size = 100'000;  // names cached per shard
};

struct RetryConfig {
  std::vector<Millis> schedule{Millis(60'000), Millis(300'000), Millis(900'000), Millis(1'800'000),
                               Millis(3'600'000)};  // last one repeats
  Millis max_age{5LL * 24 * 3600 * 1000};
  uint32_t jitter_percent = 10;  // each retry delay varies by up to +-this share
};

/// [provider_shaping]: rules per mailbox provider (engine/provider_rules.h).
struct ProviderShapingConfig {
  bool builtin = true;                         // ringmail's own rules for the big providers
  std::vector<std::string> files;              // read after the built-in set, in order
  std::shared_ptr<const ProviderRules> rules;  // loaded; null when there are none
};

struct Config {
  EngineConfig engine;
  IngestConfig ingest;
  ControlConfig control;
  EventsConfig events;
  DeliveryConfig delivery;
  std::vector<ShapingRule> shaping;
  ProviderShapingConfig provider_shaping;
  EgressConfig egress;
  RoutingConfig routing;
  DnsConfig dns;
  RetryConfig retry;
  BouncesConfig bounces;
  LimitsConfig limits;
  SpoolConfig spool;
  TlsConfig tls;
  SubmissionConfig submission;
  HttpConfig http;
  std::vector<DkimKey> dkim;
  SuppressionConfig suppression;
  std::string log_level = "info";
  /// Each top-level key of the effective TOML (built-in defaults with the
  /// file over them), in canonical TOML text: a reload compares them to
  /// find what changed (Runtime::reload).
  std::map<std::string, std::string, std::less<>> sections;

  /// The limits for `domain` (lower-case) whose MX hosts are `mx_hosts`
  /// (lower-case; empty before its route is resolved): [delivery] and
  /// [retry] defaults, then the provider rules (their "default", the
  /// matching provider, the domain's own block), then the [[shaping]] rule
  /// that matches best (exact name, then the longest "*.suffix", then "*").
  Shaping shaping_for(std::string_view domain, std::span<const std::string> mx_hosts = {}) const;
};

/// The configuration ringmaild uses when started without --config.
std::string_view default_config_toml();

/// Parses TOML text over the built-in defaults. `origin` names the source in
/// error messages (a file name, or "<default>").
Result<Config> parse_config(std::string_view toml, std::string_view origin);
/// Reads and parses the file at `path`. A path that cannot be opened or
/// read, a directory, or a file over 16 MiB is an error naming the path
/// (never an empty file that would mean the built-in default).
Result<Config> load_config_file(const std::string& path);

/// Parses "30s", "250ms", "5m", "2h", "5d", and fractions of a unit ("1.5s",
/// "0.5m") that come to a whole number of milliseconds.
Result<Millis> parse_duration(std::string_view text);
/// Parses one route element (see Endpoint): "mx", "1.2.3.4:25",
/// "[::1]:2525", "[smtp.example.com]:587", "relay.example.com".
Result<Endpoint> parse_endpoint(std::string_view text, uint16_t default_port);
/// Parses a comma-separated route.
Result<Route> parse_route(std::string_view text);

}  // namespace ringmail::engine
