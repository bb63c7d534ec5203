/// ringmail.hpp — ringmail as a library: the C++ embedding API.
///
/// A platform that wants ringmail inside its own process starts an Engine
/// from a TOML configuration, submits batches (the semantics of the Unix
/// socket: one message, many recipients, an acknowledgement saying what
/// was accepted), subscribes to per-recipient delivery events, and drains
/// and stops it. `ringmaild` is a thin main over this API; ringmail_c.h
/// offers the same to other languages.
///
/// This header needs only the C++20 standard library: the engine's
/// internals (io_uring, wolfSSL, c-ares, toml++) stay behind `Engine::Impl`
/// and `Config::Impl`.
///
/// Threads: every Engine method may be called from any thread,
/// concurrently, except the destructor, which must not race other calls.
/// Event callbacks run on the engine's shard threads, concurrently from
/// different shards. A callback must be quick, must not throw, and must not
/// wait for the engine: drain(), control(), shutdown() and the destructor
/// need the shard the callback is holding. Those calls detect it: drain()
/// returns false, control() returns an error reply, and shutdown() or the
/// destructor from a callback stop the process with a message.
///
/// Errors: starting reports failures as an Expected<T> holding a Failure;
/// submit() reports them in the Ack. The API throws nothing of its own;
/// the standard library's exceptions for exhausted resources
/// (std::bad_alloc, std::system_error when a thread cannot be created) pass
/// through.
///
/// ABI: the C++ types live in the inline namespace ringmail::v0_1, which
/// names the C++ ABI; docs/embedding.md has the rules.
///
/// Example:
///   auto eng = ringmail::Engine::start_toml(R"([routing]
///   default = "mx")");
///   if (!eng) { std::cerr << eng.error().message; return 1; }
///   (*eng)->subscribe([](const ringmail::EventView& e) { record(e.json); });
///   ringmail::Batch b{.sender = "news@example.com", .message = raw,
///                     .recipients = {"a@example.org", "b@example.net"}};
///   ringmail::Ack ack = (*eng)->submit(b);
///   (*eng)->drain(std::chrono::seconds(60));
///   (*eng)->shutdown(std::chrono::seconds(5));
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ringmail/version.h"

namespace ringmail {
namespace engine {
struct EngineAccess;  // the tests' entry (engine/testing.h, not installed)
}  // namespace engine

inline namespace v0_1 {

// --- results -----------------------------------------------------------------

/// What kind of failure stopped a call; the message says the rest.
enum class FailureKind : uint8_t {
  kConfig,       // the configuration is invalid; the message names the key
  kSystem,       // the operating system refused (file, socket, spool directory, threads)
  kUnsupported,  // the kernel lacks something ringmail needs (io_uring)
  kBusy,         // a resource is held elsewhere (another engine on the spool)
  kInternal,
};

struct Failure {
  FailureKind kind = FailureKind::kInternal;
  std::string message;  // for humans: what failed and why
};

/// A value or the Failure that prevented it. Calling value() (or `*`, `->`)
/// on a failure, or error() on a value, is a precondition violation that
/// aborts the process.
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}            // NOLINT: implicit
  Expected(Failure failure) : v_(std::in_place_index<1>, std::move(failure)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return *checked_value(); }
  const T& value() const& { return *checked_value(); }
  T&& value() && { return std::move(*checked_value()); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return checked_value(); }
  const T* operator->() const { return checked_value(); }

  const Failure& error() const {
    const Failure* f = std::get_if<1>(&v_);
    if (f == nullptr) {
      std::abort();
    }
    return *f;
  }

 private:
  T* checked_value() {
    T* v = std::get_if<0>(&v_);
    if (v == nullptr) {
      std::abort();
    }
    return v;
  }
  const T* checked_value() const {
    const T* v = std::get_if<0>(&v_);
    if (v == nullptr) {
      std::abort();
    }
    return v;
  }

  std::variant<T, Failure> v_;
};

/// Success, or the Failure that prevented it.
template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Failure failure) : failure_(std::move(failure)), failed_(true) {}  // NOLINT: implicit

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Failure& error() const {
    if (!failed_) {
      std::abort();
    }
    return failure_;
  }

 private:
  Failure failure_;
  bool failed_ = false;
};

// --- configuration -----------------------------------------------------------

/// A parsed and validated configuration (docs/configuration.md): TOML over
/// the built-in defaults. An opaque value: parse it, read the few facts an
/// embedder needs, and start an Engine from it. A moved-from Config may
/// only be assigned to or destroyed.
class RINGMAIL_API Config {
 public:
  /// Parses `toml` over the built-in defaults; empty text means the
  /// defaults. `origin` names the text in error messages (a file name).
  /// Failure: kConfig, naming the key and the problem.
  static Expected<Config> parse(std::string_view toml, std::string_view origin = "<config>");
  /// Reads and parses the file at `path`. Failure: kConfig, naming the
  /// path (a file that cannot be read) or the key. An engine started with
  /// it reads the same path again on Engine::reload() and
  /// `ringmail-ctl reload`.
  static Expected<Config> load(const std::string& path);
  /// The built-in configuration as TOML, with a comment on every key
  /// (static storage).
  static std::string_view default_toml();

  Config(Config&& other) noexcept;
  Config& operator=(Config&& other) noexcept;
  ~Config();

  /// engine.shutdown_grace: how long shutdown() gives queued mail.
  std::chrono::milliseconds shutdown_grace() const;
  /// ingest.socket, control.socket, events.file ("" when off).
  std::string ingest_socket() const;
  std::string control_socket() const;
  std::string event_file() const;
  /// routing.default, as text ("mx", "127.0.0.1:2525", …).
  std::string default_route() const;

 private:
  struct Impl;
  Config() = default;
  std::unique_ptr<Impl> impl_;
  friend class Engine;
  friend struct ::ringmail::engine::EngineAccess;
};

// --- batches and acknowledgements --------------------------------------------

struct Batch {
  std::string batch_id;  // optional, 1..128 printable ASCII; assigned when empty
  std::string sender;    // bare address; empty = null reverse-path
  std::string message;   // raw RFC 5322 bytes
  std::vector<std::string> recipients;
  std::string pool;  // egress pool by name; empty: pool rules or the default
  /// Further batch options, "name=value" (docs/protocol.md: dkim_domain,
  /// list_unsubscribe, list_unsubscribe_mailto, list_unsubscribe_post,
  /// feedback_id, personalise).
  std::vector<std::string> options;
  /// personalise=true: each recipient's variables, parallel to
  /// `recipients` (encoded with append_var; may be shorter).
  std::vector<std::string> recipient_vars;
  /// Addresses the platform reports as unsubscribed (suppressed from now on).
  std::vector<std::string> unsubscribed;
};

/// Appends one personalisation variable to a recipient's encoded
/// variables (Batch::recipient_vars; the encoding is in docs/protocol.md).
/// `name`: 1..64 of [A-Za-z0-9_.-], each name once per recipient; `value`:
/// at most 64 KiB. Nothing is checked here: a recipient whose variables
/// break these rules is rejected at submit with RejectReason::kTemplate.
RINGMAIL_API void append_var(std::string& vars, std::string_view name, std::string_view value);

/// The values are those of the batch protocol's ACK (docs/protocol.md).
enum class AckStatus : uint8_t {
  kAccepted = 0,          // some or all recipients accepted (see accepted, rejections)
  kRejected = 1,          // the whole batch was refused (reason says why)
  kTryLater = 2,          // back-pressure or shutting down: nothing accepted, send again later
  kSpoolUnavailable = 3,  // the spool cannot make it durable now; nothing accepted
};

enum class RejectReason : uint16_t {
  kInvalidAddress = 1,
  kDuplicate = 2,
  kSuppressed = 3,
  kPolicy = 4,
  kTemplate = 5,  // personalisation: a missing or malformed variable
};

struct Rejection {
  uint32_t index = 0;  // position of the recipient in the batch
  RejectReason reason = RejectReason::kInvalidAddress;
  std::string text;
};

struct Ack {
  uint64_t seq = 0;
  std::string batch_id;  // the batch's, or the one assigned
  AckStatus status = AckStatus::kAccepted;
  uint32_t accepted = 0;  // recipients that will get a final event
  std::vector<Rejection> rejections;
  std::string reason;  // why, when status is not kAccepted
};

RINGMAIL_API std::string_view to_string(AckStatus status);
RINGMAIL_API std::string_view to_string(RejectReason reason);

// --- events -------------------------------------------------------------------

/// Recipient outcomes (delivered, deferred, bounced, dropped; all but
/// deferred are final) and destination state changes (backoff, resume).
enum class EventType : uint8_t { kDelivered, kDeferred, kBounced, kDropped, kBackoff, kResume };

RINGMAIL_API std::string_view to_string(EventType type);

/// A delivery event as subscribers see it (docs/protocol.md lists the JSON
/// fields). The views are valid only during the callback: copy what you
/// keep.
struct EventView {
  EventType type = EventType::kDeferred;
  std::string_view batch;
  std::string_view recipient;  // "" for kBackoff/kResume
  std::string_view sender;
  /// The reply code; failures without a reply get one from ringmail (451
  /// for a refused connection). 0 for kBackoff and kResume.
  uint16_t code = 0;
  std::string_view enhanced_code;
  std::string_view response;
  std::string_view peer;  // "ip:port" that answered, or ""
  std::string_view mx;    // the MX host (or configured host), or ""
  uint32_t attempt = 0;
  uint64_t origin = 0;  // ingest connection the batch came from (0: this API)
  std::string_view failure_class;
  std::string_view domain;  // kBackoff/kResume: the destination
  std::string_view json;    // the complete JSON object, without newline
};

using EventCallback = std::function<void(const EventView&)>;

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

/// What Engine::reload() did: the top-level configuration keys that
/// changed and are now in force, and those that changed but need a
/// restart (e.g. "spool", "suppression.file").
struct ReloadResult {
  std::vector<std::string> applied;
  std::vector<std::string> restart_required;
};

// --- the engine -----------------------------------------------------------------

class RINGMAIL_API Engine {
 public:
  /// Starts the shards (and the sockets the configuration names). Returns
  /// once every shard runs. The configuration's log_level becomes the
  /// process's log level (one per process, whatever the number of
  /// engines); log lines go to stderr.
  /// Failure: kSystem, kUnsupported or kBusy with the reason.
  static Expected<std::unique_ptr<Engine>> start(Config config);
  /// Config::parse(toml), then start(). Failure: as both.
  static Expected<std::unique_ptr<Engine>> start_toml(std::string_view toml);
  /// Config::load(path), then start(). Failure: as both.
  static Expected<std::unique_ptr<Engine>> start_file(const std::string& path);

  /// shutdown(0ms) unless already shut down. Must not race other calls.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Validates and queues a batch; returns its acknowledgement. Each
  /// recipient counted in `accepted` gets events ending in exactly one
  /// final one, unless the engine is shut down first (with the spool off,
  /// what is queued then is not kept). With the spool on, returns once the
  /// batch is durable (spool.mode). After shutdown: kTryLater. From an
  /// event callback with the spool on: kTryLater (waiting for the spool
  /// would need the callback's shard).
  Ack submit(const Batch& batch);

  /// Registers `callback` for every event; returns its id (0 after
  /// shutdown or for an empty callback). One callable is shared by all
  /// shards and called concurrently; it is destroyed after unsubscribe()
  /// or shutdown, on an unspecified thread. Every event of a batch
  /// submitted after subscribe() returns reaches the callback.
  uint64_t subscribe(EventCallback callback);
  /// Removes a subscription. When it returns, the callback is not running
  /// and will not be called again — except when called from an event
  /// callback: then the removal takes effect as each shard finishes its
  /// current event. Unknown ids are ignored.
  void unsubscribe(uint64_t id);

  /// Waits until every accepted recipient is final, or `timeout` passes.
  /// True when idle. From an event callback: false at once.
  bool drain(std::chrono::milliseconds timeout);
  /// Stops accepting, gives queued mail up to `grace` to finish, then
  /// closes every connection (in-flight recipients are deferred) and joins
  /// the shards. When it returns, no callback runs any more. Idempotent.
  void shutdown(std::chrono::milliseconds grace);
  /// shutdown(config's engine.shutdown_grace).
  void shutdown();

  /// Counters summed over the shards (any time, also after shutdown).
  Stats stats() const;
  /// Runs an operator command (the ringmail-ctl commands: "list [PATTERN]",
  /// "pause PATTERN", "resume PATTERN", "flush PATTERN", "drop-batch ID",
  /// "stats", "suppression list|check|add|remove …") and returns the JSON
  /// reply. Waits for every shard. After shutdown, or from an event
  /// callback: {"ok":false,"error":"…"}.
  std::string control(std::string_view command);
  /// Reopens events.file by name, for log rotation: the file was renamed,
  /// and lines from now on go to a new file at the configured path. Each
  /// shard switches between two writes, so every line lands whole in
  /// exactly one file — in the old one if it was produced before the call.
  /// Returns once every line meant for the old file is written, so it can
  /// be compressed or removed then. Without an event file: nothing to do.
  /// Failure (kSystem): the file cannot be opened (the old one stays in
  /// use), the engine is shut down, or the call comes from an event
  /// callback.
  Expected<void> reopen_event_file();
  /// Applies `config` without a restart. Taken: [delivery], [[shaping]],
  /// [provider_shaping], [routing], [retry], [bounces], [[dkim]] (key files
  /// are read again), [tls] (the submission listeners' certificate files
  /// are read again too), [suppression] enabled and TTLs, and log_level.
  /// Any other section that differs from the running one is named in
  /// restart_required and keeps its running value. Mail in flight is
  /// unaffected: connections and transactions under way finish with what
  /// they started with; new ones use the new settings.
  /// Failure (kConfig): a key or certificate file cannot be used; nothing
  /// changed. kSystem: shut down, or called from an event callback.
  Expected<ReloadResult> reload(Config config);
  /// reload() with the file the engine's configuration was loaded from
  /// (Config::load, start_file()), read again. Failure (kConfig): the file
  /// does not parse, or the configuration came from text (parse(),
  /// start_toml()); nothing changed.
  Expected<ReloadResult> reload();
  /// Liveness, for a supervisor's watchdog: per shard, how many loop
  /// iterations it has completed. Each call also wakes every shard, so a
  /// healthy shard's count has moved by the next call however idle it is;
  /// one that stays put across calls some time apart is stuck (a shard
  /// falling asleep just as it is woken may need one call more). Empty
  /// after shutdown.
  std::vector<uint64_t> loop_iterations();

 private:
  struct Impl;
  Engine() = default;
  std::unique_ptr<Impl> impl_;
  friend struct ::ringmail::engine::EngineAccess;
};

}  // namespace v0_1
}  // namespace ringmail
