/// runtime.h — the engine's internals behind the public API (ringmail.h):
/// shards, the cross-shard rings, batch acceptance and accounting.
///
/// Thread safety is stated per method. The Runtime outlives its shards'
/// threads: start() returns once every shard's ring is up, shutdown() joins
/// them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/config.h"
#include "engine/dkim.h"
#include "engine/events.h"
#include "engine/scheduler.h"
#include "engine/shard.h"
#include "engine/suppression.h"
#include "proto/batch_wire.h"

namespace ringmail::engine {

/// A batch as the embedding API and the socket ingest hand it over.
struct BatchInput {
  std::string_view batch_id;  // empty: one is assigned
  std::string_view sender;
  std::string_view message;
  std::vector<std::string_view> recipients;
  uint64_t origin = 0;  // ingest connection id; 0 = embedding API
  std::string_view auth_user;
  std::vector<std::string_view> options;  // "name=value" (docs/protocol.md, BATCH options)
  /// Parallel to `recipients` (may be shorter; missing = none): each
  /// recipient's encoded variables (proto/template.h) for personalise=true.
  std::vector<std::string_view> recipient_vars;
  /// Addresses the platform reports as unsubscribed: added to suppression.
  std::vector<std::string_view> unsubscribed;
};

/// Memory charged per queued recipient besides its address (entry, queue
/// reference, bookkeeping), for the limits.max_queued_bytes budget.
inline constexpr uint64_t kRecipientOverhead = 48;

class Runtime {
 public:
  /// Starts the shards. `clock` may be null (system clock); when given it
  /// must outlive the Runtime. Errors: ring creation, event file, socket.
  static Result<std::unique_ptr<Runtime>> start(Config config, const Clock* clock);
  ~Runtime();

  // --- any thread -----------------------------------------------------------
  /// The configuration the engine started with. Sections a reload changes
  /// (see reload()) are read through Shard::config() instead.
  const Config& config() const { return config_; }
  /// config() as a shared pointer that does not own it (shards start on it).
  std::shared_ptr<const Config> initial_config() const {
    return std::shared_ptr<const Config>(std::shared_ptr<const Config>(), &config_);
  }
  const Clock& clock() const { return *clock_; }
  uint32_t shard_count() const { return static_cast<uint32_t>(shards_.size()); }
  uint32_t shard_for_domain(std::string_view lower_domain) const;
  /// Runs `fn` on shard `dst`'s thread.
  void post_external(uint32_t dst, std::function<void(Shard&)> fn);
  /// Validates a batch, splits it into per-shard jobs and queues them; with
  /// the spool on, only once every job is durable (sync) or written (async).
  /// `done` gets the acknowledgement: on `from_shard`'s thread when it is a
  /// shard (-1: a non-shard caller; then on whichever shard finished, or
  /// on the caller's thread before returning). Validation runs on the
  /// caller's thread.
  using AckFn = std::function<void(proto::Ack)>;
  void submit_batch(const BatchInput& in, int from_shard, AckFn done);
  /// Like submit_batch, returning the acknowledgement directly. Only for
  /// callers that cannot wait: with the spool on it must not run on a
  /// shard thread (it would wait for that shard).
  proto::Ack accept_batch(const BatchInput& in, int from_shard);
  /// Recipients recovered from the spool at start.
  void add_recovered(uint64_t recipients, uint64_t addr_bytes);
  /// A job that was never acknowledged is dropped: return its charges.
  void abandon(uint64_t recipients, uint64_t addr_bytes);
  /// The DKIM signer built from [[dkim]] (null without keys). Any thread;
  /// a reload replaces it (messages signed before keep theirs).
  std::shared_ptr<const DkimSigner> dkim_signer() const {
    std::lock_guard lock(dkim_mu_);
    return dkim_;
  }
  /// What a configuration reload did (Engine::reload, ringmail-ctl reload).
  struct ReloadReport {
    std::vector<std::string> applied;           // changed sections now in force
    std::vector<std::string> restart_required;  // changed sections kept as they were
  };
  using ReloadFn = std::function<void(Result<ReloadReport>)>;
  /// Applies a new configuration without a restart: [delivery], [[shaping]],
  /// [provider_shaping], [routing], [retry], [bounces], [[dkim]] (keys are
  /// read again), [tls] (and the submission listeners' certificates, read
  /// again), [suppression] (enabled and TTLs) and log_level. A change to
  /// any other section is reported in restart_required and not applied.
  /// Nothing changes when something fails (a key file, a certificate):
  /// `done` then gets the error. Mail in flight is unaffected: connections
  /// and transactions under way finish with what they started with.
  /// Reloads are serialised. `done` runs as for reopen_event_file.
  void reload(Config fresh, int from_shard, ReloadFn done);
  /// Where `ringmail-ctl reload` reads the configuration from (the file
  /// the engine started from). Without one, the command says so.
  void set_config_source(std::function<Result<Config>()> source);
  /// Reads the configuration source and reloads it (the control command).
  void reload_from_source(int from_shard, ReloadFn done);
  static std::string reload_json(const ReloadReport& r);
  /// The suppression list ([suppression]). Any thread (it locks itself).
  SuppressionList& suppression() { return *suppression_; }
  /// Runs an operator command (list, pause, resume, flush, drop-batch,
  /// stats, suppression …; see ringmail-ctl) on every shard and calls `done` with the JSON
  /// reply on shard 0's thread. `from_shard` as for accept_batch.
  void control(std::string_view line, int from_shard, std::function<void(std::string)> done);
  uint64_t subscribe(EventCallback cb);
  void unsubscribe(uint64_t id);
  /// Recipients accepted and not yet final.
  uint64_t unfinished() const { return unfinished_.load(std::memory_order_acquire); }
  /// Waits until unfinished() == 0 or `timeout` passes. True when idle.
  bool wait_idle(Millis timeout);
  /// Stops accepting, waits up to `grace` for queued mail, then closes every
  /// connection (in-flight recipients deferred) and joins the shards.
  void shutdown(Millis grace);
  /// Tests with a ManualClock: wake every shard so timers are re-examined.
  void wake_all();
  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  /// The event file shards start with (null: none).
  std::shared_ptr<EventFile> event_file() {
    std::lock_guard lock(event_file_mu_);
    return event_file_;
  }
  /// Reopens events.file by name (log rotation; Engine::reopen_event_file):
  /// every shard switches between two writes. `done` gets "" or what went
  /// wrong once every line meant for the old file is written: on shard
  /// `from_shard`'s thread (-1: a non-shard caller; then on whichever shard
  /// finished last, or on the caller's thread before returning).
  void reopen_event_file(int from_shard, std::function<void(std::string error)> done);
  /// Per shard, the loop iterations completed so far; wakes every shard so
  /// an idle one turns before the next look.
  std::vector<uint64_t> loop_iterations();
  int ingest_listen_fd() const { return listen_fd_; }
  int control_listen_fd() const { return control_fd_; }
  /// Listening sockets of submission.listeners, in order (shard 0 serves them).
  const std::vector<int>& submission_listen_fds() const { return submission_fds_; }
  /// The [http] listening socket (shard 0 serves it), or -1.
  int http_listen_fd() const { return http_fd_; }
  uint32_t socket_subscribers() const {
    return socket_subscribers_.load(std::memory_order_acquire);
  }
  void add_socket_subscriber(int delta) { socket_subscribers_.fetch_add(delta); }

  struct Totals {
    uint64_t delivered = 0, deferred = 0, bounced = 0, dropped = 0, connections_opened = 0,
             transactions = 0, unknown_outcomes = 0, unfinished = 0, queued_bytes = 0,
             spool_damage = 0, spool_segments = 0, spool_errors = 0, submission_auth_checks = 0,
             submission_reclaimed = 0, submission_timeouts = 0;
  };
  Totals totals() const;

  // --- shard threads ----------------------------------------------------------
  Shard& shard(uint32_t i) { return *shards_[i]; }
  ShardRing& ring(uint32_t from, uint32_t to) { return *rings_[from * shard_count() + to]; }
  void recipient_final(size_t addr_bytes);
  uint64_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }
  /// The memory budget counter messages are charged to.
  std::atomic<uint64_t>* budget_counter() { return &queued_bytes_; }
  /// Shard i finished creating its ring (ok or not).
  void shard_started(uint32_t id, Result<void> result);

 private:
  Runtime(Config config, const Clock* clock);
  std::string next_batch_id();
  /// Validation and job building shared by the submit paths. Returns the
  /// ack; when it says accepted, `jobs` holds the per-shard jobs (not yet
  /// handed to any shard).
  proto::Ack build_jobs(const BatchInput& in, std::vector<Job*>* jobs);
  /// "suppression list|check|add|remove …": runs on the caller's thread.
  std::string suppression_command(std::string_view args);
  /// A final bounce seen by the internal event subscriber (any shard).
  void note_bounce(const EventView& ev);
  void flush_loop();

  mutable std::mutex dkim_mu_;
  std::shared_ptr<const DkimSigner> dkim_;
  std::mutex reload_mu_;  // reloads are serialised: every shard sees them in one order
  std::shared_ptr<const Config> current_;  // the last configuration applied (null: config_)
  std::function<Result<Config>()> config_source_;
  std::unique_ptr<SuppressionList> suppression_;
  std::thread flush_thread_;  // writes the suppression log every flush_interval
  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  bool flush_stop_ = false;
  std::atomic<uint64_t> message_ids_{0};
  uint64_t message_id_seed_ = 0;

  Config config_;
  const Clock* clock_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::unique_ptr<ShardRing>> rings_;
  std::vector<std::unique_ptr<MpscQueue>> external_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> unfinished_{0};
  std::atomic<uint64_t> queued_bytes_{0};  // message bodies + per-recipient state
  std::atomic<uint64_t> batch_seq_{0};
  std::atomic<uint64_t> subscriber_seq_{0};
  std::atomic<uint32_t> socket_subscribers_{0};
  std::atomic<bool> accepting_{true};
  std::string batch_prefix_;
  std::mutex event_file_mu_;  // reopens are serialised: every shard sees them in one order
  std::shared_ptr<EventFile> event_file_;
  int spool_lock_fd_ = -1;  // flock on spool.dir/lock while the engine runs
  int listen_fd_ = -1;
  int control_fd_ = -1;
  std::vector<int> submission_fds_;
  int http_fd_ = -1;
  bool stopped_ = false;

  std::mutex mu_;  // start-up handshake and idle waits only, never the data path
  std::condition_variable cv_;
  uint32_t started_ = 0;
  std::vector<Error> start_errors_;

  friend class Shard;
  MpscQueue& external_queue(uint32_t i) { return *external_[i]; }
};

}  // namespace ringmail::engine
