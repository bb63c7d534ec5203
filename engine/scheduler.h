/// scheduler.h — a shard's queues: jobs, destinations, retries.
///
/// Vocabulary (after KumoMTA's queues and Postfix's qmgr):
///   - Job: the recipients of one batch that belong to this shard, with the
///     shared Message. Addresses live in one arena per job; a recipient
///     entry is 16 bytes plus its address.
///   - Destination: the per-domain ready queue (FIFO of (job, recipient)
///     references), its connections and its limits. A recipient's domain
///     hashes to exactly one shard, so a destination's limits are exact
///     without coordination.
///   - RetryGroup: the recipients of one transaction deferred together,
///     waiting on one timer of the shard's timer wheel until their next
///     attempt. Nothing is ever scanned to find due work.
///
/// Strategies (each kept simple and documented where it lives):
///   - transactions take consecutive recipients of the same job from the
///     ready queue, up to delivery.max_rcpts_per_txn;
///   - connections are opened on demand: enough to cover the estimated
///     number of queued transactions divided by the pipelining window, up
///     to the destination's current connection limit;
///   - dead destination: when a connection fails before the SMTP session
///     is ready and no other connection to the destination works, every
///     queued recipient is deferred with that failure (one retry group);
///   - concurrency feedback: a failure before ready while other connections
///     work (e.g. "421 too many connections") lowers the destination's
///     connection limit to what works; each successful transaction raises
///     it again, one connection per `kRecoverAfter` successes, up to the
///     configured maximum (Postfix's slow start and feedback, simplified);
///   - retries follow retry.schedule with jitter; a recipient whose batch
///     is older than retry.max_age bounces as expired at its next due time.
/// Thread safety: everything here belongs to one shard thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/config.h"
#include "engine/delivery_session.h"
#include "engine/events.h"
#include "engine/message.h"
#include "engine/resolver.h"
#include "engine/timer_wheel.h"

namespace ringmail::engine {

class Shard;
class SmtpConnection;
struct Destination;

enum class RcptStatus : uint8_t { kQueued, kInFlight, kDeferred, kFinal };

struct RcptEntry {
  uint32_t addr_off = 0;
  uint16_t addr_len = 0;
  uint16_t domain_off = 0;  // offset of the domain inside the address
  uint16_t attempts = 0;
  RcptStatus status = RcptStatus::kQueued;
};
static_assert(sizeof(RcptEntry) <= 16, "one queued recipient's fixed cost");

/// The recipients of one batch that belong to one shard.
struct Job {
  MessageRef msg;
  std::string addrs;  // every address, back to back (never modified after build)
  std::vector<RcptEntry> rcpts;
  uint32_t unfinished = 0;  // recipients not final
  uint32_t txns = 0;        // transactions in flight referencing this job

  std::string_view address(const RcptEntry& r) const {
    return std::string_view(addrs).substr(r.addr_off, r.addr_len);
  }
  std::string_view domain(const RcptEntry& r) const {
    return std::string_view(addrs).substr(r.addr_off + r.domain_off, r.addr_len - r.domain_off);
  }
  /// Adds a recipient; `domain_off` is where the domain starts in it.
  void add(std::string_view address, size_t domain_off);
};

struct QItem {
  Job* job;
  uint32_t idx;
};

struct RetryGroup {
  RetryGroup(Destination* d, void* scheduler);
  Timer timer;
  void* scheduler;  // the owning Scheduler
  Destination* dest;
  std::vector<QItem> items;
  std::string last_reply;  // summary of the reply that deferred them
};

struct Destination {
  std::string domain;  // lower-case
  const Route* route = nullptr;
  /// Where to connect, from the route (and DNS); refreshed when it expires.
  /// While a refresh runs, a previous good resolution stays in use.
  std::optional<RouteResolution> resolution;
  bool resolving = false;
  std::deque<QItem> ready;
  uint64_t ready_txns = 0;      // estimate of transactions in `ready`
  uint32_t connections = 0;     // open or opening
  uint32_t working = 0;         // whose session reached "ready"
  uint32_t conn_limit = 0;      // current limit (<= configured maximum)
  uint32_t successes = 0;       // since the last limit change
  std::vector<SmtpConnection*> idle;
  std::vector<SmtpConnection*> all;
  uint64_t retry_waiting = 0;   // recipients in retry groups
};

/// What the scheduler attaches to a SessionTxn (its cookie).
struct TxnCtx {
  Job* job;
  Destination* dest;
  std::vector<uint32_t> idx;
};

class Scheduler {
 public:
  explicit Scheduler(Shard& shard);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Takes ownership of `job` (all its recipients hash to this shard).
  void accept(Job* job);

  // --- from connections ---------------------------------------------------
  /// The connection's session can take transactions: feed it, or park it
  /// as idle when there is nothing to do.
  void feed(SmtpConnection* c);
  void connection_closed(SmtpConnection* c);
  void record_outcome(const SessionTxn& txn, size_t index, const Outcome& o,
                      std::string_view peer, std::string_view mx);
  void txn_done(SessionTxn& txn);
  void txn_returned(SessionTxn&& txn);
  /// An idle connection's idle time ran out: it will QUIT.
  void connection_expired(SmtpConnection* c);

  /// Timer callback of a RetryGroup.
  static void on_retry_timer(void* group);

  /// Recipients on this shard not yet final.
  uint64_t unfinished() const { return unfinished_; }
  uint64_t connections() const { return connections_; }
  /// Stops opening connections and asks every session to QUIT when idle.
  void begin_shutdown();
  /// Closes every connection now, deferring what is in flight.
  void abort_all();
  bool quiescent() const { return connections_ == 0; }

 private:
  Destination& destination(std::string_view domain);
  void enqueue_run(Destination& d, Job* job, uint32_t first, uint32_t count);
  void dispatch(Destination& d);
  bool give_txn(Destination& d, SmtpConnection* c);
  void open_connection(Destination& d);
  /// True when `d` has a usable resolution; starts or waits for one, or
  /// applies a resolution's bounce/defer verdict to the queue.
  bool ensure_route(Destination& d);
  void defer_queue(Destination& d, const proto::Reply& why, Stage stage);
  void bounce_queue(Destination& d, const proto::Reply& why, Stage stage);
  void emit_for(const QItem& q, EventType type, const proto::Reply& why, Stage stage,
                std::string_view note);
  void schedule_retry(Destination& d, std::vector<QItem> items, const std::string& why);
  void retry_due(RetryGroup* g);
  void finalize(Job* job, uint32_t idx);
  static void maybe_free(Job* job);
  void expire(Destination& d, QItem item, std::string_view last_reply);
  Millis retry_delay(uint16_t attempts);

  Shard& shard_;
  const Config& config_;
  std::unordered_map<std::string, std::unique_ptr<Destination>> dests_;
  std::unordered_set<RetryGroup*> retry_groups_;  // owned; each deleted when due
  std::mt19937_64 rng_;
  uint64_t unfinished_ = 0;
  std::string last_deferral_;  // summary of the latest deferring reply (for retry groups)
  uint64_t connections_ = 0;
  bool shutting_down_ = false;

  static constexpr uint32_t kRecoverAfter = 20;       // successes per extra connection
  static constexpr uint32_t kMaxConnectsInFlight = 16;  // per destination
};

}  // namespace ringmail::engine
