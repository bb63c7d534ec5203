// ringmail-sink worker threads (see sink_worker.h).
#include "tools/sink_worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/log.h"
#include "proto/json.h"
#include "tools/sink_connection.h"

namespace ringmail::tools {
namespace {

// SQ size. Each connection has at most two operations outstanding; a full
// SQ is submitted early by Ring::sqe(), and the CQ (twice this) cannot lose
// completions (IORING_FEAT_NODROP), so this bounds batch size, not load.
constexpr unsigned kRingEntries = 4096;
// After an accept error such as EMFILE: wait this long before accepting
// again instead of spinning on the error.
constexpr engine::Millis kAcceptRetry{20};
// At shutdown: how long to wait for cancelled operations to complete.
constexpr engine::Millis kStopDeadline{2000};
// Longest sleep without a timer due; request_stop() wakes the loop earlier.
constexpr engine::Millis kMaxWait{60'000};

proto::ServerConfig make_server_config(const SinkOptions& o) {
  proto::ServerConfig c;
  c.hostname = o.hostname;
  c.greeting = "ESMTP ringmail-sink";
  c.pipelining = o.pipelining;
  c.chunking = o.chunking;
  c.eightbitmime = o.eightbitmime;
  c.enhanced_status_codes = o.enhanced_status_codes;
  c.smtputf8 = o.smtputf8;
  c.max_message = o.max_message;
  c.max_recipients = o.max_recipients;
  c.max_hard_errors = o.max_errors;
  c.max_commands = o.max_commands;
  c.bare_line = o.bare_line;
  c.keep_body = !o.dump_dir.empty();
  return c;
}

}  // namespace

void StatsSnapshot::append_json(std::string& out) const {
  out.push_back('{');
  auto field = [&out](const char* key, uint64_t v) {
    proto::append_json_key(out, key);
    proto::append_json_uint(out, v);
    out.push_back(',');
  };
  field("messages", messages);
  field("recipients", recipients);
  field("connections", connections);
  field("deferred", deferred);
  field("rejected", rejected);
  field("dropped", dropped);
  field("rcpt_refused", rcpt_refused);
  field("bytes", bytes);
  proto::append_json_key(out, "elapsed_s");
  proto::append_json_double(out, elapsed_s, 3);
  out.push_back('}');
}

Worker::Worker(SinkShared& shared, unsigned index, std::vector<int> listen_fds)
    : shared_(shared),
      index_(index),
      server_config_(make_server_config(shared.options)),
      policy_(shared.options, &shared.seen, index),
      accept_retry_timer_(&Worker::on_accept_retry, this) {
  for (int fd : listen_fds) {
    auto l = std::make_unique<Listener>();
    l->worker = this;
    l->fd = fd;
    listeners_.push_back(std::move(l));
  }
  wake_op_.worker = this;
}

Worker::~Worker() {
  // Normally run() returned with nothing outstanding. After a forced stop
  // the ring goes first, so the kernel drops every operation before the
  // buffers and Completion objects they name are freed.
  ring_.reset();
  destroy_retired();
  while (connections_ != nullptr) {
    SinkConnection* c = connections_;
    connections_ = c->next_;
    c->ops_ = 0;
    delete c;
  }
  accept_retry_timer_.cancel();
  timers_.reset();
  for (auto& l : listeners_) {
    ::close(l->fd);
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
  }
}

Result<void> Worker::init() {
  engine::set_log_shard(static_cast<int>(index_));
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    return make_error(Errc::kIo, std::string("eventfd: ") + std::strerror(errno));
  }
  engine::Ring::Options ro;
  ro.entries = kRingEntries;
  auto ring = engine::Ring::create(ro);
  if (!ring.ok()) {
    return std::move(ring).take_error();
  }
  ring_ = std::move(*ring);
  now_ = engine::SystemClock::instance().now();
  timers_ = std::make_unique<engine::TimerWheel>(now_);
  if (index_ == 0) {
    RM_LOG_DEBUG("io_uring features: %s", ring_->features().describe().c_str());
  }
  wake_op_.armed = true;
  ring_->read(wake_fd_, &wake_op_.value, sizeof wake_op_.value, 0, &wake_op_);
  for (auto& l : listeners_) {
    arm_accept(*l);
  }
  return ok_result();
}

void Worker::request_stop() {
  stop_requested_.store(true, std::memory_order_release);
  uint64_t one = 1;
  ssize_t w = ::write(wake_fd_, &one, sizeof one);
  (void)w;  // EAGAIN only when the counter is saturated: a wake-up is pending anyway
}

void Worker::WakeOp::complete(int /*res*/, uint32_t /*flags*/) {
  armed = false;
  if (!worker->stop_requested_.load(std::memory_order_acquire)) {
    armed = true;
    worker->ring_->read(worker->wake_fd_, &value, sizeof value, 0, this);
  }
}

// Run loop invariants:
//  1. The loop blocks only in Ring::submit_and_wait, until a CQE arrives or
//     the timer wheel's next deadline (at most kMaxWait); request_stop()
//     wakes it through the eventfd read that is always armed.
//  2. Every SQE prepared while handling a batch of CQEs or timers is
//     submitted by the next submit_and_wait, in one system call.
//  3. CQEs are reaped in batches (Ring::reap); `now_` is read once per
//     batch and timers advance once per iteration.
//  4. Connections retire only with no operation outstanding; they are
//     destroyed between batches, never inside a completion.
void Worker::run() {
  engine::TimePoint stop_deadline{};
  for (;;) {
    timers_->advance(now_);
    destroy_retired();
    if (!stopping_ && stop_requested_.load(std::memory_order_acquire)) {
      begin_stop();
      stop_deadline = now_ + kStopDeadline;
    }
    if (stopping_) {
      bool accepting =
          std::any_of(listeners_.begin(), listeners_.end(), [](const auto& l) { return l->armed; });
      bool quiet = connections_ == nullptr && retired_.empty() && !accepting && !wake_op_.armed;
      if (quiet || now_ >= stop_deadline) {
        break;
      }
    }
    engine::Nanos timeout = kMaxWait;
    if (auto next = timers_->next_wakeup()) {
      timeout = std::clamp<engine::Nanos>(*next - now_, engine::Nanos(0), kMaxWait);
    }
    if (stopping_) {
      timeout = std::min<engine::Nanos>(timeout, engine::Millis(10));
    }
    int rc = ring_->submit_and_wait(timeout);
    if (rc < 0) {
      RM_LOG_ERROR("io_uring_enter: %s", std::strerror(-rc));
    }
    now_ = engine::SystemClock::instance().now();
    ring_->reap();
  }
  destroy_retired();
}

void Worker::begin_stop() {
  stopping_ = true;
  accept_retry_timer_.cancel();
  for (auto& l : listeners_) {
    if (l->armed) {
      ring_->cancel(l.get(), nullptr);
    }
  }
  for (SinkConnection* c = connections_; c != nullptr;) {
    SinkConnection* next = c->next_;  // finish() may unlink c
    c->finish();
    c = next;
  }
}

void Worker::arm_accept(Listener& l) {
  if (l.armed || stopping_) {
    return;
  }
  l.armed = true;
  ring_->accept(l.fd, &l, /*multishot=*/true);  // single-shot where unsupported
}

void Worker::Listener::complete(int res, uint32_t flags) {
  worker->on_accept(*this, res, flags);
}

void Worker::on_accept(Listener& l, int res, uint32_t flags) {
  if ((flags & IORING_CQE_F_MORE) == 0) {
    l.armed = false;
  }
  if (res >= 0) {
    if (stopping_) {
      ::close(res);
    } else {
      admit(res);
    }
  } else if (res != -ECANCELED && res != -ECONNABORTED && res != -EINTR && res != -EAGAIN) {
    // EMFILE, ENFILE, ENOMEM, ...: the environment, not the peer. Log once,
    // back off briefly, go on.
    if (!accept_error_logged_) {
      accept_error_logged_ = true;
      RM_LOG_WARN("accept: %s (logged once; retrying)", std::strerror(-res));
    }
    if (!l.armed && !stopping_) {
      timers_->schedule(&accept_retry_timer_, now_ + kAcceptRetry);
    }
    return;
  }
  if (!l.armed) {
    arm_accept(l);
  }
}

void Worker::on_accept_retry(void* self) {
  auto* w = static_cast<Worker*>(self);
  for (auto& l : w->listeners_) {
    w->arm_accept(*l);
  }
}

void Worker::admit(int fd) {
  WorkerStats& st = stats_;
  st.connections.store(st.connections.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  if (st.first_connection_ns.load(std::memory_order_relaxed) == 0) {
    st.first_connection_ns.store(now_.time_since_epoch().count(), std::memory_order_relaxed);
  }
  bool admitted = true;
  uint32_t limit = shared_.options.max_connections;
  if (limit != 0) {
    // Exact over all workers: never admits more than `limit`.
    uint32_t cur = shared_.active_sessions.load(std::memory_order_relaxed);
    do {
      admitted = cur < limit;
    } while (admitted && !shared_.active_sessions.compare_exchange_weak(cur, cur + 1,
                                                                        std::memory_order_relaxed));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto* c = new SinkConnection(*this, fd, admitted);
  c->next_ = connections_;
  if (connections_ != nullptr) {
    connections_->prev_ = c;
  }
  connections_ = c;
  ++connection_count_;
  c->start();
}

void Worker::retire(SinkConnection* c) {
  if (c->prev_ != nullptr) {
    c->prev_->next_ = c->next_;
  } else {
    connections_ = c->next_;
  }
  if (c->next_ != nullptr) {
    c->next_->prev_ = c->prev_;
  }
  c->prev_ = c->next_ = nullptr;
  --connection_count_;
  retired_.push_back(c);
}

void Worker::destroy_retired() {
  for (SinkConnection* c : retired_) {
    delete c;
  }
  retired_.clear();
}

}  // namespace ringmail::tools
