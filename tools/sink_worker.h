/// sink_worker.h — ringmail-sink's threads: one Worker per thread, each with
/// its own io_uring, timer wheel, listening sockets (SO_REUSEPORT) and
/// connections; plus the few things all workers share.
///
/// Threads: a Worker is created by main(), then run() on its own thread;
/// only that thread touches its ring, timers and connections. Any thread
/// may call request_stop() and read stats(). SinkShared is read-only
/// except for its atomics and the locked SeenAddresses.
///
/// Counters: each worker writes its own WorkerStats (single writer, relaxed
/// stores, alignas(64) so workers never share a cache line); main() sums
/// them for the stats file and the exit line. A message is counted when its
/// 2xx reply is written, before the reply is sent, so a client that read
/// the 250 finds the count in the next stats file.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/ring.h"
#include "engine/timer_wheel.h"
#include "proto/smtp_server.h"
#include "tools/sink_options.h"
#include "tools/sink_policy.h"

namespace ringmail::tools {

class SinkConnection;

/// One worker's counters. Written only by the worker's thread.
struct alignas(64) WorkerStats {
  std::atomic<uint64_t> messages{0};      // transactions answered 2xx at end of data
  std::atomic<uint64_t> recipients{0};    // accepted recipients of those transactions
  std::atomic<uint64_t> connections{0};   // TCP connections accepted (refused ones too)
  std::atomic<uint64_t> deferred{0};      // transactions answered 4xx by the sink at end of data
  std::atomic<uint64_t> rejected{0};      // transactions answered 5xx by the sink at end of data
  std::atomic<uint64_t> dropped{0};       // transactions closed without a reply at end of data
  std::atomic<uint64_t> rcpt_refused{0};  // recipients the sink refused at RCPT
  std::atomic<uint64_t> bytes{0};         // bytes read from client sockets
  std::atomic<int64_t> first_connection_ns{0};  // steady clock; 0 = none yet
  std::atomic<int64_t> last_message_ns{0};      // steady clock; 0 = none yet
};

/// A consistent-enough sum of every worker's counters.
struct StatsSnapshot {
  uint64_t messages = 0;
  uint64_t recipients = 0;
  uint64_t connections = 0;
  uint64_t deferred = 0;
  uint64_t rejected = 0;
  uint64_t dropped = 0;
  uint64_t rcpt_refused = 0;
  uint64_t bytes = 0;
  double elapsed_s = 0;  // first connection to last accepted message

  bool operator==(const StatsSnapshot&) const = default;
  /// One JSON object, no line end.
  void append_json(std::string& out) const;
};

/// State shared by all workers.
struct SinkShared {
  explicit SinkShared(const SinkOptions& o) : options(o) {}

  const SinkOptions& options;
  /// Admitted sessions over all workers, for --max-connections.
  std::atomic<uint32_t> active_sessions{0};
  /// Last --dump-dir file number handed out.
  std::atomic<uint64_t> dump_seq{0};
  int rcpt_log_fd = -1;  // --rcpt-log, O_APPEND: each line one write
  SeenAddresses seen;
};

class Worker {
 public:
  /// Takes ownership of `listen_fds` (bound, listening, non-blocking).
  Worker(SinkShared& shared, unsigned index, std::vector<int> listen_fds);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// On the worker's thread, before run(): creates the ring (its issuer is
  /// this thread) and arms the accepts.
  [[nodiscard]] Result<void> init();
  /// On the worker's thread: serves until request_stop(), then closes every
  /// connection and returns.
  void run();
  /// Any thread.
  void request_stop();
  /// Any thread.
  const WorkerStats& stats() const { return stats_; }

  // For SinkConnection (worker thread only).
  engine::Ring& ring() { return *ring_; }
  engine::TimerWheel& timers() { return *timers_; }
  engine::TimePoint now() const { return now_; }
  WorkerStats& mutable_stats() { return stats_; }
  SinkShared& shared() { return shared_; }
  const SinkOptions& options() const { return shared_.options; }
  const proto::ServerConfig& server_config() const { return server_config_; }
  FaultPolicy& policy() { return policy_; }
  /// The connection has no outstanding operation and no armed timer; it is
  /// destroyed after the current completion batch.
  void retire(SinkConnection* c);

 private:
  struct Listener final : engine::Completion {
    Worker* worker = nullptr;
    int fd = -1;
    bool armed = false;
    void complete(int res, uint32_t flags) override;
  };
  struct WakeOp final : engine::Completion {
    Worker* worker = nullptr;
    uint64_t value = 0;
    bool armed = false;
    void complete(int res, uint32_t flags) override;
  };

  void arm_accept(Listener& l);
  void on_accept(Listener& l, int res, uint32_t flags);
  void admit(int fd);
  void begin_stop();
  void destroy_retired();
  static void on_accept_retry(void* self);

  SinkShared& shared_;
  unsigned index_;
  proto::ServerConfig server_config_;
  FaultPolicy policy_;
  std::unique_ptr<engine::Ring> ring_;
  std::unique_ptr<engine::TimerWheel> timers_;
  engine::TimePoint now_{};
  std::vector<std::unique_ptr<Listener>> listeners_;
  WakeOp wake_op_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_requested_{false};
  bool stopping_ = false;
  bool accept_error_logged_ = false;
  engine::Timer accept_retry_timer_;
  SinkConnection* connections_ = nullptr;  // intrusive list of live connections
  size_t connection_count_ = 0;
  std::vector<SinkConnection*> retired_;
  WorkerStats stats_;

  friend class SinkConnection;
};

}  // namespace ringmail::tools
