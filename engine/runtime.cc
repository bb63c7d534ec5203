#include "engine/runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>
#include <unordered_set>

#include "engine/log.h"
#include "engine/submission.h"
#include "proto/address.h"
#include "proto/json.h"

namespace ringmail::engine {
namespace {

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Result<int> open_listen_socket(const std::string& path, uint32_t mode) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(Errc::kConfig, "ingest.socket: path longer than " +
                                         std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return make_error(Errc::kIo, std::string("socket(AF_UNIX): ") + std::strerror(errno));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ::close(fd);
      return make_error(Errc::kConfig, "ingest.socket: " + path + " exists and is not a socket");
    }
    // Live only if something answers HELLO: after a crash the kernel tears
    // the dead process's io_uring down asynchronously, and its pending
    // accept keeps the old socket connectable for a moment.
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = false;
    if (probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      std::string payload, frame;
      proto::encode_hello(payload, proto::Hello{});
      proto::append_frame(frame, proto::FrameType::kHello, payload);
      if (::send(probe, frame.data(), frame.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(frame.size())) {
        pollfd p{probe, POLLIN, 0};
        char b;
        live = ::poll(&p, 1, 1000) == 1 && ::recv(probe, &b, 1, MSG_DONTWAIT) == 1;
      }
    }
    if (probe >= 0) {
      ::close(probe);
    }
    if (live) {
      ::close(fd);
      return make_error(Errc::kBusy, "ingest.socket: another process is listening on " + path);
    }
    ::unlink(path.c_str());  // stale socket of a previous run
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    return make_error(Errc::kIo, "ingest.socket: bind " + path + ": " + std::strerror(e));
  }
  if (::chmod(path.c_str(), mode) != 0 || ::listen(fd, 256) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return make_error(Errc::kIo, "ingest.socket: " + path + ": " + std::strerror(e));
  }
  return fd;
}

}  // namespace

Runtime::Runtime(Config config, const Clock* clock)
    : config_(std::move(config)), clock_(clock != nullptr ? clock : &SystemClock::instance()) {}

Result<std::unique_ptr<Runtime>> Runtime::start(Config config, const Clock* clock) {
  std::unique_ptr<Runtime> rt(new Runtime(std::move(config), clock));
  Config& c = rt->config_;
  uint32_t n = c.engine.shards;
  if (n == 0) {
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus > 0 ? static_cast<uint32_t>(cpus) : 1;
  }
  // A batch id prefix unique to this start: ids stay unique across restarts.
  char prefix[32];
  std::snprintf(prefix, sizeof prefix, "b%llx-",
                static_cast<unsigned long long>(SystemClock::instance().wall_ms()));
  rt->batch_prefix_ = prefix;

  if (!c.events.file.empty()) {
    rt->event_fd_ = ::open(c.events.file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (rt->event_fd_ < 0) {
      return make_error(Errc::kIo,
                        "events.file: cannot open " + c.events.file + ": " + std::strerror(errno));
    }
  }
  if (!c.ingest.socket.empty()) {
    auto fd = open_listen_socket(c.ingest.socket, c.ingest.socket_mode);
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->listen_fd_ = *fd;
  }
  for (const SubmissionListener& l : c.submission.listeners) {
    auto fd = open_submission_socket(l);  // engine/submission.h; served by shard 0
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->submission_fds_.push_back(*fd);
  }
  for (uint32_t i = 0; i < n * n; ++i) {
    rt->rings_.push_back(std::make_unique<ShardRing>());
  }
  for (uint32_t i = 0; i < n; ++i) {
    rt->external_.push_back(std::make_unique<MpscQueue>());
    rt->shards_.push_back(std::make_unique<Shard>(*rt, i, n));
  }
  for (uint32_t i = 0; i < n; ++i) {
    Shard* s = rt->shards_[i].get();
    rt->threads_.emplace_back([s] { s->run(); });
  }
  std::unique_lock lock(rt->mu_);
  rt->cv_.wait(lock, [&] { return rt->started_ == n; });
  if (!rt->start_errors_.empty()) {
    Error e = rt->start_errors_.front();
    lock.unlock();
    rt->shutdown(Millis(0));
    return e;
  }
  return rt;
}

Runtime::~Runtime() {
  shutdown(Millis(0));
  if (event_fd_ >= 0) {
    ::close(event_fd_);
  }
}

void Runtime::shard_started(uint32_t /*id*/, Result<void> result) {
  std::lock_guard lock(mu_);
  if (!result.ok()) {
    start_errors_.push_back(result.error());
  }
  ++started_;
  cv_.notify_all();
}

uint32_t Runtime::shard_for_domain(std::string_view lower_domain) const {
  return static_cast<uint32_t>(fnv1a(lower_domain) % shards_.size());
}

void Runtime::post_external(uint32_t dst, std::function<void(Shard&)> fn) {
  auto* t = new ExternalTask();
  t->fn = std::move(fn);
  external_[dst]->push(t);
  shards_[dst]->wake();
}

std::string Runtime::next_batch_id() {
  return batch_prefix_ + std::to_string(batch_seq_.fetch_add(1, std::memory_order_relaxed) + 1);
}

proto::Ack Runtime::build_jobs(const BatchInput& in, std::vector<Job*>* out_jobs) {
  proto::Ack ack;
  ack.batch_id = in.batch_id.empty() ? next_batch_id() : std::string(in.batch_id);
  auto reject = [&](std::string reason) {
    ack.status = proto::AckStatus::kRejected;
    ack.reason = std::move(reason);
    return ack;
  };
  if (!accepting()) {
    ack.status = proto::AckStatus::kTryLater;
    ack.reason = "ringmail is shutting down";
    return ack;
  }
  if (in.message.size() > config_.ingest.max_message_bytes) {
    return reject("message is " + std::to_string(in.message.size()) + " bytes, over the limit of " +
                  std::to_string(config_.ingest.max_message_bytes));
  }
  if (in.recipients.empty()) {
    return reject("batch has no recipients");
  }
  if (in.recipients.size() > config_.ingest.max_recipients) {
    return reject("batch has " + std::to_string(in.recipients.size()) +
                  " recipients, over the limit of " +
                  std::to_string(config_.ingest.max_recipients));
  }
  bool sender_utf8 = false;
  std::string sender_domain;
  if (!in.sender.empty()) {
    auto s = proto::parse_mailbox(in.sender);
    if (!s.ok()) {
      return reject("invalid sender: " + s.error().message);
    }
    sender_utf8 = s->utf8;
    sender_domain = proto::normalize_domain(s->domain);
  }
  std::string_view pool_name;
  for (std::string_view opt : in.options) {
    if (opt.starts_with("pool=")) {
      pool_name = opt.substr(5);
    } else {
      return reject("unknown batch option \"" + std::string(opt) + "\"");
    }
  }
  auto pool = config_.egress.pool_for(pool_name, sender_domain);
  if (!pool) {
    return reject("unknown pool \"" + std::string(pool_name) + "\"");
  }
  // Pass 1: validate, normalise the domain, pick the shard, size arenas.
  const uint32_t n = shard_count();
  struct Parsed {
    std::string addr;  // local@lower-domain
    uint32_t shard;
    uint16_t domain_off;
  };
  std::vector<Parsed> parsed;
  parsed.reserve(in.recipients.size());
  std::vector<size_t> arena_bytes(n, 0), counts(n, 0);
  std::unordered_set<std::string_view> seen;
  seen.reserve(in.recipients.size());
  for (uint32_t i = 0; i < in.recipients.size(); ++i) {
    auto mb = proto::parse_mailbox(in.recipients[i]);
    if (!mb.ok()) {
      ack.rejections.push_back({i, proto::RejectReason::kInvalidAddress, mb.error().message});
      continue;
    }
    if (mb->domain_literal) {
      ack.rejections.push_back(
          {i, proto::RejectReason::kPolicy, "address literals are not routable by ringmail"});
      continue;
    }
    Parsed p;
    std::string dom = proto::normalize_domain(mb->domain);
    p.addr.reserve(mb->local.size() + 1 + dom.size());
    // The local part is kept exactly as written (quoted form included).
    std::string_view raw = in.recipients[i];
    p.addr.append(raw.substr(0, raw.rfind('@')));
    p.addr.push_back('@');
    p.domain_off = static_cast<uint16_t>(p.addr.size());
    p.addr.append(dom);
    p.shard = shard_for_domain(dom);
    parsed.push_back(std::move(p));
  }
  // Duplicates: the same (local part, domain) twice in one batch would be
  // delivered twice; the later ones are refused.
  std::vector<uint8_t> keep(parsed.size(), 1);
  {
    size_t pi = 0;
    size_t rej = 0;
    for (uint32_t i = 0; i < in.recipients.size(); ++i) {
      if (rej < ack.rejections.size() && ack.rejections[rej].index == i) {
        ++rej;
        continue;
      }
      Parsed& p = parsed[pi];
      if (!seen.insert(p.addr).second) {
        keep[pi] = 0;
        ack.rejections.push_back({i, proto::RejectReason::kDuplicate,
                                  "duplicate of an earlier recipient in this batch"});
      } else {
        arena_bytes[p.shard] += p.addr.size();
        ++counts[p.shard];
      }
      ++pi;
    }
  }
  std::sort(ack.rejections.begin(), ack.rejections.end(),
            [](const proto::Rejection& a, const proto::Rejection& b) { return a.index < b.index; });
  uint64_t accepted = 0;
  for (uint32_t s = 0; s < n; ++s) {
    accepted += counts[s];
  }
  if (accepted == 0) {
    ack.status = proto::AckStatus::kRejected;
    ack.reason = "no valid recipient";
    return ack;
  }
  // Back-pressure: the memory budget is checked before anything is taken,
  // so a refused batch costs nothing and an accepted one is never dropped.
  uint64_t rcpt_bytes = accepted * kRecipientOverhead;
  for (uint32_t s = 0; s < n; ++s) {
    rcpt_bytes += arena_bytes[s];
  }
  uint64_t need = rcpt_bytes + in.message.size() + in.message.size() / 32 + 256;
  const LimitsConfig& lim = config_.limits;
  if (unfinished() + accepted > lim.max_queued_recipients ||
      queued_bytes() + need > lim.max_queued_bytes) {
    proto::Ack busy;
    busy.batch_id = ack.batch_id;
    busy.status = proto::AckStatus::kTryLater;
    busy.reason = "queue is full (" + std::to_string(unfinished()) + " recipients, " +
                  std::to_string(queued_bytes() >> 20) +
                  " MiB queued; limits.max_queued_*): " + "try later";
    return busy;
  }
  MessageInit mi;
  mi.batch_id = ack.batch_id;
  mi.sender = std::string(in.sender);
  mi.sender_utf8 = sender_utf8;
  mi.raw = in.message;
  mi.origin = in.origin;
  mi.auth_user = std::string(in.auth_user);
  mi.accepted_wall_ms = clock_->wall_ms();
  mi.accepted_at = clock_->now();
  mi.pool = *pool;
  mi.budget = &queued_bytes_;
  MessageRef msg = Message::create(std::move(mi));
  // Pass 2: build one job per shard that has recipients.
  std::vector<Job*> jobs(n, nullptr);
  for (size_t i = 0; i < parsed.size(); ++i) {
    if (!keep[i]) {
      continue;
    }
    Parsed& p = parsed[i];
    Job*& j = jobs[p.shard];
    if (j == nullptr) {
      j = new Job();
      j->msg = msg;
      j->addrs.reserve(arena_bytes[p.shard]);
      j->rcpts.reserve(counts[p.shard]);
    }
    j->add(p.addr, p.domain_off);
  }
  unfinished_.fetch_add(accepted, std::memory_order_acq_rel);
  queued_bytes_.fetch_add(rcpt_bytes, std::memory_order_relaxed);
  for (uint32_t s = 0; s < n; ++s) {
    if (jobs[s] != nullptr) {
      jobs[s]->unfinished = static_cast<uint32_t>(jobs[s]->rcpts.size());
    }
  }
  *out_jobs = std::move(jobs);
  ack.status = proto::AckStatus::kAccepted;
  ack.accepted = static_cast<uint32_t>(accepted);
  return ack;
}

namespace {

void accept_job_msg(Shard& shard, void* p, uint64_t /*a*/);

/// One batch waiting for every shard that holds a part of it to make that
/// part durable. Parts are held, not delivered, until all are: a batch is
/// either acknowledged whole, or refused whole.
struct AckCollector {
  Runtime* rt;
  proto::Ack ack;
  Runtime::AckFn done;
  int origin;  // shard to answer on, or -1
  std::vector<std::pair<uint32_t, Job*>> parts;
  std::atomic<uint32_t> pending{0};
  std::atomic<bool> failed{false};
};

void release_msg(Shard& shard, void* p, uint64_t /*a*/) {
  shard.scheduler().accept(static_cast<Job*>(p));
}

void abandon_msg(Shard& shard, void* p, uint64_t /*a*/) {
  auto* job = static_cast<Job*>(p);
  uint64_t bytes = job->addrs.size();
  uint64_t n = job->rcpts.size();
  if (shard.spool() != nullptr) {
    shard.spool()->retire_job(job);
  }
  delete job;
  shard.runtime().abandon(n, bytes);
}

void ack_msg(Shard& /*shard*/, void* p, uint64_t /*a*/) {
  std::unique_ptr<AckCollector> c(static_cast<AckCollector*>(p));
  c->done(std::move(c->ack));
}

void part_done(Shard& shard, AckCollector* c, bool ok) {
  if (!ok) {
    c->failed.store(true, std::memory_order_release);
  }
  if (c->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    return;
  }
  bool failed = c->failed.load(std::memory_order_acquire);
  for (auto& [dst, job] : c->parts) {
    shard.post(dst, ShardMsg{failed ? &abandon_msg : &release_msg, job, 0});
  }
  if (failed) {
    std::string id = c->ack.batch_id;
    c->ack = proto::Ack{};
    c->ack.batch_id = id;
    c->ack.status = proto::AckStatus::kSpoolUnavailable;
    c->ack.reason =
        "the spool cannot make this batch durable right now (disk error); nothing was "
        "accepted: send it again later";
  }
  if (c->origin >= 0) {
    shard.post(static_cast<uint32_t>(c->origin), ShardMsg{&ack_msg, c, 0});
  } else {
    ack_msg(shard, c, 0);
  }
}

void spool_job_msg(Shard& shard, void* p, uint64_t job_ptr) {
  auto* c = static_cast<AckCollector*>(p);
  auto* job = reinterpret_cast<Job*>(job_ptr);
  Shard* sh = &shard;
  shard.spool()->append_job(job, [sh, c](bool ok) { part_done(*sh, c, ok); });
}

void accept_job_msg(Shard& shard, void* p, uint64_t /*a*/) {
  shard.scheduler().accept(static_cast<Job*>(p));
}

}  // namespace

void Runtime::submit_batch(const BatchInput& in, int from_shard, AckFn done) {
  std::vector<Job*> jobs;
  proto::Ack ack = build_jobs(in, &jobs);
  if (ack.status != proto::AckStatus::kAccepted) {
    done(std::move(ack));
    return;
  }
  auto post = [&](uint32_t dst, ShardMsg m) {
    if (from_shard >= 0) {
      shards_[static_cast<uint32_t>(from_shard)]->post(dst, m);
    } else {
      post_external(dst, [m](Shard& s) { m.fn(s, m.p, m.a); });
    }
  };
  if (config_.spool.mode == SpoolMode::kOff) {
    for (uint32_t s = 0; s < jobs.size(); ++s) {
      if (jobs[s] != nullptr) {
        post(s, ShardMsg{&accept_job_msg, jobs[s], 0});
      }
    }
    done(std::move(ack));
    return;
  }
  auto* c = new AckCollector();
  c->rt = this;
  c->ack = std::move(ack);
  c->done = std::move(done);
  c->origin = from_shard;
  for (uint32_t s = 0; s < jobs.size(); ++s) {
    if (jobs[s] != nullptr) {
      c->parts.emplace_back(s, jobs[s]);
    }
  }
  c->pending.store(static_cast<uint32_t>(c->parts.size()), std::memory_order_release);
  for (auto& [dst, job] : std::vector<std::pair<uint32_t, Job*>>(c->parts)) {
    post(dst, ShardMsg{&spool_job_msg, c, reinterpret_cast<uint64_t>(job)});
  }
}

proto::Ack Runtime::accept_batch(const BatchInput& in, int from_shard) {
  RM_ASSERT(config_.spool.mode == SpoolMode::kOff || from_shard < 0);
  std::promise<proto::Ack> p;
  auto f = p.get_future();
  submit_batch(in, from_shard, [&p](proto::Ack a) { p.set_value(std::move(a)); });
  return f.get();
}

void Runtime::add_recovered(uint64_t recipients, uint64_t addr_bytes) {
  unfinished_.fetch_add(recipients, std::memory_order_acq_rel);
  queued_bytes_.fetch_add(recipients * kRecipientOverhead + addr_bytes, std::memory_order_relaxed);
}

void Runtime::abandon(uint64_t recipients, uint64_t addr_bytes) {
  queued_bytes_.fetch_sub(recipients * kRecipientOverhead + addr_bytes, std::memory_order_relaxed);
  if (unfinished_.fetch_sub(recipients, std::memory_order_acq_rel) == recipients) {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
}

void Runtime::recipient_final(size_t addr_bytes) {
  queued_bytes_.fetch_sub(kRecipientOverhead + addr_bytes, std::memory_order_relaxed);
  if (unfinished_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
}

bool Runtime::wait_idle(Millis timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return unfinished() == 0; });
}

// ---------------------------------------------------------------------------
// Operator commands: parsed by the caller, run on every shard, answered on
// shard 0 once all shards replied. The call object is shared; each shard
// writes only its own slot, and shard 0 reads them after the last reply
// arrived through its ring.

namespace {

struct ControlCall {
  std::function<void(std::string)> done;
  std::string cmd;
  std::string arg;
  std::vector<std::string> parts;  // per shard: JSON fragments
  std::vector<uint64_t> counts;    // per shard
  uint32_t pending;
};

void control_reply_msg(Shard& shard, void* p, uint64_t /*from*/) {
  auto* call = static_cast<ControlCall*>(p);
  if (--call->pending > 0) {
    return;
  }
  std::unique_ptr<ControlCall> owned(call);
  (void)shard;
  std::string out = "{\"ok\":true,\"command\":";
  proto::append_json_string(out, call->cmd);
  if (call->cmd == "list") {
    out += ",\"destinations\":[";
    bool first = true;
    for (const auto& part : call->parts) {
      if (part.empty()) {
        continue;
      }
      out += first ? "" : ",";
      out += part;
      first = false;
    }
    out += "]";
  } else {
    uint64_t total = 0;
    for (uint64_t c : call->counts) {
      total += c;
    }
    out +=
        call->cmd == "pause" || call->cmd == "resume" ? ",\"destinations\":" : ",\"recipients\":";
    proto::append_json_uint(out, total);
  }
  out += "}";
  call->done(std::move(out));
}

void control_run(Shard& shard, ControlCall* call) {
  Scheduler& sched = shard.scheduler();
  uint32_t me = shard.id();
  if (call->cmd == "list") {
    sched.list(call->arg.empty() ? "*" : call->arg, &call->parts[me]);
  } else if (call->cmd == "pause") {
    call->counts[me] = sched.pause(call->arg, true);
  } else if (call->cmd == "resume") {
    call->counts[me] = sched.pause(call->arg, false);
  } else if (call->cmd == "flush") {
    call->counts[me] = sched.flush(call->arg);
  } else if (call->cmd == "drop-batch") {
    call->counts[me] = sched.drop_batch(call->arg);
  }
  shard.post(0, ShardMsg{&control_reply_msg, call, me});
}

void control_run_msg(Shard& shard, void* p, uint64_t /*a*/) {
  control_run(shard, static_cast<ControlCall*>(p));
}

std::string control_error(const std::string& why) {
  std::string out = "{\"ok\":false,\"error\":";
  proto::append_json_string(out, why);
  out += "}";
  return out;
}

}  // namespace

void Runtime::control(std::string_view line, int from_shard,
                      std::function<void(std::string)> done) {
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  size_t sp = text.find(' ');
  std::string cmd = text.substr(0, sp);
  std::string arg = sp == std::string::npos ? "" : text.substr(sp + 1);
  if (cmd == "stats") {
    Totals t = totals();
    std::string out = "{\"ok\":true,\"command\":\"stats\"";
    auto field = [&out](const char* k, uint64_t v) {
      out += ",\"";
      out += k;
      out += "\":";
      proto::append_json_uint(out, v);
    };
    field("delivered", t.delivered);
    field("deferred", t.deferred);
    field("bounced", t.bounced);
    field("dropped", t.dropped);
    field("unfinished", t.unfinished);
    field("queued_bytes", t.queued_bytes);
    field("connections_opened", t.connections_opened);
    field("transactions", t.transactions);
    field("unknown_outcomes", t.unknown_outcomes);
    out += "}";
    done(std::move(out));
    return;
  }
  bool needs_arg = cmd == "pause" || cmd == "resume" || cmd == "flush" || cmd == "drop-batch";
  if (cmd != "list" && !needs_arg) {
    done(control_error("unknown command \"" + cmd +
                       "\" (list, pause, resume, flush, drop-batch, stats)"));
    return;
  }
  if (needs_arg && arg.empty()) {
    done(control_error(cmd + " needs an argument"));
    return;
  }
  if (cmd != "drop-batch") {
    arg = proto::normalize_domain(arg);
  }
  auto* call = new ControlCall();
  call->done = std::move(done);
  call->cmd = cmd;
  call->arg = arg;
  uint32_t n = shard_count();
  call->parts.resize(n);
  call->counts.assign(n, 0);
  call->pending = n;
  for (uint32_t i = 0; i < n; ++i) {
    if (from_shard >= 0) {
      shards_[static_cast<uint32_t>(from_shard)]->post(i, ShardMsg{&control_run_msg, call, 0});
    } else {
      post_external(i, [call](Shard& s) { control_run(s, call); });
    }
  }
}

uint64_t Runtime::subscribe(EventCallback cb) {
  uint64_t id = subscriber_seq_.fetch_add(1) + 1;
  for (uint32_t i = 0; i < shard_count(); ++i) {
    post_external(i, [id, cb](Shard& s) { s.add_subscriber(id, cb); });
  }
  return id;
}

void Runtime::unsubscribe(uint64_t id) {
  for (uint32_t i = 0; i < shard_count(); ++i) {
    post_external(i, [id](Shard& s) { s.remove_subscriber(id); });
  }
}

void Runtime::wake_all() {
  for (auto& s : shards_) {
    s->wake();
  }
}

Runtime::Totals Runtime::totals() const {
  Totals t;
  for (const auto& s : shards_) {
    ShardStats& st = s->stats_;
    t.delivered += st.delivered.load(std::memory_order_relaxed);
    t.deferred += st.deferred.load(std::memory_order_relaxed);
    t.bounced += st.bounced.load(std::memory_order_relaxed);
    t.connections_opened += st.connections_opened.load(std::memory_order_relaxed);
    t.transactions += st.transactions.load(std::memory_order_relaxed);
    t.unknown_outcomes += st.unknown_outcomes.load(std::memory_order_relaxed);
    t.dropped += st.dropped.load(std::memory_order_relaxed);
    t.spool_damage += st.spool_damage.load(std::memory_order_relaxed);
    t.spool_segments += st.spool_segments.load(std::memory_order_relaxed);
    t.spool_errors += st.spool_errors.load(std::memory_order_relaxed);
  }
  t.unfinished = unfinished();
  t.queued_bytes = queued_bytes();
  return t;
}

void Runtime::shutdown(Millis grace) {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  accepting_.store(false, std::memory_order_release);
  if (!threads_.empty() && grace.count() > 0 && unfinished() > 0) {
    if (!wait_idle(grace)) {
      RM_LOG_WARN(
          "shutdown: %llu recipients still queued after %lldms; in-flight ones are "
          "deferred and, with the spool off, the rest are not kept",
          static_cast<unsigned long long>(unfinished()), static_cast<long long>(grace.count()));
    }
  }
  for (auto& s : shards_) {
    s->request_stop();
  }
  for (auto& t : threads_) {
    t.join();
  }
  threads_.clear();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(config_.ingest.socket.c_str());
  }
  for (int fd : submission_fds_) {
    ::close(fd);
  }
  submission_fds_.clear();
}

}  // namespace ringmail::engine
