#include "engine/scheduler.h"

#include <algorithm>

#include "engine/log.h"
#include "engine/shard.h"
#include "engine/smtp_connection.h"

namespace ringmail::engine {

void Job::add(std::string_view address, size_t domain_off) {
  RcptEntry r;
  r.addr_off = static_cast<uint32_t>(addrs.size());
  r.addr_len = static_cast<uint16_t>(address.size());
  r.domain_off = static_cast<uint16_t>(domain_off);
  addrs.append(address);
  rcpts.push_back(r);
}

RetryGroup::RetryGroup(Destination* d, void* sched)
    : timer(&Scheduler::on_retry_timer, this), scheduler(sched), dest(d) {}

Scheduler::Scheduler(Shard& shard)
    : shard_(shard), config_(shard.config()), rng_(0x9e3779b97f4a7c15ull ^ shard.id()) {}

Scheduler::~Scheduler() {
  // Shutdown already aborted every connection (Shard::loop waits for
  // quiescence). What is left is queued work that, with the spool off, ends
  // with the process; free it and say how much.
  std::unordered_set<Job*> jobs;
  for (auto& [name, d] : dests_) {
    for (const QItem& q : d->ready) {
      jobs.insert(q.job);
    }
  }
  for (RetryGroup* g : retry_groups_) {
    for (const QItem& q : g->items) {
      jobs.insert(q.job);
    }
    delete g;
  }
  for (Job* j : jobs) {
    delete j;
  }
  if (unfinished_ > 0) {
    RM_LOG_WARN("%llu queued recipients were not delivered before shutdown",
                static_cast<unsigned long long>(unfinished_));
  }
}

Destination& Scheduler::destination(std::string_view domain) {
  auto it = dests_.find(std::string(domain));
  if (it != dests_.end()) {
    return *it->second;
  }
  auto d = std::make_unique<Destination>();
  d->domain = std::string(domain);
  d->route = &config_.routing.route_for(domain);
  d->conn_limit = config_.delivery.max_conns_per_destination;
  Destination& ref = *d;
  dests_.emplace(d->domain, std::move(d));
  return ref;
}

void Scheduler::accept(Job* job) {
  unfinished_ += job->rcpts.size();
  // Recipients of one job that share a domain form runs; jobs are built in
  // batch order, so a run is usually the whole domain's share.
  uint32_t i = 0;
  const auto n = static_cast<uint32_t>(job->rcpts.size());
  while (i < n) {
    std::string_view dom = job->domain(job->rcpts[i]);
    uint32_t j = i + 1;
    while (j < n && job->domain(job->rcpts[j]) == dom) {
      ++j;
    }
    Destination& d = destination(dom);
    enqueue_run(d, job, i, j - i);
    dispatch(d);
    i = j;
  }
}

void Scheduler::enqueue_run(Destination& d, Job* job, uint32_t first, uint32_t count) {
  for (uint32_t k = 0; k < count; ++k) {
    job->rcpts[first + k].status = RcptStatus::kQueued;
    d.ready.push_back(QItem{job, first + k});
  }
  const uint32_t per = config_.delivery.max_rcpts_per_txn;
  d.ready_txns += (count + per - 1) / per;
}

void Scheduler::dispatch(Destination& d) {
  while (!d.ready.empty() && !d.idle.empty()) {
    SmtpConnection* c = d.idle.back();
    d.idle.pop_back();
    c->unpark();
    feed(c);
  }
  if (shutting_down_ || d.ready.empty()) {
    return;
  }
  if (!ensure_route(d)) {
    return;
  }
  const uint64_t window = std::max<uint32_t>(1, config_.delivery.max_pipelined_txns);
  const uint64_t wanted = (std::max<uint64_t>(d.ready_txns, 1) + window - 1) / window;
  uint32_t connecting = d.connections - d.working;
  while (d.connections < d.conn_limit && d.connections < wanted + d.working &&
         connecting < kMaxConnectsInFlight) {
    open_connection(d);
    ++connecting;
  }
}

bool Scheduler::ensure_route(Destination& d) {
  TimePoint now = shard_.clock().now();
  if (d.resolution && d.resolution->expires > now) {
    switch (d.resolution->kind) {
      case RouteResolution::Kind::kOk:
        return true;
      case RouteResolution::Kind::kBounce:
        bounce_queue(d, d.resolution->reply, Stage::kDns);
        return false;
      case RouteResolution::Kind::kDefer:
        defer_queue(d, d.resolution->reply, Stage::kDns);
        return false;
    }
  }
  if (!d.resolving) {
    d.resolving = true;
    auto synchronous = std::make_shared<bool>(true);
    Destination* dp = &d;
    shard_.resolver().resolve(*d.route, d.domain, [this, dp, synchronous](RouteResolution r) {
      dp->resolving = false;
      if (!r.note.empty()) {
        RM_LOG_INFO("route for %s: %s", dp->domain.c_str(), r.note.c_str());
      }
      dp->resolution = std::move(r);
      if (!*synchronous) {
        dispatch(*dp);
      }
    });
    *synchronous = false;
    if (!d.resolving) {
      return ensure_route(d);  // a static route resolved on the spot
    }
  }
  return d.resolution && d.resolution->kind == RouteResolution::Kind::kOk;
}

void Scheduler::open_connection(Destination& d) {
  auto* c = new SmtpConnection(shard_, *this, &d);
  ++d.connections;
  ++connections_;
  d.all.push_back(c);
  shard_.stats().connections_opened.fetch_add(1, std::memory_order_relaxed);
  c->start();
}

bool Scheduler::give_txn(Destination& d, SmtpConnection* c) {
  if (d.ready.empty()) {
    return false;
  }
  auto* ctx = new TxnCtx();
  ctx->dest = &d;
  ctx->job = d.ready.front().job;
  SessionTxn txn;
  txn.msg = ctx->job->msg;
  const uint32_t max = config_.delivery.max_rcpts_per_txn;
  while (!d.ready.empty() && d.ready.front().job == ctx->job && ctx->idx.size() < max) {
    uint32_t idx = d.ready.front().idx;
    d.ready.pop_front();
    RcptEntry& r = ctx->job->rcpts[idx];
    r.status = RcptStatus::kInFlight;
    ctx->idx.push_back(idx);
    txn.rcpts.push_back(ctx->job->address(r));
  }
  if (d.ready_txns > 0) {
    --d.ready_txns;
  }
  if (d.ready.empty()) {
    d.ready_txns = 0;
  }
  ++ctx->job->txns;
  txn.cookie = reinterpret_cast<uint64_t>(ctx);
  shard_.stats().transactions.fetch_add(1, std::memory_order_relaxed);
  c->add_txn(std::move(txn));
  return true;
}

void Scheduler::feed(SmtpConnection* c) {
  Destination& d = *c->dest();
  while (c->can_accept_txn() && give_txn(d, c)) {
  }
  if (c->idle()) {
    if (shutting_down_ || !c->can_accept_txn()) {
      c->quit();  // per-connection message limit reached, or shutting down
      return;
    }
    if (std::find(d.idle.begin(), d.idle.end(), c) == d.idle.end()) {
      d.idle.push_back(c);
      c->park();
    }
  }
  dispatch(d);
}

void Scheduler::connection_expired(SmtpConnection* c) {
  Destination& d = *c->dest();
  std::erase(d.idle, c);
}

void Scheduler::connection_closed(SmtpConnection* c) {
  Destination& d = *c->dest();
  std::erase(d.idle, c);
  std::erase(d.all, c);
  --d.connections;
  --connections_;
  if (c->failed_before_ready()) {
    proto::Reply why = c->failure() ? *c->failure()
                                    : proto::make_reply(451, "4.4.1 connection failed");
    if (d.working == 0 && d.connections == 0) {
      // Dead destination: nobody can reach it now. Defer what waits for it
      // instead of hammering it with new connections.
      defer_queue(d, why, Stage::kConnect);
    } else {
      // Others work: this many connections is what the server accepts.
      d.conn_limit = std::max<uint32_t>(1, std::min(d.conn_limit, d.connections));
      d.successes = 0;
    }
  }
  dispatch(d);
}

void Scheduler::record_outcome(const SessionTxn& txn, size_t index, const Outcome& o,
                               std::string_view peer, std::string_view mx) {
  auto* ctx = reinterpret_cast<TxnCtx*>(txn.cookie);
  Job* job = ctx->job;
  uint32_t idx = ctx->idx[index];
  RcptEntry& r = job->rcpts[idx];
  ++r.attempts;
  EventType type = o.disposition == Disposition::kDelivered ? EventType::kDelivered
                   : o.disposition == Disposition::kBounced ? EventType::kBounced
                                                            : EventType::kDeferred;
  OutcomeRecord rec{};
  rec.type = type;
  rec.msg = job->msg.get();
  rec.recipient = job->address(r);
  rec.reply = o.reply;
  rec.stage = o.stage;
  rec.unknown = o.unknown;
  rec.peer = peer;
  rec.mx = mx;
  rec.attempt = r.attempts;
  rec.wall_ms = shard_.clock().wall_ms();
  rec.queue_ms = std::chrono::duration_cast<Millis>(shard_.clock().now() -
                                                    job->msg->accepted_at())
                     .count();
  rec.shard = shard_.id();
  shard_.emit(rec);
  if (type == EventType::kDeferred) {
    r.status = RcptStatus::kDeferred;
    last_deferral_ = o.reply->summary();
    // Retried together with the rest of its transaction (txn_done).
  } else {
    finalize(job, idx);
  }
}

void Scheduler::txn_done(SessionTxn& txn) {
  auto* ctx = reinterpret_cast<TxnCtx*>(txn.cookie);
  Destination& d = *ctx->dest;
  std::vector<QItem> deferred;
  bool delivered_any = false;
  for (uint32_t idx : ctx->idx) {
    RcptEntry& r = ctx->job->rcpts[idx];
    if (r.status == RcptStatus::kDeferred) {
      deferred.push_back(QItem{ctx->job, idx});
    } else if (r.status == RcptStatus::kFinal) {
      delivered_any = true;
    }
  }
  if (delivered_any && ++d.successes >= kRecoverAfter) {
    d.successes = 0;
    if (d.conn_limit < config_.delivery.max_conns_per_destination) {
      ++d.conn_limit;
    }
  }
  if (!deferred.empty()) {
    schedule_retry(d, std::move(deferred), last_deferral_);
  }
  --ctx->job->txns;
  maybe_free(ctx->job);
  delete ctx;
}

void Scheduler::txn_returned(SessionTxn&& txn) {
  auto* ctx = reinterpret_cast<TxnCtx*>(txn.cookie);
  Destination& d = *ctx->dest;
  // Back to the head of the queue, in order, without counting an attempt.
  for (auto it = ctx->idx.rbegin(); it != ctx->idx.rend(); ++it) {
    ctx->job->rcpts[*it].status = RcptStatus::kQueued;
    d.ready.push_front(QItem{ctx->job, *it});
  }
  ++d.ready_txns;
  --ctx->job->txns;
  delete ctx;
}

void Scheduler::finalize(Job* job, uint32_t idx) {
  job->rcpts[idx].status = RcptStatus::kFinal;
  --unfinished_;
  shard_.recipient_final(1);
  --job->unfinished;
  maybe_free(job);
}

void Scheduler::maybe_free(Job* job) {
  if (job->unfinished == 0 && job->txns == 0) {
    delete job;
  }
}

Millis Scheduler::retry_delay(uint16_t attempts) {
  const auto& s = config_.retry.schedule;
  size_t i = attempts == 0 ? 0 : std::min<size_t>(attempts - 1, s.size() - 1);
  Millis base = s[i];
  uint32_t jitter = config_.retry.jitter_percent;
  if (jitter == 0 || base.count() < 10) {
    return base;
  }
  // Uniform in [base * (1 - j), base * (1 + j)]: spreads a destination's
  // retries so they do not all return in the same millisecond.
  int64_t span = base.count() * jitter / 100;
  std::uniform_int_distribution<int64_t> dist(-span, span);
  return Millis(base.count() + dist(rng_));
}

void Scheduler::schedule_retry(Destination& d, std::vector<QItem> items, const std::string& why) {
  if (items.empty()) {
    return;
  }
  auto* g = new RetryGroup(&d, this);
  g->items = std::move(items);
  g->last_reply = why;
  // Every item of a group shares a transaction, hence attempts and message.
  const RcptEntry& r0 = g->items.front().job->rcpts[g->items.front().idx];
  TimePoint now = shard_.clock().now();
  TimePoint due = now + retry_delay(r0.attempts);
  TimePoint expiry = g->items.front().job->msg->accepted_at() + config_.retry.max_age;
  if (due > expiry) {
    due = expiry;
  }
  d.retry_waiting += g->items.size();
  retry_groups_.insert(g);
  shard_.timers().schedule(&g->timer, due);
}

void Scheduler::on_retry_timer(void* ctx) {
  auto* g = static_cast<RetryGroup*>(ctx);
  static_cast<Scheduler*>(g->scheduler)->retry_due(g);
}

void Scheduler::retry_due(RetryGroup* g) {
  std::unique_ptr<RetryGroup> owned(g);
  retry_groups_.erase(g);
  Destination& d = *g->dest;
  d.retry_waiting -= g->items.size();
  TimePoint now = shard_.clock().now();
  std::vector<QItem> live;
  for (const QItem& q : g->items) {
    if (now >= q.job->msg->accepted_at() + config_.retry.max_age) {
      expire(d, q, g->last_reply);
    } else {
      live.push_back(q);
    }
  }
  if (!live.empty()) {
    for (const QItem& q : live) {
      q.job->rcpts[q.idx].status = RcptStatus::kQueued;
      d.ready.push_back(q);
    }
    d.ready_txns += 1 + live.size() / std::max<uint32_t>(1, config_.delivery.max_rcpts_per_txn);
    dispatch(d);
  }
}

void Scheduler::emit_for(const QItem& q, EventType type, const proto::Reply& why, Stage stage,
                         std::string_view note) {
  const RcptEntry& r = q.job->rcpts[q.idx];
  OutcomeRecord rec{};
  rec.type = type;
  rec.msg = q.job->msg.get();
  rec.recipient = q.job->address(r);
  rec.reply = &why;
  rec.stage = stage;
  rec.attempt = r.attempts;
  rec.wall_ms = shard_.clock().wall_ms();
  rec.queue_ms =
      std::chrono::duration_cast<Millis>(shard_.clock().now() - q.job->msg->accepted_at()).count();
  rec.shard = shard_.id();
  rec.note = note;
  shard_.emit(rec);
}

void Scheduler::expire(Destination& /*d*/, QItem q, std::string_view last_reply) {
  Millis age = config_.retry.max_age;
  std::string text = "5.4.7 delivery time expired after " + std::to_string(age.count() / 1000) +
                     "s in the queue";
  if (!last_reply.empty()) {
    text += "; last error: " + std::string(last_reply);
  }
  proto::Reply reply = proto::make_reply(554, text);
  emit_for(q, EventType::kBounced, reply, Stage::kLocal, "expired");
  finalize(q.job, q.idx);
}

void Scheduler::bounce_queue(Destination& d, const proto::Reply& why, Stage stage) {
  while (!d.ready.empty()) {
    QItem q = d.ready.front();
    d.ready.pop_front();
    ++q.job->rcpts[q.idx].attempts;
    emit_for(q, EventType::kBounced, why, stage, "");
    finalize(q.job, q.idx);
  }
  d.ready_txns = 0;
}

void Scheduler::defer_queue(Destination& d, const proto::Reply& why, Stage stage) {
  if (d.ready.empty()) {
    return;
  }
  // One deferred event per queued recipient, then retry groups per job run
  // (a group shares attempts, so split where attempts differ).
  std::vector<QItem> group;
  const std::string summary = why.summary();
  auto flush_group = [&] {
    if (!group.empty()) {
      schedule_retry(d, std::move(group), summary);
      group.clear();
    }
  };
  while (!d.ready.empty()) {
    QItem q = d.ready.front();
    d.ready.pop_front();
    RcptEntry& r = q.job->rcpts[q.idx];
    ++r.attempts;
    r.status = RcptStatus::kDeferred;
    emit_for(q, EventType::kDeferred, why, stage, "");
    if (!group.empty() && (group.front().job != q.job ||
                           group.front().job->rcpts[group.front().idx].attempts != r.attempts)) {
      flush_group();
    }
    group.push_back(q);
  }
  flush_group();
  d.ready_txns = 0;
}

void Scheduler::begin_shutdown() {
  shutting_down_ = true;
  for (auto& [name, d] : dests_) {
    for (SmtpConnection* c : std::vector<SmtpConnection*>(d->idle)) {
      c->quit();
    }
  }
}

void Scheduler::abort_all() {
  shutting_down_ = true;
  for (auto& [name, d] : dests_) {
    for (SmtpConnection* c : std::vector<SmtpConnection*>(d->all)) {
      c->abort("ringmail is shutting down");
    }
  }
}

}  // namespace ringmail::engine
