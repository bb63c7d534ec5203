#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include "engine/failpoint.h"
#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/shard.h"
#include "engine/smtp_connection.h"
#include "proto/address.h"
#include "proto/bounce.h"
#include "proto/json.h"

namespace ringmail::engine {
namespace {

proto::FailureStage failure_stage(Stage s) {
  switch (s) {
    case Stage::kDns:
      return proto::FailureStage::kDns;
    case Stage::kTls:
      return proto::FailureStage::kTls;
    case Stage::kConnect:
    case Stage::kGreeting:
    case Stage::kEhlo:
    case Stage::kHelo:
      return proto::FailureStage::kConnection;
    default:
      return proto::FailureStage::kSmtp;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Small pieces

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

Destination::Destination(void* sched)
    : wake(&Scheduler::on_wake_timer, this),
      expiry(&Scheduler::on_expiry_timer, this),
      effects_timer(&Scheduler::on_effects_timer, this),
      scheduler(sched) {}

uint32_t Destination::connections() const {
  uint32_t n = 0;
  for (const auto& s : sources) {
    n += s.connections;
  }
  return n;
}

uint32_t Destination::working() const {
  uint32_t n = 0;
  for (const auto& s : sources) {
    n += s.working;
  }
  return n;
}

void TokenBucket::configure(Rate rate, TimePoint now) {
  rate_ = rate.per_second;
  burst_ = std::max(1.0, std::ceil(rate_ * 0.1));
  tokens_ = burst_;
  last_ = now;
}

void TokenBucket::refill(TimePoint now) {
  if (now > last_) {
    double secs = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + secs * rate_);
    last_ = now;
  }
}

bool TokenBucket::try_take(TimePoint now) {
  if (rate_ <= 0) {
    return true;
  }
  refill(now);
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  return false;
}

TimePoint TokenBucket::next_token(TimePoint now) const {
  if (rate_ <= 0 || tokens_ >= 1.0) {
    return now;
  }
  double need = (1.0 - tokens_) / rate_;
  TimePoint at = last_ + std::chrono::duration_cast<Nanos>(std::chrono::duration<double>(need));
  return std::max(at, now);
}

// ---------------------------------------------------------------------------
// Scheduler

Scheduler::Scheduler(Shard& shard)
    : shard_(shard), config_(&shard.config()), rng_(0x9e3779b97f4a7c15ull ^ shard.id()) {}

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

bool Scheduler::matches(const std::string& pattern, const std::string& domain) const {
  if (pattern == "*" || pattern == domain) {
    return true;
  }
  if (pattern.starts_with("*.")) {
    std::string_view suffix = std::string_view(pattern).substr(1);
    return domain.size() > suffix.size() && domain.ends_with(suffix);
  }
  return false;
}

Destination& Scheduler::destination(std::string_view domain, uint32_t pool) {
  std::string key(domain);
  key.push_back('\0');
  key.append(std::to_string(pool));
  auto it = dests_.find(key);
  if (it != dests_.end()) {
    return *it->second;
  }
  auto d = std::make_unique<Destination>(this);
  d->domain = std::string(domain);
  d->pool = pool;
  d->shaping = config_->shaping_for(domain);
  d->route = &config_->routing.route_for(domain);
  TimePoint now = shard_.clock().now();
  for (uint32_t src : config_->egress.pools[pool].sources) {
    SourceState s;
    s.source = src;
    s.conn_limit = d->shaping.max_connections;
    s.msgs.configure(d->shaping.msg_rate, now);
    s.connects.configure(d->shaping.connect_rate, now);
    d->sources.push_back(std::move(s));
  }
  if (const ProviderRules* rules = config_->provider_shaping.rules.get()) {
    for (const AutomationRule* r : rules->match(d->domain, {}).automation) {
      d->automation.push_back(r);
      d->rule_hits.push_back(Destination::RuleHits{r, {}});
    }
  }
  for (const auto& p : paused_patterns_) {
    d->paused = d->paused || matches(p, d->domain);
  }
  Destination& ref = *d;
  dests_.emplace(std::move(key), std::move(d));
  return ref;
}

void Scheduler::accept(Job* job) {
  unfinished_ += job->rcpts.size();
  enqueue_job(job);
  settle_job();
  dispatch_touched();
}

void Scheduler::reconfigure() {
  config_ = &shard_.config();
  const ProviderRules* rules = config_->provider_shaping.rules.get();
  for (auto& [key, dp] : dests_) {
    Destination& d = *dp;
    const Route* route = &config_->routing.route_for(d.domain);
    if (route->describe() != d.route->describe()) {
      RM_LOG_INFO("reload: route for %s is now %s (was %s)", d.domain.c_str(),
                  route->describe().c_str(), d.route->describe().c_str());
      ++d.route_gen;
      d.resolution.reset();
      d.mx_names.clear();
      // The old route's failures say nothing about the new one: a backoff
      // ends now (automation Suspend effects still run their course).
      d.failing = false;
      // Connections on the old route take no new work: idle ones quit now,
      // busy ones once their transactions are done.
      for (SmtpConnection* c : std::vector<SmtpConnection*>(d.all)) {
        c->quit();
      }
      const TimePoint now = shard_.clock().now();
      for (auto& src : d.sources) {
        if (src.backing_off) {
          src.backoff_until = std::max(now, src.suspend_until);
        }
      }
    }
    d.route = route;
    ProviderRules::Match m;
    if (rules != nullptr) {
      m = rules->match(d.domain, d.mx_names);
    }
    d.provider = m.provider;
    d.automation = std::move(m.automation);
    d.rule_hits.clear();
    for (const AutomationRule* r : d.automation) {
      d.rule_hits.push_back(Destination::RuleHits{r, {}});
    }
    const Millis max_age = d.shaping.max_age;
    apply_shaping(d);
    if (d.shaping.max_age != max_age && !d.ready.empty()) {
      sweep_expired(d);
    }
    if (!d.ready.empty() && !d.touched) {
      d.touched = true;
      touched_.push_back(&d);
    }
  }
  dispatch_touched();
}

void Scheduler::enqueue_job(Job* job) {
  // Recipients of one job that share a domain form runs. Every run is
  // queued before anything is dispatched, so a job's recipients for one
  // destination travel in as few transactions as the limits allow even
  // when the batch interleaves domains.
  uint32_t i = 0;
  const auto n = static_cast<uint32_t>(job->rcpts.size());
  const uint32_t pool = job->msg->pool();
  while (i < n) {
    std::string_view dom = job->domain(job->rcpts[i]);
    uint32_t j = i + 1;
    while (j < n && job->domain(job->rcpts[j]) == dom) {
      ++j;
    }
    Destination& d = destination(dom, pool);
    for (uint32_t k = i; k < j; ++k) {
      enqueue(d, job, k);
    }
    i = j;
  }
}

void Scheduler::enqueue(Destination& d, Job* job, uint32_t idx) {
  job->rcpts[idx].status = RcptStatus::kQueued;
  d.ready.push_back(QItem{job, idx});
  arm_expiry(d, job);
  if (d.job_new == 0) {
    job_touched_.push_back(&d);
  }
  ++d.job_new;
}

void Scheduler::settle_job() {
  // One job's recipients for a destination are consecutive in its queue:
  // they need ceil(n / max_rcpts_per_txn) transactions.
  for (Destination* d : job_touched_) {
    const uint32_t per = std::max<uint32_t>(1, d->shaping.max_rcpts_per_txn);
    d->ready_txns += (d->job_new + per - 1) / per;
    d->job_new = 0;
    if (!d->touched) {
      d->touched = true;
      touched_.push_back(d);
    }
  }
  job_touched_.clear();
}

void Scheduler::dispatch_touched() {
  std::vector<Destination*> ds;
  ds.swap(touched_);
  for (Destination* d : ds) {
    d->touched = false;
    dispatch(*d);
  }
}

void Scheduler::accept_recovered(std::vector<RecoveredJob> jobs) {
  const int64_t now_wall = shard_.clock().wall_ms();
  const TimePoint now = shard_.clock().now();
  uint64_t rcpts = 0, bytes = 0;
  for (RecoveredJob& rj : jobs) {
    Job* job = rj.job;
    unfinished_ += rj.rcpts.size();
    rcpts += rj.rcpts.size();
    bytes += job->addrs.size();
    // Recipients of one job and domain with the same due time travel together.
    size_t i = 0;
    while (i < rj.rcpts.size()) {
      const RecoveredRcpt& first = rj.rcpts[i];
      std::string_view dom = job->domain(job->rcpts[first.idx]);
      Destination& d = destination(dom, job->msg->pool());
      std::vector<QItem> later;
      size_t j = i;
      for (; j < rj.rcpts.size(); ++j) {
        const RecoveredRcpt& r = rj.rcpts[j];
        if (job->domain(job->rcpts[r.idx]) != dom || r.next_retry_ms != first.next_retry_ms) {
          break;
        }
        if (r.next_retry_ms > now_wall) {
          later.push_back(QItem{job, r.idx});
        } else {
          enqueue(d, job, r.idx);
        }
      }
      if (!later.empty()) {
        auto* g = new RetryGroup(&d, this);
        g->items = std::move(later);
        g->last_reply = "recovered from the spool";
        for (const QItem& q : g->items) {
          q.job->rcpts[q.idx].status = RcptStatus::kDeferred;
        }
        d.retry_waiting += g->items.size();
        retry_groups_.insert(g);
        // Never later than the recipients' expiry (retry_due bounces them then).
        TimePoint due = std::min(now + Millis(first.next_retry_ms - now_wall),
                                 job->msg->accepted_at() + d.shaping.max_age);
        shard_.timers().schedule(&g->timer, due);
      }
      i = j;
    }
    settle_job();
  }
  // Each destination is dispatched once, with its whole recovered queue:
  // connections are opened for the queue's size, not once per job.
  dispatch_touched();
  shard_.runtime().add_recovered(rcpts, bytes);
}

void Scheduler::arm_wake(Destination& d, TimePoint when) {
  if (!d.wake.armed() || when < shard_.clock().now()) {
    shard_.timers().schedule(&d.wake, when);
  }
}

void Scheduler::on_wake_timer(void* dest) {
  auto* d = static_cast<Destination*>(dest);
  static_cast<Scheduler*>(d->scheduler)->dispatch(*d);
}

void Scheduler::end_backoffs(Destination& d, TimePoint now) {
  for (auto& s : d.sources) {
    if (s.backing_off && now >= s.backoff_until) {
      s.backing_off = false;
      s.hold_txns = false;
      s.hold_connect = false;
      s.successes = 0;
      destination_event(d, s, EventType::kResume, "");
    }
  }
}

void Scheduler::dispatch(Destination& d) {
  end_backoffs(d, shard_.clock().now());
  if (d.paused) {
    return;  // the expiry timer still bounces what waits too long
  }
  if (const Destination::Effect* b = bouncing(d); b != nullptr && !d.ready.empty()) {
    bounce_queue(d, b->reply, Stage::kLocal);  // an automation rule's Bounce
    return;
  }
  // Idle connections first, each offered work once (feed() parks it again
  // when a rate limit or an empty queue leaves it idle).
  for (auto& s : d.sources) {
    if (s.hold_txns || d.ready.empty()) {
      continue;
    }
    std::vector<SmtpConnection*> idle;
    idle.swap(s.idle);
    for (SmtpConnection* c : idle) {
      c->unpark();
      feed_one(c);
    }
  }
  // Then connections in the middle of a transaction that have room in
  // their pipelining window: new work joins a session that is already up
  // rather than opening a connection per arriving message.
  // (By index, not over a copy: no allocation per dispatch. A connection
  // that closes while being fed leaves the list; we then skip one, which
  // the next dispatch makes up for.)
  for (size_t k = 0; k < d.all.size() && !d.ready.empty(); ++k) {
    SmtpConnection* c = d.all[k];
    if (c->working() && !c->parked() && c->can_accept_txn() && !d.sources[c->source()].hold_txns) {
      feed_one(c);
    }
  }
  open_more(d);
  if (!d.ready.empty() && held_everywhere(d) && d.connections() == d.working()) {
    // Nothing can be sent before the backoff ends (refused connections, a
    // 421, a run of throttling replies): what waits is deferred now, with
    // that reason, and retried on the schedule — like the recipients whose
    // attempts failed — instead of waiting silently behind the hold. (While
    // an attempt is still connecting, it decides.)
    const SourceState* why = &d.sources.front();
    for (const auto& s : d.sources) {
      if (s.backoff_until > why->backoff_until) {
        why = &s;
      }
    }
    proto::Reply reply = why->hold_reply;
    Stage stage = why->hold_stage;
    defer_queue(d, reply, stage);
  }
}

bool Scheduler::held_everywhere(const Destination& d) const {
  for (const auto& s : d.sources) {
    if (!(s.backing_off && s.hold_txns)) {
      return false;
    }
  }
  return !d.sources.empty();
}

std::string Scheduler::hold_reason(const Destination& d) const {
  for (const auto& s : d.sources) {
    if (s.backing_off && s.hold_txns) {
      return s.hold_reply.summary();
    }
  }
  return "";
}

bool Scheduler::expired(const Destination& d, const QItem& q, TimePoint now) const {
  return now >= q.job->msg->accepted_at() + d.shaping.max_age;
}

void Scheduler::arm_expiry(Destination& d, const Job* job) {
  TimePoint at = job->msg->accepted_at() + d.shaping.max_age;
  if (!d.expiry.armed() || at < d.expiry_at) {
    d.expiry_at = at;
    shard_.timers().schedule(&d.expiry, at);
  }
}

void Scheduler::on_expiry_timer(void* dest) {
  auto* d = static_cast<Destination*>(dest);
  static_cast<Scheduler*>(d->scheduler)->sweep_expired(*d);
}

void Scheduler::sweep_expired(Destination& d) {
  // Runs only when something in the queue may have reached max_age: a
  // paused, held, rate-limited or unroutable destination. Mail that moves
  // leaves the queue long before.
  const TimePoint now = shard_.clock().now();
  const std::string why = hold_reason(d);
  std::deque<QItem> keep;
  const Job* oldest = nullptr;
  for (const QItem& q : d.ready) {
    if (expired(d, q, now)) {
      expire(d, q, why, 0);  // 0: when it was last tried is not known here
    } else {
      if (oldest == nullptr || q.job->msg->accepted_at() < oldest->msg->accepted_at()) {
        oldest = q.job;
      }
      keep.push_back(q);
    }
  }
  d.ready.swap(keep);
  d.ready_txns = std::min<uint64_t>(d.ready_txns, d.ready.size());
  if (oldest != nullptr) {
    arm_expiry(d, oldest);
  }
}

void Scheduler::open_more(Destination& d) {
  TimePoint now = shard_.clock().now();
  if (shutting_down_ || d.ready.empty()) {
    return;
  }
  if (!ensure_route(d)) {
    return;
  }
  if (d.failing && d.connections() > d.working()) {
    return;  // connections failed: the attempts still under way decide first
  }
  const uint64_t window = std::max<uint32_t>(1, config_->delivery.max_pipelined_txns);
  const uint64_t wanted = (std::max<uint64_t>(d.ready_txns, 1) + window - 1) / window;
  uint32_t connecting = d.connections() - d.working();
  std::optional<TimePoint> retry_at;
  const size_t n = d.sources.size();
  for (size_t tries = 0;
       tries < n && d.connections() < wanted + d.working() && connecting < kMaxConnectsInFlight;) {
    uint32_t i = d.next_source % static_cast<uint32_t>(n);
    SourceState& s = d.sources[i];
    bool eligible = s.connections < s.conn_limit && !(s.backing_off && s.hold_txns);
    if (eligible && s.connects.limited() && !s.connects.try_take(now)) {
      TimePoint t = s.connects.next_token(now);
      retry_at = retry_at ? std::min(*retry_at, t) : t;
      eligible = false;
    }
    if (s.backing_off && s.hold_txns) {
      retry_at = retry_at ? std::min(*retry_at, s.backoff_until) : s.backoff_until;
    }
    if (!eligible) {
      ++d.next_source;
      ++tries;
      continue;
    }
    if (connecting_ >= config_->delivery.max_connecting) {
      // The shard's set-up budget is spent: wait in line for a slot.
      if (!d.waiting_slot) {
        d.waiting_slot = true;
        slot_waiters_.push_back(&d);
      }
      break;
    }
    open_connection(d, i);
    ++connecting;
    ++d.next_source;
    tries = 0;
  }
  if (retry_at) {
    arm_wake(d, *retry_at);
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
    const uint64_t gen = d.route_gen;
    shard_.resolver().resolve(*d.route, d.domain, [this, dp, synchronous, gen](RouteResolution r) {
      dp->resolving = false;
      if (gen != dp->route_gen) {
        // A reload changed the route while this lookup ran: look up the
        // new one instead.
        if (!*synchronous) {
          dispatch(*dp);
        }
        return;
      }
      if (!r.note.empty()) {
        RM_LOG_INFO("route for %s: %s", dp->domain.c_str(), r.note.c_str());
      }
      dp->resolution = std::move(r);
      shape_for_route(*dp);
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

void Scheduler::open_connection(Destination& d, uint32_t source) {
  auto* c = new SmtpConnection(shard_, *this, &d, source);
  SourceState& s = d.sources[source];
  ++s.connections;
  ++connections_;
  ++connecting_;
  d.all.push_back(c);
  shard_.stats().connections_opened.fetch_add(1, std::memory_order_relaxed);
  c->start();
}

bool Scheduler::give_txn(Destination& d, SmtpConnection* c) {
  if (d.ready.empty() || d.paused) {
    return false;
  }
  SourceState& s = d.sources[c->source()];
  if (s.hold_txns) {
    return false;
  }
  if (const Destination::Effect* b = bouncing(d)) {
    bounce_queue(d, b->reply, Stage::kLocal);
    return false;
  }
  TimePoint now = shard_.clock().now();
  if (!s.msgs.try_take(now)) {
    arm_wake(d, s.msgs.next_token(now));
    return false;
  }
  // Whatever reached max_age while it waited (a rate limit, a backoff, a
  // pause) bounces as expired instead of being sent.
  while (!d.ready.empty() && expired(d, d.ready.front(), now)) {
    QItem q = d.ready.front();
    d.ready.pop_front();
    expire(d, q, hold_reason(d), 0);
  }
  if (d.ready.empty()) {
    d.ready_txns = 0;
    return false;
  }
  auto* ctx = new TxnCtx();
  ctx->dest = &d;
  ctx->source = c->source();
  ctx->job = d.ready.front().job;
  SessionTxn txn;
  txn.msg = ctx->job->msg;
  // A personalised message is rendered per recipient: one per transaction.
  const bool personal = txn.msg->personalised();
  const uint32_t max = personal ? 1 : d.shaping.max_rcpts_per_txn;
  if (personal) {
    txn.vars = txn.msg->rcpt_vars(d.ready.front().idx);
  }
  while (!d.ready.empty() && d.ready.front().job == ctx->job && ctx->idx.size() < max) {
    uint32_t idx = d.ready.front().idx;
    d.ready.pop_front();
    RcptEntry& r = ctx->job->rcpts[idx];
    r.status = RcptStatus::kInFlight;
    ctx->idx.push_back(idx);
    txn.rcpts.push_back(ctx->job->address(r));
  }
  d.in_flight += ctx->idx.size();
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
  feed_one(c);
  Destination& d = *c->dest();
  if (!d.ready.empty()) {
    open_more(d);
  }
}

void Scheduler::feed_one(SmtpConnection* c) {
  Destination& d = *c->dest();
  SourceState& s = d.sources[c->source()];
  while (c->can_accept_txn() && give_txn(d, c)) {
  }
  if (c->idle()) {
    if (shutting_down_ || !c->can_accept_txn() || d.paused) {
      c->quit();  // per-connection message limit reached, paused, or shutting down
      return;
    }
    if (std::find(s.idle.begin(), s.idle.end(), c) == s.idle.end()) {
      s.idle.push_back(c);
      c->park();
    }
  }
}

void Scheduler::connection_expired(SmtpConnection* c) {
  std::erase(c->dest()->sources[c->source()].idle, c);
}

void Scheduler::connection_ready(SmtpConnection* c) {
  --connecting_;
  c->dest()->failing = false;
  SourceState& s = c->dest()->sources[c->source()];
  if (s.hold_txns && s.hold_connect) {
    // Connections failed, but this one (started before the hold) works:
    // the destination is reachable. Keep the lowered limit, lift the hold.
    s.hold_txns = false;
    s.hold_connect = false;
  }
  grant_slots();
}

void Scheduler::grant_slots() {
  if (granting_ || aborting_) {
    return;
  }
  granting_ = true;
  while (connecting_ < config_->delivery.max_connecting && !slot_waiters_.empty()) {
    Destination* d = slot_waiters_.front();
    slot_waiters_.pop_front();
    d->waiting_slot = false;
    open_more(*d);
  }
  granting_ = false;
}

void Scheduler::connection_closed(SmtpConnection* c) {
  Destination& d = *c->dest();
  SourceState& s = d.sources[c->source()];
  std::erase(s.idle, c);
  std::erase(d.all, c);
  --s.connections;
  --connections_;
  if (!c->working()) {
    --connecting_;
  }
  grant_slots();
  if (aborting_) {
    // Our own shutdown closed it: not a statement about the destination.
    dispatch(d);
    return;
  }
  if (c->failure() && !d.automation.empty()) {
    automate(d, *c->failure());
  }
  if (c->failed_before_ready()) {
    proto::Reply why =
        c->failure() ? *c->failure() : proto::make_reply(451, "4.4.1 connection failed");
    if (d.working() == 0) {
      // Nobody reaches the destination now (the attempt tried every
      // address it had). A refused connection is a failure however deep
      // the queue is, never a reason to open the next one at once: no new
      // attempt starts while others are still connecting (they decide),
      // the source holds for the backoff time, and once no attempt is left
      // what waits is deferred.
      d.failing = true;
      const bool was_held = s.backing_off && s.hold_txns;
      throttle(d, s, why, c->failure_stage(), /*hold=*/true);
      s.hold_connect = s.hold_txns && (!was_held || s.hold_connect);
      if (d.connections() == 0) {
        defer_queue(d, why, c->failure_stage());  // kConnect, or kTls/kAuth
      }
    } else {
      // Others work: this many connections is what the server accepts.
      throttle(d, s, why, c->failure_stage(), /*hold=*/false);
    }
  } else if (c->server_closing() && c->failure()) {
    // 421: the server asked us to go away (RFC 5321 3.8).
    throttle(d, s, *c->failure(), Stage::kConnect, /*hold=*/true);
    s.hold_connect = false;
  }
  dispatch(d);
}

void Scheduler::throttle_signal(Destination& d, SourceState& s, const proto::Reply& why,
                                Stage stage) {
  const TimePoint now = shard_.clock().now();
  while (!s.signals.empty() && s.signals.front() + d.shaping.backoff_window <= now) {
    s.signals.pop_front();
  }
  s.signals.push_back(now);
  if (s.signals.size() >= d.shaping.backoff_after) {
    s.signals.clear();
    throttle(d, s, why, stage, /*hold=*/true);
    s.hold_connect = false;
  }
}

void Scheduler::throttle(Destination& d, SourceState& s, const proto::Reply& why, Stage stage,
                         bool hold) {
  TimePoint now = shard_.clock().now();
  const std::string reason = why.summary();
  uint32_t before = s.conn_limit;
  if (hold && s.backing_off && s.hold_txns) {
    // Already holding (several attempts failed together): one halving.
  } else if (hold) {
    s.conn_limit = std::max<uint32_t>(1, s.conn_limit / 2);
  } else {
    s.conn_limit = std::max<uint32_t>(1, std::min(s.conn_limit, s.working));
  }
  s.successes = 0;
  s.backoff_until = std::max(now + d.shaping.backoff, s.suspend_until);
  bool was = s.backing_off;
  bool held = s.hold_txns;
  s.backing_off = d.shaping.backoff.count() > 0 || s.suspend_until > now;
  s.hold_txns = s.backing_off && (s.hold_txns || hold);
  if (hold || !held) {
    s.hold_reply = why;
    s.hold_stage = stage;
  }
  if (s.backing_off && (!was || (s.hold_txns && !held) || s.conn_limit != before)) {
    destination_event(d, s, EventType::kBackoff, reason);
  }
  if (s.backing_off) {
    arm_wake(d, s.backoff_until);
  }
}

void Scheduler::destination_event(const Destination& d, const SourceState& s, EventType type,
                                  std::string_view reason) {
  DestinationRecord rec{};
  rec.type = type;
  rec.domain = d.domain;
  rec.pool = config_->egress.pools[d.pool].name;
  rec.source = config_->egress.sources[s.source].name;
  rec.reason = reason;
  rec.max_connections = s.conn_limit;
  rec.hold = s.hold_txns;
  rec.wall_ms = shard_.clock().wall_ms();
  rec.until_wall_ms =
      rec.wall_ms +
      std::chrono::duration_cast<Millis>(s.backoff_until - shard_.clock().now()).count();
  rec.shard = shard_.id();
  shard_.emit_destination(rec);
}

void Scheduler::emit_for(const QItem& q, EventType type, const proto::Reply& why, Stage stage,
                         std::string_view note, std::string_view peer, std::string_view mx,
                         bool unknown, std::string_view tls) {
  const RcptEntry& r = q.job->rcpts[q.idx];
  OutcomeRecord rec{};
  rec.type = type;
  rec.msg = q.job->msg.get();
  rec.recipient = q.job->address(r);
  rec.reply = &why;
  rec.stage = stage;
  rec.unknown = unknown;
  rec.peer = peer;
  rec.mx = mx;
  rec.tls = tls;
  rec.attempt = r.attempts;
  rec.wall_ms = shard_.clock().wall_ms();
  rec.queue_ms =
      std::chrono::duration_cast<Millis>(shard_.clock().now() - q.job->msg->accepted_at()).count();
  rec.shard = shard_.id();
  rec.note = note;
  if (type != EventType::kDelivered) {
    proto::FailureStage fs = note == "expired"   ? proto::FailureStage::kExpiry
                             : note == "dropped" ? proto::FailureStage::kOperator
                                                 : failure_stage(stage);
    rec.failure_class = proto::failure_class_name(
        proto::classify_failure(why.code, why.enhanced.str(), why.text, fs));
  }
  shard_.emit(rec);
}

void Scheduler::record_outcome(const SessionTxn& txn, size_t index, const Outcome& o,
                               std::string_view peer, std::string_view mx, std::string_view tls) {
  auto* ctx = reinterpret_cast<TxnCtx*>(txn.cookie);
  Job* job = ctx->job;
  uint32_t idx = ctx->idx[index];
  RcptEntry& r = job->rcpts[idx];
  ++r.attempts;
  EventType type = o.disposition == Disposition::kDelivered ? EventType::kDelivered
                   : o.disposition == Disposition::kBounced ? EventType::kBounced
                                                            : EventType::kDeferred;
  emit_for(QItem{job, idx}, type, *o.reply, o.stage, "", peer, mx, o.unknown, tls);
  --ctx->dest->in_flight;
  if (type != EventType::kDelivered && !ctx->automated && !ctx->dest->automation.empty()) {
    ctx->automated = true;  // the first refusal of a transaction speaks for it
    automate(*ctx->dest, *o.reply);
  }
  if (type == EventType::kDeferred) {
    r.status = RcptStatus::kDeferred;
    last_deferral_ = o.reply->summary();
    // A temporary refusal of one recipient or message defers just that
    // (greylisting is the common case). The destination backs off on
    // connection-level signals: a 421 or failed connections
    // (connection_closed), or a run of throttling replies within
    // shaping.backoff_window — counted once per transaction.
    if (!ctx->throttled && o.reply->code != 421 &&
        proto::is_throttling_reply(o.reply->code, o.reply->enhanced.str(), o.reply->text) &&
        !proto::is_greylisting_reply(o.reply->code, o.reply->text)) {
      ctx->throttled = true;
      throttle_signal(*ctx->dest, ctx->dest->sources[ctx->source], *o.reply, o.stage);
    }
  } else {
    if (type == EventType::kBounced) {
      shard_.bounced(*job->msg, job->address(r), *o.reply, mx, shard_.clock().wall_ms());
    } else {
      failpoint("delivered_before_journal");
    }
    finalize(job, idx);
  }
}

void Scheduler::txn_done(SessionTxn& txn) {
  auto* ctx = reinterpret_cast<TxnCtx*>(txn.cookie);
  Destination& d = *ctx->dest;
  SourceState& s = d.sources[ctx->source];
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
  if (delivered_any && !s.backing_off && ++s.successes >= kRecoverAfter) {
    s.successes = 0;
    if (s.conn_limit < d.shaping.max_connections) {
      ++s.conn_limit;
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
  arm_expiry(d, ctx->job);
  d.in_flight -= ctx->idx.size();
  ++d.ready_txns;
  --ctx->job->txns;
  delete ctx;
}

void Scheduler::finalize(Job* job, uint32_t idx) {
  job->rcpts[idx].status = RcptStatus::kFinal;
  if (Spool* sp = shard_.spool()) {
    sp->journal_final(job, {idx});
  }
  --unfinished_;
  shard_.recipient_final(job->address(job->rcpts[idx]).size());
  --job->unfinished;
  maybe_free(job);
}

void Scheduler::maybe_free(Job* job) {
  if (job->unfinished == 0 && job->txns == 0) {
    if (Spool* sp = shard_.spool()) {
      sp->retire_job(job);
    }
    delete job;
  }
}

Millis Scheduler::retry_delay(const Destination& d, uint16_t attempts) {
  const auto& s = d.shaping.retry_schedule;
  size_t i = attempts == 0 ? 0 : std::min<size_t>(attempts - 1, s.size() - 1);
  Millis base = s[i];
  uint32_t jitter = config_->retry.jitter_percent;
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
  g->last_attempt_wall_ms = shard_.clock().wall_ms();
  d.last_error = why;
  d.last_error_wall_ms = g->last_attempt_wall_ms;
  // Every item of a group shares a transaction, hence attempts and message.
  const RcptEntry& r0 = g->items.front().job->rcpts[g->items.front().idx];
  TimePoint now = shard_.clock().now();
  TimePoint due = now + retry_delay(d, r0.attempts);
  TimePoint expiry = g->items.front().job->msg->accepted_at() + d.shaping.max_age;
  if (due > expiry) {
    due = expiry;
  }
  d.retry_waiting += g->items.size();
  retry_groups_.insert(g);
  shard_.timers().schedule(&g->timer, due);
  // Journal the new attempt count and due time so a restart keeps both.
  const Job* job0 = g->items.front().job;
  int64_t due_wall =
      shard_.clock().wall_ms() + std::chrono::duration_cast<Millis>(due - now).count();
  auto retry_at = static_cast<uint32_t>(
      std::max<int64_t>(1, (due_wall - job0->msg->accepted_wall_ms() + 999) / 1000));
  std::vector<uint32_t> idx;
  Job* cur = nullptr;
  auto flush_journal = [&] {
    if (cur != nullptr && shard_.spool() != nullptr) {
      shard_.spool()->journal_deferred(cur, idx, r0.attempts, due_wall);
    }
    idx.clear();
  };
  for (const QItem& q : g->items) {
    q.job->rcpts[q.idx].retry_at_s = retry_at;
    if (q.job != cur) {
      flush_journal();
      cur = q.job;
    }
    idx.push_back(q.idx);
  }
  flush_journal();
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
    if (now >= q.job->msg->accepted_at() + d.shaping.max_age) {
      expire(d, q, g->last_reply, g->last_attempt_wall_ms);
    } else {
      live.push_back(q);
    }
  }
  if (!live.empty()) {
    for (const QItem& q : live) {
      q.job->rcpts[q.idx].status = RcptStatus::kQueued;
      d.ready.push_back(q);
      arm_expiry(d, q.job);
    }
    const uint32_t per = std::max<uint32_t>(1, d.shaping.max_rcpts_per_txn);
    d.ready_txns += (live.size() + per - 1) / per;
    dispatch(d);
  }
}

void Scheduler::expire(Destination& d, QItem q, std::string_view last_reply,
                       int64_t last_attempt_wall_ms) {
  std::string text = "5.4.7 delivery time expired after " +
                     std::to_string(d.shaping.max_age.count() / 1000) + "s in the queue";
  if (!last_reply.empty()) {
    text += "; last error: " + std::string(last_reply);
  }
  proto::Reply reply = proto::make_reply(554, text);
  emit_for(q, EventType::kBounced, reply, Stage::kLocal, "expired");
  shard_.bounced(*q.job->msg, q.job->address(q.job->rcpts[q.idx]), reply, "", last_attempt_wall_ms);
  finalize(q.job, q.idx);
}

void Scheduler::bounce_queue(Destination& d, const proto::Reply& why, Stage stage) {
  while (!d.ready.empty()) {
    QItem q = d.ready.front();
    d.ready.pop_front();
    ++q.job->rcpts[q.idx].attempts;
    emit_for(q, EventType::kBounced, why, stage, "");
    shard_.bounced(*q.job->msg, q.job->address(q.job->rcpts[q.idx]), why, "",
                   shard_.clock().wall_ms());
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

// ---------------------------------------------------------------------------
// Provider rules and automation ([provider_shaping], engine/provider_rules.h)

void Scheduler::apply_shaping(Destination& d) {
  const Shaping before = d.shaping;
  d.shaping = config_->shaping_for(d.domain, d.mx_names);
  for (const auto& e : d.effects) {
    if (e.rule->action == AutomationAction::kSetConfig) {
      e.rule->set.apply(d.shaping);
    }
  }
  const TimePoint now = shard_.clock().now();
  for (auto& s : d.sources) {
    if (d.shaping.max_connections < s.conn_limit || !s.backing_off) {
      s.conn_limit = d.shaping.max_connections;
    }
    if (d.shaping.msg_rate.per_second != before.msg_rate.per_second) {
      s.msgs.configure(d.shaping.msg_rate, now);
    }
    if (d.shaping.connect_rate.per_second != before.connect_rate.per_second) {
      s.connects.configure(d.shaping.connect_rate, now);
    }
  }
}

void Scheduler::shape_for_route(Destination& d) {
  const ProviderRules* rules = config_->provider_shaping.rules.get();
  if (rules == nullptr || !rules->has_providers() || !d.resolution ||
      d.resolution->kind != RouteResolution::Kind::kOk) {
    return;
  }
  std::vector<std::string> names;
  for (const Candidate& c : d.resolution->candidates) {
    std::string n = proto::normalize_domain(c.mx);
    if (std::find(names.begin(), names.end(), n) == names.end()) {
      names.push_back(std::move(n));
    }
  }
  if (names == d.mx_names) {
    return;
  }
  d.mx_names = std::move(names);
  ProviderRules::Match m = rules->match(d.domain, d.mx_names);
  if (m.provider != d.provider) {
    RM_LOG_INFO("provider rules: %s is served by provider \"%s\"", d.domain.c_str(),
                m.provider.c_str());
  }
  d.provider = m.provider;
  std::vector<Destination::RuleHits> hits;
  for (const AutomationRule* r : m.automation) {
    auto it = std::find_if(d.rule_hits.begin(), d.rule_hits.end(),
                           [r](const Destination::RuleHits& h) { return h.rule == r; });
    hits.push_back(it != d.rule_hits.end() ? std::move(*it) : Destination::RuleHits{r, {}});
  }
  d.automation = std::move(m.automation);
  d.rule_hits = std::move(hits);
  apply_shaping(d);
}

void Scheduler::automate(Destination& d, const proto::Reply& reply) {
  const std::string text = reply.summary();
  const TimePoint now = shard_.clock().now();
  for (auto& h : d.rule_hits) {
    if (!std::regex_search(text, h.rule->regex)) {
      continue;
    }
    while (!h.at.empty() && h.at.front() + h.rule->window <= now) {
      h.at.pop_front();
    }
    h.at.push_back(now);
    if (h.at.size() >= h.rule->threshold) {
      h.at.clear();
      fire(d, *h.rule, reply);
    }
  }
}

void Scheduler::fire(Destination& d, const AutomationRule& rule, const proto::Reply& reply) {
  const TimePoint now = shard_.clock().now();
  const TimePoint until = now + rule.duration;
  const int64_t until_wall = shard_.clock().wall_ms() + rule.duration.count();
  auto it = std::find_if(d.effects.begin(), d.effects.end(),
                         [&](const Destination::Effect& e) { return e.rule == &rule; });
  if (it != d.effects.end()) {
    it->until = until;  // fired again while active: it lasts from now
    it->until_wall_ms = until_wall;
    it->reply = reply;
  } else {
    d.effects.push_back(Destination::Effect{
        next_effect_id_++, &rule, config_->provider_shaping.rules, until, until_wall, reply});
  }
  std::string what = std::string(automation_action_name(rule.action));
  if (rule.action == AutomationAction::kSetConfig) {
    what += " " + rule.set.describe();
  }
  RM_LOG_WARN("automation: %s on %s: %s for %llds, after \"%s\"", rule.origin.c_str(),
              d.domain.c_str(), what.c_str(), static_cast<long long>(rule.duration.count() / 1000),
              reply.summary().c_str());
  switch (rule.action) {
    case AutomationAction::kSuspend:
      for (auto& s : d.sources) {
        s.suspend_until = std::max(s.suspend_until, until);
        s.backoff_until = std::max(s.backoff_until, until);
        s.backing_off = true;
        s.hold_txns = true;
        s.hold_connect = false;
        s.hold_reply = reply;
        s.hold_stage = Stage::kConnect;
        destination_event(d, s, EventType::kBackoff,
                          "automation " + rule.origin + ": Suspend: " + reply.summary());
        for (SmtpConnection* c : std::vector<SmtpConnection*>(s.idle)) {
          c->quit();
        }
      }
      arm_wake(d, until);
      break;
    case AutomationAction::kSetConfig:
      apply_shaping(d);
      break;
    case AutomationAction::kBounce:
      break;  // dispatch() and give_txn() bounce what is queued
  }
  TimePoint next = until;
  for (const auto& e : d.effects) {
    next = std::min(next, e.until);
  }
  shard_.timers().schedule(&d.effects_timer, next);
  dispatch(d);
}

const Destination::Effect* Scheduler::bouncing(const Destination& d) const {
  for (const auto& e : d.effects) {
    if (e.rule->action == AutomationAction::kBounce) {
      return &e;
    }
  }
  return nullptr;
}

void Scheduler::end_effect(Destination& d, size_t index) {
  Destination::Effect e = d.effects[index];
  d.effects.erase(d.effects.begin() + static_cast<std::ptrdiff_t>(index));
  RM_LOG_INFO("automation: %s on %s: %s ended", e.rule->origin.c_str(), d.domain.c_str(),
              std::string(automation_action_name(e.rule->action)).c_str());
  const TimePoint now = shard_.clock().now();
  if (e.rule->action == AutomationAction::kSuspend) {
    bool still = false;
    for (const auto& other : d.effects) {
      still = still || other.rule->action == AutomationAction::kSuspend;
    }
    if (!still) {
      for (auto& s : d.sources) {
        s.suspend_until = now;
        s.backoff_until = std::min(s.backoff_until, now);
      }
    }
  } else if (e.rule->action == AutomationAction::kSetConfig) {
    apply_shaping(d);
  }
}

void Scheduler::on_effects_timer(void* dest) {
  auto* d = static_cast<Destination*>(dest);
  static_cast<Scheduler*>(d->scheduler)->expire_effects(*d);
}

void Scheduler::expire_effects(Destination& d) {
  const TimePoint now = shard_.clock().now();
  for (size_t i = d.effects.size(); i-- > 0;) {
    if (d.effects[i].until <= now) {
      end_effect(d, i);
    }
  }
  if (!d.effects.empty()) {
    TimePoint next = d.effects.front().until;
    for (const auto& e : d.effects) {
      next = std::min(next, e.until);
    }
    shard_.timers().schedule(&d.effects_timer, next);
  }
  dispatch(d);
}

void Scheduler::list_rule_effects(const std::string& pattern, std::string* out) const {
  using proto::append_json_key;
  using proto::append_json_string;
  for (const auto& [key, d] : dests_) {
    if (!matches(pattern, d->domain)) {
      continue;
    }
    for (const auto& e : d->effects) {
      if (!out->empty()) {
        out->push_back(',');
      }
      out->push_back('{');
      append_json_key(*out, "id");
      append_json_string(*out, std::to_string(shard_.id()) + ":" + std::to_string(e.id));
      out->push_back(',');
      append_json_key(*out, "destination");
      append_json_string(*out, d->domain);
      out->push_back(',');
      append_json_key(*out, "pool");
      append_json_string(*out, config_->egress.pools[d->pool].name);
      out->push_back(',');
      append_json_key(*out, "provider");
      append_json_string(*out, d->provider);
      out->push_back(',');
      append_json_key(*out, "rule");
      append_json_string(*out, e.rule->origin);
      out->push_back(',');
      append_json_key(*out, "action");
      append_json_string(*out, automation_action_name(e.rule->action));
      out->push_back(',');
      append_json_key(*out, "set");
      append_json_string(*out, e.rule->set.describe());
      out->push_back(',');
      append_json_key(*out, "until");
      std::string ts;
      append_rfc3339_ms(ts, e.until_wall_ms);
      append_json_string(*out, ts);
      out->push_back(',');
      append_json_key(*out, "reply");
      append_json_string(*out, e.reply.summary());
      out->push_back('}');
    }
  }
}

size_t Scheduler::cancel_rule_effects(const std::string& what) {
  size_t n = 0;
  const std::string mine = std::to_string(shard_.id()) + ":";
  const bool by_id = what.find(':') != std::string::npos;
  for (auto& [key, d] : dests_) {
    bool touched = false;
    for (size_t i = d->effects.size(); i-- > 0;) {
      const bool hit =
          by_id ? what == mine + std::to_string(d->effects[i].id) : matches(what, d->domain);
      if (hit) {
        end_effect(*d, i);
        touched = true;
        ++n;
      }
    }
    if (touched) {
      if (d->effects.empty()) {
        d->effects_timer.cancel();
      }
      dispatch(*d);
    }
  }
  return n;
}

// ---------------------------------------------------------------------------
// Operator controls

size_t Scheduler::pause(const std::string& pattern, bool paused) {
  if (paused) {
    paused_patterns_.push_back(pattern);
  } else {
    std::erase_if(paused_patterns_, [&](const std::string& p) { return matches(pattern, p); });
  }
  size_t n = 0;
  for (auto& [key, d] : dests_) {
    if (!matches(pattern, d->domain)) {
      continue;
    }
    ++n;
    d->paused = paused;
    if (paused) {
      for (auto& s : d->sources) {
        for (SmtpConnection* c : std::vector<SmtpConnection*>(s.idle)) {
          c->quit();
        }
      }
    } else {
      dispatch(*d);
    }
  }
  return n;
}

size_t Scheduler::flush(const std::string& pattern) {
  std::vector<RetryGroup*> due;
  for (RetryGroup* g : retry_groups_) {
    if (matches(pattern, g->dest->domain)) {
      due.push_back(g);
    }
  }
  size_t n = 0;
  for (RetryGroup* g : due) {
    n += g->items.size();
    g->timer.cancel();
    retry_due(g);
  }
  for (auto& [key, d] : dests_) {
    if (matches(pattern, d->domain)) {
      for (auto& s : d->sources) {
        s.backoff_until = shard_.clock().now();
      }
      dispatch(*d);
    }
  }
  return n;
}

size_t Scheduler::drop_batch(const std::string& batch_id) {
  size_t n = 0;
  proto::Reply reply = proto::make_reply(554, "5.0.0 dropped by an operator");
  auto drop = [&](const QItem& q) {
    emit_for(q, EventType::kDropped, reply, Stage::kLocal, "dropped");
    finalize(q.job, q.idx);
    ++n;
  };
  for (auto& [key, d] : dests_) {
    std::deque<QItem> keep;
    for (const QItem& q : d->ready) {
      if (q.job->msg->batch_id() == batch_id) {
        drop(q);
      } else {
        keep.push_back(q);
      }
    }
    d->ready.swap(keep);
    d->ready_txns = std::min<uint64_t>(d->ready_txns, d->ready.size());
  }
  for (RetryGroup* g : std::vector<RetryGroup*>(retry_groups_.begin(), retry_groups_.end())) {
    std::vector<QItem> keep;
    for (const QItem& q : g->items) {
      if (q.job->msg->batch_id() == batch_id) {
        drop(q);
        --g->dest->retry_waiting;
      } else {
        keep.push_back(q);
      }
    }
    g->items.swap(keep);
    if (g->items.empty()) {
      retry_groups_.erase(g);
      delete g;
    }
  }
  return n;
}

void Scheduler::queue_depth(uint64_t* ready, uint64_t* retry_waiting, uint64_t* in_flight) const {
  for (const auto& [key, d] : dests_) {
    *ready += d->ready.size();
    *retry_waiting += d->retry_waiting;
    *in_flight += d->in_flight;
  }
}

namespace {

/// What waits in one destination, for the operator listing: the oldest
/// queued or deferred recipient and the earliest retry. Consecutive
/// entries of one job count once (they share its acceptance time).
struct WaitingSummary {
  std::optional<TimePoint> oldest;
  std::optional<int64_t> next_retry_wall_ms;

  void add_job(const Job* job) {
    TimePoint t = job->msg->accepted_at();
    if (!oldest || t < *oldest) {
      oldest = t;
    }
  }
  void add_ready(const std::deque<QItem>& ready) {
    const Job* last = nullptr;
    for (const QItem& q : ready) {
      if (q.job != last) {
        add_job(q.job);
        last = q.job;
      }
    }
  }
  void add_retry_group(const RetryGroup& g) {
    const Job* last = nullptr;
    for (const QItem& q : g.items) {
      if (q.job == last) {
        continue;
      }
      last = q.job;
      add_job(q.job);
      int64_t due = q.job->msg->accepted_wall_ms() +
                    static_cast<int64_t>(q.job->rcpts[q.idx].retry_at_s) * 1000;
      if (!next_retry_wall_ms || due < *next_retry_wall_ms) {
        next_retry_wall_ms = due;
      }
    }
  }
  /// `"oldest_ms":…,"next_retry_ms":…,"last_error":…,"last_error_age_ms":…,`
  /// (null where there is none).
  void append_json(std::string& out, const Destination& d, TimePoint now, int64_t now_wall) const {
    auto field = [&out](const char* key, std::optional<int64_t> ms) {
      proto::append_json_key(out, key);
      if (ms) {
        proto::append_json_uint(out, static_cast<uint64_t>(std::max<int64_t>(0, *ms)));
      } else {
        out.append("null");
      }
      out.push_back(',');
    };
    field("oldest_ms",
          oldest ? std::optional<int64_t>(std::chrono::duration_cast<Millis>(now - *oldest).count())
                 : std::nullopt);
    field("next_retry_ms", next_retry_wall_ms
                               ? std::optional<int64_t>(*next_retry_wall_ms - now_wall)
                               : std::nullopt);
    proto::append_json_key(out, "last_error");
    proto::append_json_string(out, d.last_error);
    out.push_back(',');
    field("last_error_age_ms", d.last_error_wall_ms > 0
                                   ? std::optional<int64_t>(now_wall - d.last_error_wall_ms)
                                   : std::nullopt);
  }
};

}  // namespace

void Scheduler::list(const std::string& pattern, std::string* out) const {
  using proto::append_json_key;
  using proto::append_json_string;
  using proto::append_json_uint;
  TimePoint now = shard_.clock().now();
  const int64_t now_wall = shard_.clock().wall_ms();
  std::unordered_map<const Destination*, WaitingSummary> waiting;
  for (const RetryGroup* g : retry_groups_) {
    if (matches(pattern, g->dest->domain)) {
      waiting[g->dest].add_retry_group(*g);
    }
  }
  for (const auto& [key, d] : dests_) {
    if (!matches(pattern, d->domain)) {
      continue;
    }
    WaitingSummary& w = waiting[d.get()];
    w.add_ready(d->ready);
    if (!out->empty()) {
      out->push_back(',');
    }
    out->push_back('{');
    append_json_key(*out, "domain");
    append_json_string(*out, d->domain);
    out->append(",");
    append_json_key(*out, "pool");
    append_json_string(*out, config_->egress.pools[d->pool].name);
    out->append(",");
    append_json_key(*out, "shard");
    append_json_uint(*out, shard_.id());
    out->append(",");
    append_json_key(*out, "queued");
    append_json_uint(*out, d->ready.size());
    out->append(",");
    append_json_key(*out, "in_flight");
    append_json_uint(*out, d->in_flight);
    out->append(",");
    append_json_key(*out, "deferred");
    append_json_uint(*out, d->retry_waiting);
    out->append(",");
    append_json_key(*out, "connections");
    append_json_uint(*out, d->connections());
    out->append(",");
    append_json_key(*out, "paused");
    out->append(d->paused ? "true" : "false");
    out->append(",");
    w.append_json(*out, *d, now, now_wall);
    append_json_key(*out, "sources");
    out->push_back('[');
    for (size_t i = 0; i < d->sources.size(); ++i) {
      const SourceState& s = d->sources[i];
      if (i > 0) {
        out->push_back(',');
      }
      out->push_back('{');
      append_json_key(*out, "source");
      append_json_string(*out, config_->egress.sources[s.source].name);
      out->append(",");
      append_json_key(*out, "connections");
      append_json_uint(*out, s.connections);
      out->append(",");
      append_json_key(*out, "max_connections");
      append_json_uint(*out, s.conn_limit);
      out->append(",");
      append_json_key(*out, "backoff_ms");
      append_json_uint(*out,
                       s.backing_off && s.backoff_until > now
                           ? static_cast<uint64_t>(
                                 std::chrono::duration_cast<Millis>(s.backoff_until - now).count())
                           : 0);
      out->append(",");
      append_json_key(*out, "hold");
      out->append(s.backing_off && s.hold_txns ? "true" : "false");
      out->push_back('}');
    }
    out->append("]}");
  }
}

void Scheduler::begin_shutdown() {
  shutting_down_ = true;
  for (auto& [name, d] : dests_) {
    for (auto& s : d->sources) {
      for (SmtpConnection* c : std::vector<SmtpConnection*>(s.idle)) {
        c->quit();
      }
    }
  }
}

void Scheduler::abort_all() {
  shutting_down_ = true;
  aborting_ = true;
  for (auto& [name, d] : dests_) {
    d->wake.cancel();
    d->expiry.cancel();
    d->effects_timer.cancel();
    for (SmtpConnection* c : std::vector<SmtpConnection*>(d->all)) {
      c->abort("ringmail is shutting down");
    }
  }
}

}  // namespace ringmail::engine
