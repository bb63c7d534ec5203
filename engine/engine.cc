// The C++ embedding API (include/ringmail/ringmail.hpp) over the Runtime,
// and the test hooks (engine/testing.h).
#include <ringmail/ringmail.hpp>

#include <condition_variable>
#include <future>
#include <latch>
#include <mutex>

#include "engine/config.h"
#include "engine/events.h"
#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/spool.h"
#include "engine/testing.h"
#include "proto/batch_wire.h"
#include "proto/json.h"
#include "proto/result.h"
#include "proto/template.h"

namespace ringmail {

// The public enums mirror the internal ones value for value, so the
// conversions below are casts.
static_assert(static_cast<int>(EventType::kDelivered) ==
              static_cast<int>(engine::EventType::kDelivered));
static_assert(static_cast<int>(EventType::kDeferred) ==
              static_cast<int>(engine::EventType::kDeferred));
static_assert(static_cast<int>(EventType::kBounced) ==
              static_cast<int>(engine::EventType::kBounced));
static_assert(static_cast<int>(EventType::kDropped) ==
              static_cast<int>(engine::EventType::kDropped));
static_assert(static_cast<int>(EventType::kBackoff) ==
              static_cast<int>(engine::EventType::kBackoff));
static_assert(static_cast<int>(EventType::kResume) == static_cast<int>(engine::EventType::kResume));
static_assert(static_cast<int>(AckStatus::kAccepted) ==
              static_cast<int>(proto::AckStatus::kAccepted));
static_assert(static_cast<int>(AckStatus::kRejected) ==
              static_cast<int>(proto::AckStatus::kRejected));
static_assert(static_cast<int>(AckStatus::kTryLater) ==
              static_cast<int>(proto::AckStatus::kTryLater));
static_assert(static_cast<int>(AckStatus::kSpoolUnavailable) ==
              static_cast<int>(proto::AckStatus::kSpoolUnavailable));
static_assert(static_cast<int>(RejectReason::kInvalidAddress) ==
              static_cast<int>(proto::RejectReason::kInvalidAddress));
static_assert(static_cast<int>(RejectReason::kDuplicate) ==
              static_cast<int>(proto::RejectReason::kDuplicate));
static_assert(static_cast<int>(RejectReason::kSuppressed) ==
              static_cast<int>(proto::RejectReason::kSuppressed));
static_assert(static_cast<int>(RejectReason::kPolicy) ==
              static_cast<int>(proto::RejectReason::kPolicy));
static_assert(static_cast<int>(RejectReason::kTemplate) ==
              static_cast<int>(proto::RejectReason::kTemplate));

namespace {

// Depth of embedder callbacks on this thread: non-zero only on a shard
// thread inside a subscriber's callback, where waiting for the shards
// would wait for this very thread.
thread_local int t_callback_depth = 0;

bool in_callback() {
  return t_callback_depth > 0;
}

class CallbackScope {
 public:
  CallbackScope() { ++t_callback_depth; }
  ~CallbackScope() { --t_callback_depth; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
};

Failure to_failure(const Error& e) {
  FailureKind kind = FailureKind::kSystem;
  switch (e.code) {
    case Errc::kConfig:
    case Errc::kSyntax:
    case Errc::kInvalidArgument:
    case Errc::kLimit:
      kind = FailureKind::kConfig;
      break;
    case Errc::kUnsupported:
      kind = FailureKind::kUnsupported;
      break;
    case Errc::kBusy:
      kind = FailureKind::kBusy;
      break;
    case Errc::kInternal:
      kind = FailureKind::kInternal;
      break;
    default:
      break;
  }
  return Failure{kind, e.message};
}

std::string control_error(std::string_view why) {
  std::string out = "{\"ok\":false,\"error\":";
  proto::append_json_string(out, why);
  out += "}";
  return out;
}

Ack to_public(proto::Ack&& a) {
  Ack out;
  out.seq = a.seq;
  out.batch_id = std::move(a.batch_id);
  out.status = static_cast<AckStatus>(a.status);
  out.accepted = a.accepted;
  out.rejections.reserve(a.rejections.size());
  for (auto& r : a.rejections) {
    out.rejections.push_back(
        Rejection{r.index, static_cast<RejectReason>(r.reason), std::move(r.text)});
  }
  out.reason = std::move(a.reason);
  return out;
}

EventView to_public(const engine::EventView& v) {
  EventView out;
  out.type = static_cast<EventType>(v.type);
  out.batch = v.batch;
  out.recipient = v.recipient;
  out.sender = v.sender;
  out.code = v.code;
  out.enhanced_code = v.enhanced_code;
  out.response = v.response;
  out.peer = v.peer;
  out.mx = v.mx;
  out.attempt = v.attempt;
  out.origin = v.origin;
  out.failure_class = v.failure_class;
  out.domain = v.domain;
  out.json = v.json;
  return out;
}

}  // namespace

// --- Config --------------------------------------------------------------------

// The Impl types stay out of libringmail.so's symbol table, and with them
// every template instance made for them; the classes that own them are
// exported (RINGMAIL_API).
struct __attribute__((visibility("hidden"))) Config::Impl {
  engine::Config cfg;
  std::string path;  // the file it was loaded from (Config::load), or empty
};

Config::Config(Config&& other) noexcept = default;
Config& Config::operator=(Config&& other) noexcept = default;
Config::~Config() = default;

Expected<Config> Config::parse(std::string_view toml, std::string_view origin) {
  auto c = engine::parse_config(toml, origin);
  if (!c.ok()) {
    return to_failure(c.error());
  }
  Config out;
  out.impl_ = std::make_unique<Impl>(Impl{std::move(*c), {}});
  return out;
}

Expected<Config> Config::load(const std::string& path) {
  auto c = engine::load_config_file(path);
  if (!c.ok()) {
    return to_failure(c.error());
  }
  Config out;
  out.impl_ = std::make_unique<Impl>(Impl{std::move(*c), path});
  return out;
}

std::string_view Config::default_toml() {
  return engine::default_config_toml();
}

std::chrono::milliseconds Config::shutdown_grace() const {
  return impl_->cfg.engine.shutdown_grace;
}

std::string Config::ingest_socket() const {
  return impl_->cfg.ingest.socket;
}

std::string Config::control_socket() const {
  return impl_->cfg.control.socket;
}

std::string Config::event_file() const {
  return impl_->cfg.events.file;
}

std::string Config::default_route() const {
  return impl_->cfg.routing.default_route.describe();
}

// --- Engine ----------------------------------------------------------------------

/// Calls that wait for the shards (submit, subscribe, unsubscribe,
/// control) are admitted as busy; shutdown() stops admitting them and
/// waits for those in progress before it stops the shards, so none of them
/// waits for a shard that is gone.
struct __attribute__((visibility("hidden"))) Engine::Impl {
  std::unique_ptr<engine::Runtime> rt;

  std::mutex mu;  // the fields below; never held on the data path
  std::condition_variable cv;
  uint32_t busy = 0;
  bool stopping = false;
  bool stopped = false;

  /// Admission of one call that needs the shards; false once shutdown
  /// began.
  class Call {
   public:
    explicit Call(Impl& impl) : impl_(impl) {
      std::lock_guard lock(impl_.mu);
      admitted_ = !impl_.stopping;
      if (admitted_) {
        ++impl_.busy;
      }
    }
    ~Call() {
      if (!admitted_) {
        return;
      }
      std::lock_guard lock(impl_.mu);
      if (--impl_.busy == 0) {
        impl_.cv.notify_all();
      }
    }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    explicit operator bool() const { return admitted_; }

   private:
    Impl& impl_;
    bool admitted_ = false;
  };

  /// Waits until every shard has run what was posted to it before this
  /// call (each shard's external queue is FIFO).
  void barrier() {
    const uint32_t n = rt->shard_count();
    auto left = std::make_shared<std::latch>(n);
    for (uint32_t i = 0; i < n; ++i) {
      rt->post_external(i, [left](engine::Shard&) { left->count_down(); });
    }
    left->wait();
  }

  void wait_stopped() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return stopped; });
  }
};

namespace engine {

struct EngineAccess {
  static Expected<std::unique_ptr<Engine>> start(Config config, const Clock* clock) {
    // Before the shards start, so their first lines already obey it.
    if (auto level = parse_log_level(config.log_level)) {
      set_log_level(*level);
    }
    auto rt = Runtime::start(std::move(config), clock);
    if (!rt.ok()) {
      return to_failure(rt.error());
    }
    std::unique_ptr<Engine> e(new Engine());
    e->impl_ = std::make_unique<Engine::Impl>();
    e->impl_->rt = std::move(*rt);
    return e;
  }
  static Runtime& runtime(Engine& e) { return *e.impl_->rt; }
};

}  // namespace engine

Engine::~Engine() {
  if (impl_ != nullptr) {  // null only when start() failed halfway
    shutdown(std::chrono::milliseconds(0));
  }
}

Expected<std::unique_ptr<Engine>> Engine::start(Config config) {
  std::string path = std::move(config.impl_->path);
  auto e = engine::EngineAccess::start(std::move(config.impl_->cfg), nullptr);
  if (e.ok() && !path.empty()) {
    engine::EngineAccess::runtime(**e).set_config_source(
        [path] { return engine::load_config_file(path); });
  }
  return e;
}

Expected<std::unique_ptr<Engine>> Engine::start_toml(std::string_view toml) {
  auto c = Config::parse(toml);
  if (!c.ok()) {
    return c.error();
  }
  return start(std::move(*c));
}

Expected<std::unique_ptr<Engine>> Engine::start_file(const std::string& path) {
  auto c = Config::load(path);
  if (!c.ok()) {
    return c.error();
  }
  return start(std::move(*c));
}

Ack Engine::submit(const Batch& batch) {
  const bool spool_off = impl_->rt->config().spool.mode == engine::SpoolMode::kOff;
  Ack refused;
  refused.batch_id = batch.batch_id;
  refused.status = AckStatus::kTryLater;
  if (in_callback() && !spool_off) {
    refused.reason =
        "submit from an event callback with the spool on would wait for the callback's own shard";
    return refused;
  }
  Impl::Call call(*impl_);
  if (!call) {
    refused.reason = "ringmail is shutting down";
    return refused;
  }
  engine::BatchInput in;
  in.batch_id = batch.batch_id;
  in.sender = batch.sender;
  in.message = batch.message;
  in.recipients.assign(batch.recipients.begin(), batch.recipients.end());
  std::string pool_opt;
  if (!batch.pool.empty()) {
    pool_opt = "pool=" + batch.pool;
    in.options.push_back(pool_opt);
  }
  in.options.insert(in.options.end(), batch.options.begin(), batch.options.end());
  in.recipient_vars.assign(batch.recipient_vars.begin(), batch.recipient_vars.end());
  in.unsubscribed.assign(batch.unsubscribed.begin(), batch.unsubscribed.end());
  return to_public(impl_->rt->accept_batch(in, -1));
}

uint64_t Engine::subscribe(EventCallback callback) {
  if (!callback) {
    return 0;
  }
  // One callable for every shard (Runtime::subscribe copies the function
  // it is given into each shard).
  auto shared = std::make_shared<EventCallback>(std::move(callback));
  engine::EventCallback wrapper = [shared](const engine::EventView& v) {
    const EventView view = to_public(v);
    CallbackScope scope;
    (*shared)(view);
  };
  if (in_callback()) {
    return impl_->rt->subscribe(std::move(wrapper));
  }
  Impl::Call call(*impl_);
  if (!call) {
    return 0;
  }
  uint64_t id = impl_->rt->subscribe(std::move(wrapper));
  impl_->barrier();
  return id;
}

void Engine::unsubscribe(uint64_t id) {
  if (id == 0) {
    return;
  }
  if (in_callback()) {
    impl_->rt->unsubscribe(id);
    return;
  }
  Impl::Call call(*impl_);
  if (!call) {
    // Shutting down: once the shards are joined no callback runs.
    impl_->wait_stopped();
    return;
  }
  impl_->rt->unsubscribe(id);
  impl_->barrier();
}

bool Engine::drain(std::chrono::milliseconds timeout) {
  if (in_callback()) {
    return false;
  }
  return impl_->rt->wait_idle(timeout);
}

void Engine::shutdown(std::chrono::milliseconds grace) {
  if (in_callback()) {
    RM_PANIC(
        "Engine::shutdown or ~Engine called from an event callback: a shard cannot join itself");
  }
  {
    std::unique_lock lock(impl_->mu);
    if (impl_->stopping) {
      impl_->cv.wait(lock, [&] { return impl_->stopped; });
      return;
    }
    impl_->stopping = true;
    impl_->cv.wait(lock, [&] { return impl_->busy == 0; });
  }
  impl_->rt->shutdown(grace);
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
  }
  impl_->cv.notify_all();
}

void Engine::shutdown() {
  shutdown(impl_->rt->config().engine.shutdown_grace);
}

Stats Engine::stats() const {
  auto t = impl_->rt->totals();
  Stats s;
  s.delivered = t.delivered;
  s.deferred = t.deferred;
  s.bounced = t.bounced;
  s.unfinished = t.unfinished;
  s.connections_opened = t.connections_opened;
  s.transactions = t.transactions;
  s.unknown_outcomes = t.unknown_outcomes;
  s.dropped = t.dropped;
  s.queued_bytes = t.queued_bytes;
  s.spool_damage = t.spool_damage;
  s.spool_segments = t.spool_segments;
  s.spool_errors = t.spool_errors;
  s.submission_auth_checks = t.submission_auth_checks;
  s.submission_reclaimed = t.submission_reclaimed;
  s.submission_timeouts = t.submission_timeouts;
  return s;
}

std::string Engine::control(std::string_view command) {
  if (in_callback()) {
    return control_error("control from an event callback would wait for the callback's own shard");
  }
  Impl::Call call(*impl_);
  if (!call) {
    return control_error("ringmail is shut down");
  }
  auto reply = std::make_shared<std::promise<std::string>>();
  auto fut = reply->get_future();
  impl_->rt->control(command, -1, [reply](std::string json) { reply->set_value(std::move(json)); });
  return fut.get();
}

Expected<void> Engine::reopen_event_file() {
  if (in_callback()) {
    return Failure{FailureKind::kSystem,
                   "reopen_event_file from an event callback would wait for the callback's own "
                   "shard"};
  }
  Impl::Call call(*impl_);
  if (!call) {
    return Failure{FailureKind::kSystem, "ringmail is shut down"};
  }
  auto reply = std::make_shared<std::promise<std::string>>();
  auto fut = reply->get_future();
  impl_->rt->reopen_event_file(-1,
                               [reply](std::string error) { reply->set_value(std::move(error)); });
  std::string error = fut.get();
  if (!error.empty()) {
    return Failure{FailureKind::kSystem, error};
  }
  return {};
}

namespace {

// Runs one reload and waits for every shard to have switched.
template <class Start>
Expected<ReloadResult> wait_reload(Start start) {
  using engine::Runtime;
  auto reply = std::make_shared<std::promise<Result<Runtime::ReloadReport>>>();
  auto fut = reply->get_future();
  start([reply](Result<Runtime::ReloadReport> r) { reply->set_value(std::move(r)); });
  auto r = fut.get();
  if (!r.ok()) {
    return to_failure(r.error());
  }
  return ReloadResult{std::move(r->applied), std::move(r->restart_required)};
}

}  // namespace

Expected<ReloadResult> Engine::reload(Config config) {
  if (in_callback()) {
    return Failure{FailureKind::kSystem,
                   "reload from an event callback would wait for the callback's own shard"};
  }
  Impl::Call call(*impl_);
  if (!call) {
    return Failure{FailureKind::kSystem, "ringmail is shut down"};
  }
  engine::Runtime& rt = *impl_->rt;
  return wait_reload([&](engine::Runtime::ReloadFn done) {
    rt.reload(std::move(config.impl_->cfg), -1, std::move(done));
  });
}

Expected<ReloadResult> Engine::reload() {
  if (in_callback()) {
    return Failure{FailureKind::kSystem,
                   "reload from an event callback would wait for the callback's own shard"};
  }
  Impl::Call call(*impl_);
  if (!call) {
    return Failure{FailureKind::kSystem, "ringmail is shut down"};
  }
  engine::Runtime& rt = *impl_->rt;
  return wait_reload(
      [&](engine::Runtime::ReloadFn done) { rt.reload_from_source(-1, std::move(done)); });
}

std::vector<uint64_t> Engine::loop_iterations() {
  Impl::Call call(*impl_);
  if (!call) {
    return {};
  }
  return impl_->rt->loop_iterations();
}

// --- test hooks (engine/testing.h) ---------------------------------------------------

namespace engine {

Expected<std::unique_ptr<Engine>> start_for_test(Config config, const Clock* clock) {
  return EngineAccess::start(std::move(config), clock);
}

void wake_for_test(Engine& e) {
  EngineAccess::runtime(e).wake_all();
}

SpoolFaults& spool_faults_for_test() {
  return SpoolFaults::instance();
}

}  // namespace engine
}  // namespace ringmail

// --- names and helpers -------------------------------------------------------------
// Defined by qualified name: they are declared in the ABI namespace, which
// an unqualified definition in `namespace ringmail` would not reach.

void ringmail::append_var(std::string& vars, std::string_view name, std::string_view value) {
  proto::append_var(vars, name, value);
}

std::string_view ringmail::to_string(AckStatus status) {
  return proto::ack_status_name(static_cast<proto::AckStatus>(status));
}

std::string_view ringmail::to_string(RejectReason reason) {
  return proto::reject_reason_name(static_cast<proto::RejectReason>(reason));
}

std::string_view ringmail::to_string(EventType type) {
  return engine::event_type_name(static_cast<engine::EventType>(type));
}
