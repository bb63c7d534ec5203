/// resolver.h — DNS for mail routing, on the shard's own io_uring.
///
/// Three layers, one per shard, no threads and no blocking calls:
///   - DnsClient: a c-ares channel whose sockets are watched with io_uring
///     POLL_ADD on the shard's ring (ARES_OPT_SOCK_STATE_CB says which) and
///     whose timeouts the shard loop runs (next_deadline / process_timeouts,
///     in real time even when the engine runs on a ManualClock). c-ares only
///     moves packets; answers are read by proto/dns_answer.h.
///   - DnsCache: (name, type) -> answer with an expiry from the records'
///     TTLs clamped to [dns.ttl_floor, dns.ttl_ceiling]; negative answers
///     cached for their SOA TTL (RFC 2308) or dns.negative_ttl; failures
///     for dns.error_ttl. Lookups of a name already in flight wait for it:
///     a burst of 100,000 recipients at one new domain makes one MX query.
///     Bounded by dns.cache_size names and dns.max_inflight queries (the
///     rest wait in a FIFO).
///   - RouteResolver: turns a Route (docs/configuration.md, routing) and a
///     recipient domain into an ordered list of candidate addresses, per
///     RFC 5321 5.1: MX by preference with random order among equals,
///     implicit MX when there is none, null MX (RFC 7505) and NXDOMAIN as
///     permanent failures, everything temporary (SERVFAIL, timeouts,
///     unreachable resolver, malformed answers) as deferrals.
/// Thread safety: one shard thread.
#pragma once

#include <ares.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/ring.h"
#include "proto/dns_answer.h"
#include "proto/smtp_reply.h"

namespace ringmail::engine {

class Shard;

struct DnsResult {
  enum class Status : uint8_t { kOk, kNxDomain, kNoData, kTempFail };
  Status status = Status::kTempFail;
  proto::dns::Answer answer;  // kOk; also kNoData/kNxDomain when parsed
  std::string error;          // what went wrong, for kTempFail
  TimePoint expires{};        // when the cache stops using it
};

class DnsClient {
 public:
  using Callback = std::function<void(int ares_status, const unsigned char* abuf, int alen)>;

  DnsClient(Ring& ring, const DnsConfig& config);
  ~DnsClient();
  DnsClient(const DnsClient&) = delete;
  DnsClient& operator=(const DnsClient&) = delete;

  Result<void> init();
  void query(const std::string& name, uint16_t type, Callback cb);
  /// Real-time deadline of c-ares' next timeout, if any query is pending.
  std::optional<std::chrono::steady_clock::time_point> next_deadline() const;
  void process_timeouts();
  size_t inflight() const { return inflight_; }
  uint64_t queries_sent() const { return sent_; }

 private:
  struct Watch final : Completion {
    DnsClient* client = nullptr;
    int fd = -1;
    bool want_read = false;
    bool want_write = false;
    bool armed = false;
    bool in_callback = false;  // inside ares_process_fd for this socket
    bool dead = false;         // c-ares closed the socket; free on the CQE
    unsigned armed_mask = 0;
    void complete(int res, uint32_t flags) override;
  };
  struct Pending {
    std::string name;
    uint16_t type;
    Callback cb;
  };
  static void sock_state(void* data, ares_socket_t fd, int readable, int writable);
  static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  void arm(Watch* w);
  void start(Pending p);
  void after_call();

  Ring& ring_;
  const DnsConfig& config_;
  ares_channel channel_ = nullptr;
  std::unordered_map<int, Watch*> watches_;
  std::deque<Pending> waiting_;
  size_t inflight_ = 0;
  uint64_t sent_ = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  bool destroying_ = false;
};

class DnsCache {
 public:
  using Callback = std::function<void(const DnsResult&)>;
  DnsCache(DnsClient& client, const Clock& clock, const DnsConfig& config);

  void lookup(const std::string& name, uint16_t type, Callback cb);
  size_t size() const { return entries_.size(); }
  uint64_t hits() const { return hits_; }

 private:
  struct Entry {
    bool ready = false;
    DnsResult result;
    TimePoint expires{};
    std::vector<Callback> waiters;
  };
  void complete(const std::string& key, int status, const unsigned char* abuf, int alen,
                const std::string& name, uint16_t type);
  Millis clamp_ttl(uint32_t seconds) const;
  void evict();

  DnsClient& client_;
  const Clock& clock_;
  const DnsConfig& config_;
  std::unordered_map<std::string, Entry> entries_;
  uint64_t hits_ = 0;
};

/// One place to try: an address, and the MX host it came from.
struct Candidate {
  std::string mx;  // MX host name, or the configured host/address
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  uint16_t preference = 0;
  /// Candidates with the same tier are equally preferred: the same route
  /// element and MX preference (a static address is a tier of its own).
  uint32_t tier = 0;
};

/// Reorders each run of equally preferred candidates (same tier) from
/// different hosts so that connection number `turn` starts at host
/// `turn % hosts` of the run; a host's addresses stay together and in
/// order. Connections to one destination thus spread over its
/// equal-preference MX hosts (RFC 5321 5.1) even though its route is
/// resolved once and cached.
void rotate_equal_preference(std::vector<Candidate>& candidates, uint64_t turn);

struct RouteResolution {
  enum class Kind : uint8_t { kOk, kBounce, kDefer };
  Kind kind = Kind::kDefer;
  std::vector<Candidate> candidates;  // kOk
  proto::Reply reply;                 // kBounce/kDefer: why
  TimePoint expires{};
  std::string note;  // skipped MX hosts and why (for logs)
};

class RouteResolver {
 public:
  using Callback = std::function<void(RouteResolution)>;
  RouteResolver(DnsCache& cache, const Clock& clock, const Config& config, uint64_t seed);

  /// Resolves `route` for recipients at `domain` (lower-case). Static
  /// routes complete before returning.
  void resolve(const Route& route, const std::string& domain, Callback cb);
  /// A reload: lookups read `config` from now on (it must outlive them).
  void set_config(const Config& config) { config_ = &config; }

 private:
  struct Job;
  void resolve_target(const std::shared_ptr<Job>& job, size_t index);
  void finish_target(const std::shared_ptr<Job>& job);
  void resolve_mx(const std::shared_ptr<Job>& job, const std::string& name, uint16_t port);
  void resolve_hosts(const std::shared_ptr<Job>& job, std::vector<proto::dns::MxRecord> hosts,
                     uint16_t port, bool implicit);
  bool usable(const sockaddr_storage& ss) const;

  DnsCache& cache_;
  const Clock& clock_;
  const Config* config_;
  uint64_t rng_state_;
};

/// Formats an address for events and logs: "1.2.3.4:25", "[::1]:25".
std::string format_sockaddr(const sockaddr_storage& ss);

}  // namespace ringmail::engine
