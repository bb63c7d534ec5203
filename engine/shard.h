/// shard.h — one thread, one io_uring, its timers, queues and connections.
///
/// A shard owns, without locks: its Ring, its TimerWheel, its Scheduler
/// (destinations, retries, SMTP connections) and its EventLog. Other
/// threads reach it only through messages:
///   - from another shard: the SpscRing for that ordered pair (post());
///   - from a non-shard thread (embedding API): an MpscQueue
///     (Runtime::post_external()).
/// A sleeping shard is woken through an eventfd whose read is always
/// pending on its ring; producers write to it only when the shard has said
/// it is about to sleep, so a busy shard costs no wake-up syscalls.
///
/// Messages are `ShardMsg{fn, p, a}` (a function pointer and two words):
/// nothing is allocated to send one. Cross-shard calls never wait for an
/// answer; an answer is another message back (no cycles, no blocking).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/dsn.h"
#include "engine/events.h"
#include "engine/metrics.h"
#include "engine/resolver.h"
#include "engine/ring.h"
#include "engine/scheduler.h"
#include "engine/spool.h"
#include "engine/spsc_ring.h"
#include "engine/timer_wheel.h"

namespace ringmail::engine {

class Runtime;
class Shard;
class Ingest;
class Submission;  // engine/submission.h
class HttpServer;  // engine/http_server.h
class TlsClient;   // engine/tls.h
class TlsContext;  // engine/tls.h

struct ShardMsg {
  void (*fn)(Shard& shard, void* p, uint64_t a);
  void* p;
  uint64_t a;
};

/// Cross-shard ring: capacity and drain batch are named so their cost is
/// visible. 4096 messages of 24 bytes = 96 KiB per ordered shard pair.
inline constexpr size_t kShardRingCapacity = 4096;
inline constexpr size_t kShardDrainBatch = 256;
using ShardRing = SpscRing<ShardMsg, kShardRingCapacity>;

struct ExternalTask : MpscNode {
  std::function<void(Shard&)> fn;
};

/// Relaxed counters, written by the owning shard, read by anyone.
struct ShardStats {
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> deferred{0};
  std::atomic<uint64_t> bounced{0};
  std::atomic<uint64_t> connections_opened{0};
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> unknown_outcomes{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> spool_damage{0};    // damaged records or segments found at recovery
  std::atomic<uint64_t> spool_segments{0};  // segment files in use
  std::atomic<uint64_t> spool_errors{0};    // failed writes or fsyncs
  /// Delivery work under way now: connections open or opening plus DNS
  /// lookups in flight (refreshed every loop iteration). Zero with mail
  /// still queued means it waits for a retry time, a backoff or a pause.
  std::atomic<uint64_t> active{0};
  // The submission listeners (shard 0 only).
  std::atomic<uint64_t> submission_auth_checks{0};  // password checks run (PBKDF2)
  std::atomic<uint64_t> submission_reclaimed{0};    // idle sessions closed to admit a client
  std::atomic<uint64_t> submission_timeouts{0};     // sessions closed by a deadline
  // Batches answered, by entry point (BatchSource) and ack status
  // (proto::AckStatus), and TLS handshakes by side and result: /metrics
  // (engine/metrics.h). Written on shard 0 except the client handshakes.
  std::atomic<uint64_t> batches[kBatchSources][kAckStatuses];
  std::atomic<uint64_t> tls_client_ok{0};
  std::atomic<uint64_t> tls_client_failed{0};
  std::atomic<uint64_t> tls_server_ok{0};
  std::atomic<uint64_t> tls_server_failed{0};
};

class Shard {
 public:
  Shard(Runtime& rt, uint32_t id, uint32_t shard_count);
  ~Shard();

  /// Thread body. Creates the ring, signals readiness, runs until stopped.
  void run();

  // --- shard thread only ----------------------------------------------------
  uint32_t id() const { return id_; }
  Ring& ring() { return *ring_; }
  TimerWheel& timers() { return *timers_; }
  const Clock& clock() const;
  /// The shard's current configuration (a reload replaces it between two
  /// events; hold no reference across an event).
  const Config& config() const;
  /// A configuration reload (Runtime::reload): `config` becomes current;
  /// the scheduler, resolver and TLS client follow. `server_contexts`:
  /// shard 0's new submission listener contexts, in listener order (empty:
  /// keep the current ones).
  void reconfigure(std::shared_ptr<const Config> config,
                   std::vector<std::unique_ptr<TlsContext>> server_contexts);
  Runtime& runtime() { return rt_; }
  Scheduler& scheduler() { return *scheduler_; }
  RouteResolver& resolver() { return *route_resolver_; }
  /// The spool, or null when spool.mode = "off".
  Spool* spool() { return spool_.get(); }
  DnsClient& dns() { return *dns_client_; }
  Ingest* ingest() { return ingest_.get(); }
  Ingest* control_server() { return control_.get(); }
  /// The submission listeners (shard 0 only, when configured), or null.
  Submission* submission() { return submission_.get(); }
  /// The HTTP listener (shard 0 only, when http.listen is set), or null.
  HttpServer* http() { return http_.get(); }
  DnsCache& dns_cache() { return *dns_cache_; }
  /// Outcome counts per destination, for /metrics (engine/metrics.h).
  DestinationCounters& destination_counters() { return dest_counters_; }
  /// This shard's client TLS state (context, session cache); created on
  /// first use.
  TlsClient& tls_client();
  /// Sends a message to shard `dst` (may be this shard: it runs on the next
  /// loop iteration, never re-entrantly).
  void post(uint32_t dst, ShardMsg msg);
  /// Records one outcome: event file, subscribers, counters.
  void emit(const OutcomeRecord& rec);
  /// Records a destination state change (backoff, resume).
  void emit_destination(const DestinationRecord& rec);
  /// A recipient became final (delivered, bounced, expired, dropped);
  /// `addr_bytes` is its address length, for the memory budget.
  void recipient_final(size_t addr_bytes);
  /// A recipient failed for good: feeds delivery status notifications.
  /// `last_attempt_wall_ms`: its last attempt (wall clock), 0 when none.
  void bounced(const Message& msg, std::string_view recipient, const proto::Reply& reply,
               std::string_view remote_mta, int64_t last_attempt_wall_ms);
  void add_subscriber(uint64_t id, EventCallback cb);
  void remove_subscriber(uint64_t id);
  ShardStats& stats() { return stats_; }
  EventLog& event_log() { return *event_log_; }

  // --- any thread -------------------------------------------------------------
  /// Wakes the shard if it sleeps (cheap when it does not).
  void wake();
  /// Loop iterations completed: a watchdog's sign of life.
  uint64_t loop_iterations() const { return iterations_.load(std::memory_order_relaxed); }
  /// Asks the loop to stop once no connection is left.
  void request_stop();

 private:
  friend class Runtime;
  struct WakeOp final : Completion {
    Shard* shard;
    uint64_t value = 0;
    void complete(int res, uint32_t flags) override;
  };

  void loop();
  bool drain_inbound();
  void flush_outbound();
  void arm_wake();
  void forward_events();
  void publish(EventView& v);

  Runtime& rt_;
  const uint32_t id_;
  std::shared_ptr<const Config> config_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<TimerWheel> timers_;
  std::unique_ptr<DnsClient> dns_client_;
  std::unique_ptr<DnsCache> dns_cache_;
  std::unique_ptr<RouteResolver> route_resolver_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DsnCollector> dsn_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<EventLog> event_log_;
  std::unique_ptr<Ingest> ingest_;
  std::unique_ptr<Ingest> control_;  // the control socket (same protocol, operator commands)
  std::unique_ptr<Submission> submission_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<TlsClient> tls_client_;
  DestinationCounters dest_counters_;
  std::deque<ShardMsg> local_;
  std::vector<std::deque<ShardMsg>> overflow_;  // per destination shard
  std::vector<uint8_t> wake_pending_;           // per destination shard
  std::vector<std::pair<uint64_t, EventCallback>> subscribers_;
  std::string json_scratch_;
  std::string forward_;  // events for socket subscribers, sent to shard 0
  ShardStats stats_;
  WakeOp wake_op_;
  int wake_fd_ = -1;
  alignas(64) std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> iterations_{0};  // written by the loop only
};

}  // namespace ringmail::engine
