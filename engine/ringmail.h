/// ringmail.h — ringmail as a library: the public embedding API.
///
/// A platform that wants ringmail inside its own process starts an Engine
/// from a Config, submits batches (the same semantics as the Unix socket:
/// one message, many recipients, an acknowledgement saying what was
/// accepted), subscribes to per-recipient delivery events, and drains and
/// stops it. `ringmaild` is a thin main over this API.
///
/// Thread safety: every Engine method may be called from any thread.
/// Event callbacks run on the engine's shard threads, concurrently from
/// different shards; they must be quick and must not call back into the
/// Engine synchronously (queue the work instead).
///
/// Example:
///   auto cfg = ringmail::engine::parse_config(my_toml, "app");
///   auto eng = ringmail::Engine::start(std::move(*cfg));
///   (*eng)->subscribe([](const ringmail::EventView& e) { record(e.json); });
///   ringmail::Batch b{.sender = "news@example.com", .message = raw,
///                     .recipients = {"a@example.org", "b@example.net"}};
///   ringmail::proto::Ack ack = (*eng)->submit(b);
///   (*eng)->drain(std::chrono::seconds(60));
///   (*eng)->shutdown(std::chrono::seconds(5));
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/events.h"
#include "proto/batch_wire.h"
#include "proto/result.h"

namespace ringmail {

namespace engine {
class Runtime;
struct SpoolFaults;
}  // namespace engine

using engine::EventCallback;
using engine::EventType;
using engine::EventView;

struct Batch {
  std::string batch_id;  // optional; assigned when empty
  std::string sender;    // bare address; empty = null reverse-path
  std::string message;   // raw RFC 5322 bytes
  std::vector<std::string> recipients;
  std::string pool;  // egress pool by name; empty: pool rules or the default
  /// Further batch options, "name=value" (docs/protocol.md: dkim_domain,
  /// list_unsubscribe, list_unsubscribe_mailto, list_unsubscribe_post,
  /// feedback_id, personalise).
  std::vector<std::string> options;
  /// personalise=true: each recipient's variables, parallel to
  /// `recipients` (encoded with proto::append_var; may be shorter).
  std::vector<std::string> recipient_vars;
  /// Addresses the platform reports as unsubscribed (suppressed from now on).
  std::vector<std::string> unsubscribed;
};

struct Stats {
  uint64_t delivered = 0;   // delivered events
  uint64_t deferred = 0;    // deferred events (attempts that will be retried)
  uint64_t bounced = 0;     // bounced events
  uint64_t unfinished = 0;  // accepted recipients not yet final
  uint64_t connections_opened = 0;
  uint64_t transactions = 0;
  uint64_t unknown_outcomes = 0;
  uint64_t dropped = 0;         // dropped by an operator
  uint64_t queued_bytes = 0;    // memory charged to limits.max_queued_bytes
  uint64_t spool_damage = 0;    // damaged spool records found at start (reported in the log)
  uint64_t spool_segments = 0;  // spool segment files in use
  uint64_t spool_errors = 0;    // failed spool writes or fsyncs
  uint64_t submission_auth_checks = 0;  // AUTH password checks run (each a PBKDF2)
  uint64_t submission_reclaimed = 0;    // idle submission sessions closed to admit a client
  uint64_t submission_timeouts = 0;     // submission clients cut off by a deadline
};

class Engine {
 public:
  /// Starts the shards (and the socket listener when ingest.socket is set).
  /// `clock` (tests) must outlive the engine; null means the system clock.
  /// The configuration's log_level becomes the process's log level
  /// (engine/log.h: one level per process, whatever the number of engines).
  static Result<std::unique_ptr<Engine>> start(engine::Config config,
                                               const engine::Clock* clock = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Validates and queues a batch; returns its acknowledgement. Recipients
  /// reported as accepted will each get events ending in exactly one final
  /// one (delivered or bounced), unless the engine is shut down first.
  proto::Ack submit(const Batch& batch);
  uint64_t subscribe(EventCallback callback);
  void unsubscribe(uint64_t id);
  /// Waits until every accepted recipient is final, or `timeout` passes.
  bool drain(std::chrono::milliseconds timeout);
  /// Stops accepting, gives queued mail up to `grace`, then stops. With
  /// the spool off, what is still queued then is not kept.
  void shutdown(std::chrono::milliseconds grace);
  Stats stats() const;
  /// Runs an operator command (the ringmail-ctl commands: "list [PATTERN]",
  /// "pause PATTERN", "resume PATTERN", "flush PATTERN", "drop-batch ID",
  /// "stats", "suppression list|check|add|remove …", "reopen-logs") and
  /// returns the JSON reply. Blocks until every shard answered.
  std::string control(std::string_view command);
  /// Reopens events.file by name, for log rotation: the file was renamed,
  /// and lines from now on go to a new file at the configured path. Each
  /// shard switches between two writes, so every line lands whole in
  /// exactly one file — in the old one if it was produced before the call.
  /// Returns once every line meant for the old file is written, so it can
  /// be compressed or removed then. Without an event file: nothing to do.
  /// Errors: the file cannot be opened (the old one stays in use), or the
  /// engine is stopping. Blocks until then; like control(), it must not
  /// race shutdown() (a shard that stops first never answers).
  Result<void> reopen_event_file();
  /// Liveness, for a supervisor's watchdog: per shard, how many loop
  /// iterations it has completed. Each call also wakes every shard, so a
  /// healthy shard's count has moved by the next call however idle it is;
  /// one that stays put across calls some time apart is stuck (a shard
  /// falling asleep just as it is woken may need one call more).
  std::vector<uint64_t> loop_iterations();
  const engine::Config& config() const;
  /// With a ManualClock: after advancing it, wake the shards so they look at
  /// their timers.
  void wake_for_test();
  /// Disk faults injected into the spool's I/O layer (process-wide).
  static engine::SpoolFaults& spool_faults_for_test();

 private:
  explicit Engine(std::unique_ptr<engine::Runtime> rt);
  std::unique_ptr<engine::Runtime> rt_;
};

}  // namespace ringmail
