#include "engine/shard.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/http_server.h"
#include "engine/ingest.h"
#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/submission.h"
#include "engine/tls.h"

namespace ringmail::engine {
namespace {

void forward_events_msg(Shard& shard, void* p, uint64_t /*a*/) {
  std::unique_ptr<std::string> buf(static_cast<std::string*>(p));
  for (Ingest* server : {shard.ingest(), shard.control_server()}) {
    if (server != nullptr) {
      server->deliver_events(*buf);
    }
  }
}

}  // namespace

Shard::Shard(Runtime& rt, uint32_t id, uint32_t shard_count)
    : rt_(rt), id_(id), config_(rt.initial_config()) {
  overflow_.resize(shard_count);
  wake_pending_.assign(shard_count, 0);
  wake_op_.shard = this;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

Shard::~Shard() {
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
  }
}

TlsClient& Shard::tls_client() {
  if (tls_client_ == nullptr) {
    tls_client_ = std::make_unique<TlsClient>(config().tls);
  }
  return *tls_client_;
}

const Clock& Shard::clock() const {
  return rt_.clock();
}
const Config& Shard::config() const {
  return *config_;
}

void Shard::reconfigure(std::shared_ptr<const Config> config,
                        std::vector<std::unique_ptr<TlsContext>> server_contexts) {
  // The previous configuration lives until every pointer into it (routes,
  // automation rules) has moved to the new one.
  std::shared_ptr<const Config> previous = std::move(config_);
  config_ = std::move(config);
  scheduler_->reconfigure();
  route_resolver_->set_config(*config_);
  if (tls_client_ != nullptr) {
    tls_client_->reconfigure(config_->tls);
  }
  if (submission_ != nullptr && !server_contexts.empty()) {
    submission_->replace_tls_contexts(std::move(server_contexts));
  }
}

void Shard::run() {
  set_log_shard(static_cast<int>(id_));
  struct ThreadCaches {
    ~ThreadCaches() { tls_release_thread_caches(); }
  } thread_caches;
  if (wake_fd_ < 0) {
    rt_.shard_started(id_, make_error(Errc::kIo, std::string("eventfd: ") + std::strerror(errno)));
    return;
  }
  Ring::Options ro;
  ro.entries = config().engine.ring_entries;
  auto ring = Ring::create(ro);
  if (!ring.ok()) {
    rt_.shard_started(id_, std::move(ring).take_error());
    return;
  }
  ring_ = std::move(*ring);
  if (id_ == 0) {
    RM_LOG_INFO("io_uring features: %s", ring_->features().describe().c_str());
  }
  timers_ = std::make_unique<TimerWheel>(clock().now());
  dns_client_ = std::make_unique<DnsClient>(*ring_, config().dns);
  if (auto r = dns_client_->init(); !r.ok()) {
    rt_.shard_started(id_, std::move(r).take_error());
    return;
  }
  dns_cache_ = std::make_unique<DnsCache>(*dns_client_, clock(), config().dns);
  route_resolver_ = std::make_unique<RouteResolver>(
      *dns_cache_, clock(), config(), 0x2545F4914F6CDD1Dull * (id_ + 1) ^ clock().wall_ms());
  scheduler_ = std::make_unique<Scheduler>(*this);
  dsn_ = std::make_unique<DsnCollector>(*this);
  if (config().spool.mode != SpoolMode::kOff) {
    spool_ = std::make_unique<Spool>(*this);
    auto recovered = spool_->recover();
    if (!recovered.ok()) {
      rt_.shard_started(id_, std::move(recovered).take_error());
      return;
    }
    if (auto st = spool_->start(); !st.ok()) {
      rt_.shard_started(id_, std::move(st).take_error());
      return;
    }
    stats_.spool_damage.store(spool_->recovered_damage(), std::memory_order_relaxed);
    spool_->adopt_recovered(*recovered);
    scheduler_->accept_recovered(std::move(*recovered));
  }
  event_log_ = std::make_unique<EventLog>(*ring_, rt_.event_file());
  if (id_ == 0 && rt_.ingest_listen_fd() >= 0) {
    ingest_ = std::make_unique<Ingest>(*this, rt_.ingest_listen_fd(), Ingest::Role::kBatches);
    ingest_->start();
  }
  if (id_ == 0 && rt_.control_listen_fd() >= 0) {
    control_ = std::make_unique<Ingest>(*this, rt_.control_listen_fd(), Ingest::Role::kControl);
    control_->start();
  }
  // --- submission listeners (engine/submission.h) ---
  if (id_ == 0 && !rt_.submission_listen_fds().empty()) {
    auto sub = Submission::create(*this, rt_.submission_listen_fds());
    if (!sub.ok()) {
      rt_.shard_started(id_, std::move(sub).take_error());
      return;
    }
    submission_ = std::move(*sub);
    submission_->start();
  }
  // --- end submission listeners ---
  if (id_ == 0 && rt_.http_listen_fd() >= 0) {
    auto http = HttpServer::create(*this, rt_.http_listen_fd());  // engine/http_server.h
    if (!http.ok()) {
      rt_.shard_started(id_, std::move(http).take_error());
      return;
    }
    http_ = std::move(*http);
    http_->start();
  }
  arm_wake();
  rt_.shard_started(id_, ok_result());
  loop();
  if (spool_ != nullptr) {
    spool_->close();
  }
  // Final flush of the event file: wait for the last write.
  for (int i = 0; i < 1000 && !event_log_->idle(); ++i) {
    event_log_->flush();
    ring_->submit_and_wait(Millis(10));
    ring_->reap();
  }
  ingest_.reset();
  control_.reset();
  submission_.reset();
  http_.reset();
  // c-ares first: destroying the channel drops its callbacks, so nothing
  // calls into the scheduler while it goes away.
  dns_client_.reset();
  route_resolver_.reset();
  dns_cache_.reset();
  dsn_.reset();
  scheduler_.reset();
  spool_.reset();
  event_log_.reset();
  timers_.reset();
  ring_.reset();
}

void Shard::arm_wake() {
  ring_->read(wake_fd_, &wake_op_.value, sizeof wake_op_.value, 0, &wake_op_);
}

void Shard::WakeOp::complete(int /*res*/, uint32_t /*flags*/) {
  shard->arm_wake();
}

void Shard::wake() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst)) {
    uint64_t one = 1;
    ssize_t w = ::write(wake_fd_, &one, sizeof one);
    (void)w;  // EAGAIN only when the counter is saturated: already awake-able
  }
}

void Shard::request_stop() {
  stop_requested_.store(true, std::memory_order_release);
  wake();
}

void Shard::post(uint32_t dst, ShardMsg msg) {
  if (dst == id_) {
    local_.push_back(msg);
    return;
  }
  auto& over = overflow_[dst];
  if (!over.empty() || !rt_.ring(id_, dst).try_push(msg)) {
    over.push_back(msg);  // order is kept: the ring takes the overflow first
  }
  wake_pending_[dst] = 1;
}

void Shard::flush_outbound() {
  for (uint32_t dst = 0; dst < overflow_.size(); ++dst) {
    auto& over = overflow_[dst];
    while (!over.empty() && rt_.ring(id_, dst).try_push(over.front())) {
      over.pop_front();
    }
    if (wake_pending_[dst]) {
      wake_pending_[dst] = 0;
      rt_.shard(dst).wake();
    }
  }
}

bool Shard::drain_inbound() {
  bool more = false;
  auto run = [this](const ShardMsg& m) { m.fn(*this, m.p, m.a); };
  for (uint32_t src = 0; src < rt_.shard_count(); ++src) {
    if (src == id_) {
      continue;
    }
    if (rt_.ring(src, id_).drain(run, kShardDrainBatch) == kShardDrainBatch) {
      more = true;
    }
  }
  MpscQueue& ext = rt_.external_queue(id_);
  for (size_t i = 0; i < kShardDrainBatch; ++i) {
    MpscNode* n = ext.pop();
    if (n == nullptr) {
      break;
    }
    std::unique_ptr<ExternalTask> t(static_cast<ExternalTask*>(n));
    t->fn(*this);
    if (i + 1 == kShardDrainBatch) {
      more = true;
    }
  }
  return more;
}

void Shard::forward_events() {
  if (forward_.empty()) {
    return;
  }
  if (id_ == 0) {
    for (Ingest* server : {ingest_.get(), control_.get()}) {
      if (server != nullptr) {
        server->deliver_events(forward_);
      }
    }
    forward_.clear();
    return;
  }
  post(0, ShardMsg{&forward_events_msg, new std::string(std::move(forward_)), 0});
  forward_.clear();
}

// Run loop invariants:
//  1. The loop blocks only in Ring::submit_and_wait, and only after it set
//     sleeping_ and found every inbound queue empty; producers that push
//     after that see sleeping_ and write the eventfd (no lost wake-up).
//  2. Each iteration drains at most kShardDrainBatch messages per inbound
//     queue, so a flood from one shard cannot starve timers and I/O.
//  3. Timers advance once per iteration from the Clock; the wait deadline
//     is the wheel's next wake-up (manual clocks wait for a wake instead).
//  4. Event output, cross-shard overflow and wake-ups are flushed once per
//     iteration, so wake-up syscalls are batched, never per message.
void Shard::loop() {
  bool stopping = false;
  for (;;) {
    iterations_.store(iterations_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    ring_->reap();
    timers_->advance(clock().now());
    dns_client_->process_timeouts();
    bool more = drain_inbound();
    for (size_t n = local_.size(); n > 0 && !local_.empty(); --n) {
      ShardMsg m = local_.front();
      local_.pop_front();
      m.fn(*this, m.p, m.a);
    }
    for (Ingest* server : {ingest_.get(), control_.get()}) {
      if (server != nullptr) {
        server->flush();
      }
    }
    if (spool_ != nullptr) {
      spool_->flush();
      stats_.spool_segments.store(spool_->segment_count(), std::memory_order_relaxed);
      stats_.spool_errors.store(spool_->stats().errors, std::memory_order_relaxed);
    }
    event_log_->flush();
    stats_.active.store(scheduler_->connections() + dns_client_->inflight(),
                        std::memory_order_relaxed);
    forward_events();
    flush_outbound();
    if (stop_requested_.load(std::memory_order_acquire)) {
      if (!stopping) {
        stopping = true;
        for (Ingest* server : {ingest_.get(), control_.get()}) {
          if (server != nullptr) {
            server->stop();
          }
        }
        if (submission_ != nullptr) {
          submission_->stop();
        }
        if (http_ != nullptr) {
          http_->stop();
        }
        scheduler_->abort_all();
      }
      if (scheduler_->quiescent() && (ingest_ == nullptr || ingest_->stopped()) &&
          (control_ == nullptr || control_->stopped()) &&
          (submission_ == nullptr || submission_->stopped()) &&
          (http_ == nullptr || http_->stopped()) &&
          (spool_ == nullptr || spool_->idle() || !spool_->healthy())) {
        break;
      }
    }
    Nanos timeout(0);
    bool pending = more || !local_.empty();
    for (const auto& over : overflow_) {
      pending = pending || !over.empty();
    }
    if (!pending) {
      auto next = timers_->next_wakeup();
      if (clock().manual() || stopping) {
        timeout = stopping ? Millis(10) : Millis(1000);
        if (next && *next <= clock().now()) {
          timeout = Nanos(0);
        }
      } else if (next) {
        timeout = std::max(Nanos(0), *next - clock().now());
      } else {
        timeout = Millis(60'000);
      }
      // c-ares keeps real time whatever the engine clock is.
      if (auto dns = dns_client_->next_deadline()) {
        auto left = *dns - std::chrono::steady_clock::now();
        timeout = std::max(Nanos(0), std::min<Nanos>(timeout, left));
      }
    }
    if (timeout.count() > 0) {
      sleeping_.store(true, std::memory_order_seq_cst);
      bool inbound = !local_.empty() || rt_.external_queue(id_).maybe_nonempty();
      for (uint32_t src = 0; src < rt_.shard_count() && !inbound; ++src) {
        inbound = src != id_ && !rt_.ring(src, id_).empty();
      }
      if (inbound || stop_requested_.load(std::memory_order_acquire) != stopping) {
        timeout = Nanos(0);
      }
    }
    int rc = ring_->submit_and_wait(timeout);
    sleeping_.store(false, std::memory_order_relaxed);
    if (rc < 0) {
      RM_LOG_ERROR("io_uring_enter: %s", std::strerror(-rc));
    }
  }
}

void Shard::publish(EventView& v) {
  event_log_->append_line(json_scratch_);
  v.json = json_scratch_;
  for (auto& [id, cb] : subscribers_) {
    cb(v);
  }
  if (rt_.socket_subscribers() > 0) {
    uint64_t origin = v.origin;
    auto len = static_cast<uint32_t>(json_scratch_.size());
    forward_.append(reinterpret_cast<const char*>(&origin), sizeof origin);
    forward_.append(reinterpret_cast<const char*>(&len), sizeof len);
    forward_.append(json_scratch_);
  }
}

void Shard::emit(const OutcomeRecord& rec) {
  switch (rec.type) {
    case EventType::kDelivered:
      stats_.delivered.fetch_add(1, std::memory_order_relaxed);
      break;
    case EventType::kDeferred:
      stats_.deferred.fetch_add(1, std::memory_order_relaxed);
      break;
    case EventType::kBounced:
      stats_.bounced.fetch_add(1, std::memory_order_relaxed);
      break;
    case EventType::kDropped:
      stats_.dropped.fetch_add(1, std::memory_order_relaxed);
      break;
    default:
      break;
  }
  if (rec.unknown) {
    stats_.unknown_outcomes.fetch_add(1, std::memory_order_relaxed);
  }
  dest_counters_.count(rec.recipient, rec.msg->pool(), rec.type);
  json_scratch_.clear();
  format_event_json(json_scratch_, rec);
  EventView v;
  v.type = rec.type;
  v.batch = rec.msg->batch_id();
  v.recipient = rec.recipient;
  v.sender = rec.msg->sender();
  v.code = rec.reply->code;
  v.peer = rec.peer;
  v.mx = rec.mx;
  v.attempt = rec.attempt;
  v.origin = rec.msg->origin();
  v.failure_class = rec.failure_class;
  if (subscribers_.empty()) {
    publish(v);
    return;
  }
  std::string enh = rec.reply->enhanced.str();
  std::string resp = rec.reply->summary();
  v.enhanced_code = enh;
  v.response = resp;
  publish(v);
}

void Shard::emit_destination(const DestinationRecord& rec) {
  json_scratch_.clear();
  format_destination_json(json_scratch_, rec);
  EventView v;
  v.type = rec.type;
  v.domain = rec.domain;
  v.response = rec.reason;
  publish(v);
  RM_LOG_INFO("%s", json_scratch_.c_str());
}

void Shard::bounced(const Message& msg, std::string_view recipient, const proto::Reply& reply,
                    std::string_view remote_mta, int64_t last_attempt_wall_ms) {
  dsn_->bounced(msg, recipient, reply, remote_mta, last_attempt_wall_ms);
}

void Shard::recipient_final(size_t addr_bytes) {
  rt_.recipient_final(addr_bytes);
}

void Shard::add_subscriber(uint64_t id, EventCallback cb) {
  subscribers_.emplace_back(id, std::move(cb));
}

void Shard::remove_subscriber(uint64_t id) {
  std::erase_if(subscribers_, [id](const auto& s) { return s.first == id; });
}

}  // namespace ringmail::engine
