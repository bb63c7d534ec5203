/// scheduler.h — a shard's queues: jobs, destinations, retries, shaping.
///
/// Vocabulary (after KumoMTA's queues and Postfix's qmgr):
///   - Job: the recipients of one batch that belong to this shard, with the
///     shared Message. Addresses live in one arena per job; a recipient
///     entry is 16 bytes plus its address.
///   - Destination: one recipient domain sent through one egress pool. It
///     holds the FIFO ready queue of (job, recipient) references, the route
///     resolution, and one SourceState per source of the pool: connections,
///     token buckets and backoff are per (source, destination), so the
///     limits of [delivery] and [[shaping]] hold exactly per source. A
///     domain hashes to exactly one shard, so no coordination is needed.
///   - RetryGroup: the recipients of one transaction deferred together,
///     waiting on one timer of the shard's wheel. Nothing is ever scanned
///     to find due work.
///
/// Strategies, each simple and stated here:
///   - transactions take consecutive recipients of the same job from the
///     ready queue, up to the destination's max_rcpts_per_txn, and each
///     takes one token of the source's msg_rate bucket;
///   - connections open on demand (enough for the queued transactions
///     divided by the pipelining window), round robin over the pool's
///     sources that are below their connection limit, not paused by a
///     backoff and have a connect_rate token;
///   - backoff, per source: a 421, or a connection that fails before its
///     session is ready while nothing to the destination works, halves the
///     source's connection limit and holds new transactions and
///     connections for shaping.backoff. A failed connection while others
///     work only lowers the limit to what works. Throttling replies to
///     transactions ("too many", "rate limit", 4.7.x; not greylisting —
///     proto::is_throttling_reply / is_greylisting_reply) defer their own
///     recipients and back off once shaping.backoff_after of them arrive
///     within shaping.backoff_window. Events "backoff" and "resume" mark
///     both ends. After the backoff, each kRecoverAfter successful
///     transactions raise the limit by one up to the maximum (additive
///     increase, multiplicative decrease);
///   - failing destination: after a failed connection with nothing
///     working, no new attempt starts while others are still connecting;
///     once none is left the queue is deferred (one retry group per job
///     run). While every source holds, what waits or arrives is deferred
///     with the hold's reason rather than kept behind it;
///   - expiry: past max_age a recipient bounces as expired — at its retry
///     time, when a transaction would take it, or by the destination's
///     expiry timer while it waits in the queue (paused, held, rate
///     limited, unroutable);
///   - retries follow the destination's retry schedule with jitter.
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
#include "engine/provider_rules.h"
#include "engine/resolver.h"
#include "engine/spool.h"
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
  uint32_t retry_at_s = 0;  // next retry, seconds after the batch was accepted (0 = now)
};
static_assert(sizeof(RcptEntry) <= 16, "one queued recipient's fixed cost");

/// The recipients of one batch that belong to one shard.
struct Job {
  MessageRef msg;
  std::string addrs;  // every address, back to back (never modified after build)
  std::vector<RcptEntry> rcpts;
  uint32_t unfinished = 0;           // recipients not final
  uint32_t txns = 0;                 // transactions in flight referencing this job
  uint64_t spool_id = 0;             // its JOB record's id (0: not spooled)
  std::vector<uint64_t> spool_segs;  // segments holding its records

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
  std::string last_reply;            // summary of the reply that deferred them
  int64_t last_attempt_wall_ms = 0;  // when that was (wall clock); 0: not known
};

/// A token bucket: `rate` tokens per second, a burst of one tenth of a
/// second's worth (at least one).
class TokenBucket {
 public:
  void configure(Rate rate, TimePoint now);
  bool limited() const { return rate_ > 0; }
  /// Takes a token if one is available at `now`.
  bool try_take(TimePoint now);
  /// When the next token is available.
  TimePoint next_token(TimePoint now) const;

 private:
  void refill(TimePoint now);
  double rate_ = 0;
  double burst_ = 1;
  double tokens_ = 1;
  TimePoint last_{};
};

struct SourceState {
  uint32_t source = 0;       // index into Config::egress.sources
  uint32_t connections = 0;  // open or opening
  uint32_t working = 0;      // whose session reached "ready"
  uint32_t conn_limit = 1;   // current limit (<= shaping.max_connections)
  uint32_t successes = 0;    // since the last limit change
  TokenBucket msgs;
  TokenBucket connects;
  bool backing_off = false;
  bool hold_txns = false;     // during a backoff: no new transactions, no new connections
  bool hold_connect = false;  // the hold came from failed connection attempts only
  TimePoint backoff_until{};
  TimePoint suspend_until{};  // an automation rule's Suspend: the hold lasts at least this long
  proto::Reply hold_reply;    // what started the backoff (the deferral reason while held)
  Stage hold_stage = Stage::kConnect;
  std::deque<TimePoint> signals;  // recent throttling replies (shaping.backoff_after)
  std::vector<SmtpConnection*> idle;
};

struct Destination {
  Destination(void* scheduler);
  std::string domain;  // lower-case
  uint32_t pool = 0;
  Shaping shaping;
  const Route* route = nullptr;
  uint64_t route_gen = 0;  // bumped when a reload changes the route: older lookups are dropped
  /// Where to connect, from the route (and DNS); refreshed when it expires.
  /// While a refresh runs, a previous good resolution stays in use.
  std::optional<RouteResolution> resolution;
  bool resolving = false;
  bool paused = false;   // by an operator
  bool failing = false;  // a connection failed and none has worked since
  std::deque<QItem> ready;
  uint64_t ready_txns = 0;    // estimate of transactions in `ready`
  uint32_t job_new = 0;       // recipients of the job being queued (Scheduler::settle_job)
  bool touched = false;       // waiting in Scheduler::touched_ for dispatch
  bool waiting_slot = false;  // in Scheduler::slot_waiters_
  uint64_t in_flight = 0;     // recipients in transactions
  uint64_t retry_waiting = 0;
  std::vector<SourceState> sources;
  std::vector<SmtpConnection*> all;
  uint32_t next_source = 0;  // round robin
  uint64_t connects = 0;     // connections started: rotates equal-preference MX hosts
  Timer wake;                // rate limit or backoff end: dispatch again
  Timer expiry;              // the earliest max_age of anything in `ready`
  TimePoint expiry_at{};     // when `expiry` fires (a lower bound of the real earliest)
  // Provider rules ([provider_shaping], engine/provider_rules.h).
  std::vector<std::string> mx_names;  // of the resolution the limits were computed for
  std::string provider;               // the matching provider block, if any
  std::vector<const AutomationRule*> automation;
  struct RuleHits {
    const AutomationRule* rule;
    std::deque<TimePoint> at;  // recent matches, within rule->window
  };
  std::vector<RuleHits> rule_hits;
  struct Effect {
    uint64_t id;
    const AutomationRule* rule;
    std::shared_ptr<const ProviderRules> rules;  // keeps `rule` alive across reloads
    TimePoint until;
    int64_t until_wall_ms;
    proto::Reply reply;  // the reply that fired it
  };
  std::vector<Effect> effects;  // active automation effects, in firing order
  Timer effects_timer;          // the earliest effect's end
  void* scheduler;
  // For operators (ringmail-ctl queue): the latest deferring reply's
  // summary, and when it came (wall clock; 0: none yet).
  std::string last_error;
  int64_t last_error_wall_ms = 0;

  uint32_t connections() const;
  uint32_t working() const;
};

/// What the scheduler attaches to a SessionTxn (its cookie).
struct TxnCtx {
  Job* job;
  Destination* dest;
  uint32_t source;  // index into dest->sources
  bool throttled = false;
  bool automated = false;  // automation rules saw this transaction's first refusal
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
  /// The shard's configuration was reloaded (Shard::config() is the new
  /// one; the previous one is still alive during the call): every
  /// destination takes its new limits, route and automation rules.
  /// Connections and transactions under way keep what they started with;
  /// active automation effects run to their end; automation hit counts
  /// start over. A destination whose route changed forgets its resolution,
  /// so no new connection follows the old route.
  void reconfigure();
  /// Takes the jobs the spool recovered: unfinished recipients go to their
  /// destination's queue, or wait for their recorded retry time.
  void accept_recovered(std::vector<RecoveredJob> jobs);

  // --- from connections ---------------------------------------------------
  /// The connection's session can take transactions: feed it, or park it
  /// as idle when there is nothing to do.
  void feed(SmtpConnection* c);
  /// The connection's session became usable for the first time (it no
  /// longer counts against delivery.max_connecting).
  void connection_ready(SmtpConnection* c);
  void connection_closed(SmtpConnection* c);
  /// `tls`: SmtpConnection::tls_summary() (empty: plaintext).
  void record_outcome(const SessionTxn& txn, size_t index, const Outcome& o, std::string_view peer,
                      std::string_view mx, std::string_view tls);
  void txn_done(SessionTxn& txn);
  void txn_returned(SessionTxn&& txn);
  /// An idle connection's idle time ran out: it will QUIT.
  void connection_expired(SmtpConnection* c);

  // --- operator controls (ringmail-ctl), this shard's share ---------------
  /// Destinations whose domain matches `pattern` ("*" = all, "*.suffix", or
  /// an exact name); pausing also applies to destinations created later.
  size_t pause(const std::string& pattern, bool paused);
  /// Makes every waiting retry of matching destinations due now.
  size_t flush(const std::string& pattern);
  /// Removes the queued recipients of a batch (dropped events); recipients
  /// in flight finish normally. Returns how many were dropped.
  size_t drop_batch(const std::string& batch_id);
  /// Appends a JSON object per matching destination to `out` (comma
  /// separated, no brackets). Costs a pass over the retry groups and over
  /// the listed destinations' ready queues (for the oldest recipient).
  void list(const std::string& pattern, std::string* out) const;
  /// Active automation effects of matching destinations, as JSON objects
  /// (comma separated).
  void list_rule_effects(const std::string& pattern, std::string* out) const;
  /// Ends the effect with this id ("SHARD:N") or, for a domain pattern,
  /// every effect of the matching destinations. Returns how many ended.
  size_t cancel_rule_effects(const std::string& what);

  /// Timer callbacks.
  static void on_retry_timer(void* group);
  static void on_wake_timer(void* dest);
  static void on_expiry_timer(void* dest);
  static void on_effects_timer(void* dest);

  /// Recipients on this shard not yet final.
  uint64_t unfinished() const { return unfinished_; }
  uint64_t connections() const { return connections_; }
  /// Connections being set up (against delivery.max_connecting).
  uint32_t connecting() const { return connecting_; }
  /// Recipients queued, waiting for a retry and in transactions (/metrics).
  void queue_depth(uint64_t* ready, uint64_t* retry_waiting, uint64_t* in_flight) const;
  /// Stops opening connections and asks every session to QUIT when idle.
  void begin_shutdown();
  /// Closes every connection now, deferring what is in flight.
  void abort_all();
  bool quiescent() const { return connections_ == 0; }

 private:
  Destination& destination(std::string_view domain, uint32_t pool);
  // Queueing: enqueue() every recipient of a job, settle_job() to count
  // the job's transactions per destination, dispatch_touched() once.
  void enqueue_job(Job* job);
  void enqueue(Destination& d, Job* job, uint32_t idx);
  void settle_job();
  void dispatch_touched();
  void grant_slots();
  void dispatch(Destination& d);
  void open_more(Destination& d);
  void feed_one(SmtpConnection* c);
  bool give_txn(Destination& d, SmtpConnection* c);
  void open_connection(Destination& d, uint32_t source);
  /// True when `d` has a usable resolution; starts or waits for one, or
  /// applies a resolution's bounce/defer verdict to the queue.
  bool ensure_route(Destination& d);
  void defer_queue(Destination& d, const proto::Reply& why, Stage stage);
  void bounce_queue(Destination& d, const proto::Reply& why, Stage stage);
  void emit_for(const QItem& q, EventType type, const proto::Reply& why, Stage stage,
                std::string_view note, std::string_view peer = {}, std::string_view mx = {},
                bool unknown = false, std::string_view tls = {});
  void schedule_retry(Destination& d, std::vector<QItem> items, const std::string& why);
  void retry_due(RetryGroup* g);
  void finalize(Job* job, uint32_t idx);
  void maybe_free(Job* job);
  void expire(Destination& d, QItem item, std::string_view last_reply,
              int64_t last_attempt_wall_ms);
  Millis retry_delay(const Destination& d, uint16_t attempts);
  /// A backoff signal for source `s`: lowers its connection limit and,
  /// with `hold`, stops new transactions and connections until
  /// shaping.backoff has passed.
  void throttle(Destination& d, SourceState& s, const proto::Reply& why, Stage stage, bool hold);
  /// A throttling reply to one transaction: backs off once
  /// shaping.backoff_after of them arrived within shaping.backoff_window.
  void throttle_signal(Destination& d, SourceState& s, const proto::Reply& why, Stage stage);
  /// Every source of `d` holds: nothing queued can be sent before the
  /// backoff ends.
  bool held_everywhere(const Destination& d) const;
  /// Recipients in `ready` that reached max_age bounce as expired (the
  /// expiry timer, and every transaction built, check this).
  bool expired(const Destination& d, const QItem& q, TimePoint now) const;
  void arm_expiry(Destination& d, const Job* job);
  void sweep_expired(Destination& d);
  std::string hold_reason(const Destination& d) const;
  /// Recomputes the destination's limits: configuration and provider rules
  /// for its MX names, then the active SetConfig effects.
  void apply_shaping(Destination& d);
  /// The route resolved: provider rules may now match on the MX names.
  void shape_for_route(Destination& d);
  /// A refusal (a deferral, a bounce, a failed connection) seen by the
  /// destination's automation rules.
  void automate(Destination& d, const proto::Reply& reply);
  void fire(Destination& d, const AutomationRule& rule, const proto::Reply& reply);
  void end_effect(Destination& d, size_t index);
  void expire_effects(Destination& d);
  const Destination::Effect* bouncing(const Destination& d) const;
  void end_backoffs(Destination& d, TimePoint now);
  void arm_wake(Destination& d, TimePoint when);
  void destination_event(const Destination& d, const SourceState& s, EventType type,
                         std::string_view reason);
  bool matches(const std::string& pattern, const std::string& domain) const;

  Shard& shard_;
  const Config* config_;  // the shard's current configuration (reconfigure())
  std::unordered_map<std::string, std::unique_ptr<Destination>> dests_;
  std::unordered_set<RetryGroup*> retry_groups_;  // owned; each deleted when due
  std::vector<std::string> paused_patterns_;
  std::mt19937_64 rng_;
  uint64_t unfinished_ = 0;
  uint64_t connections_ = 0;
  bool shutting_down_ = false;
  std::vector<Destination*> job_touched_;  // destinations of the job being queued
  std::vector<Destination*> touched_;      // destinations to dispatch
  // Connections being set up (not yet usable), against
  // delivery.max_connecting; destinations that want more wait in line.
  uint32_t connecting_ = 0;
  std::deque<Destination*> slot_waiters_;
  bool granting_ = false;
  bool aborting_ = false;      // abort_all(): connections close because we stop
  std::string last_deferral_;  // summary of the latest deferring reply (for retry groups)
  uint64_t next_effect_id_ = 1;

  static constexpr uint32_t kRecoverAfter = 20;         // successes per extra connection
  static constexpr uint32_t kMaxConnectsInFlight = 16;  // per destination
};

}  // namespace ringmail::engine
