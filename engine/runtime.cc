#include "engine/runtime.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>
#include <random>
#include <unordered_set>

#include "engine/http_server.h"
#include "engine/log.h"
#include "engine/submission.h"
#include "proto/address.h"
#include "proto/bulk_headers.h"
#include "proto/json.h"
#include "proto/message_body.h"
#include "proto/smtp_reply.h"
#include "proto/template.h"
#include "proto/text_util.h"

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

Result<int> open_listen_socket(const std::string& key, const std::string& path, uint32_t mode) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error(Errc::kConfig, key + ": path longer than " +
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
      return make_error(Errc::kConfig, key + ": " + path + " exists and is not a socket");
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
      return make_error(Errc::kBusy, key + ": another process is listening on " + path);
    }
    ::unlink(path.c_str());  // stale socket of a previous run
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    return make_error(Errc::kIo, key + ": bind " + path + ": " + std::strerror(e));
  }
  if (::chmod(path.c_str(), mode) != 0 || ::listen(fd, 256) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return make_error(Errc::kIo, key + ": " + path + ": " + std::strerror(e));
  }
  return fd;
}

/// Switches the process to engine.user (and engine.group, or the user's
/// primary group) for good: supplementary groups first, then the group,
/// then the user; then checks that the old identity cannot be regained.
/// The Unix socket files are handed to the new owner first, so their mode
/// applies to its group and the engine can remove them at shutdown.
Result<void> drop_privileges(const EngineConfig& e, const std::vector<std::string>& sockets) {
  const passwd* pw = ::getpwnam(e.user.c_str());
  if (pw == nullptr) {
    return make_error(Errc::kConfig, "engine.user: no such user: " + e.user);
  }
  const uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  if (!e.group.empty()) {
    const group* gr = ::getgrnam(e.group.c_str());
    if (gr == nullptr) {
      return make_error(Errc::kConfig, "engine.group: no such group: " + e.group);
    }
    gid = gr->gr_gid;
  }
  if (::geteuid() == uid && ::getegid() == gid) {
    return ok_result();  // already that user
  }
  if (::geteuid() != 0) {
    return make_error(Errc::kConfig, "engine.user: switching to " + e.user +
                                         " needs root; ringmail runs as uid " +
                                         std::to_string(::geteuid()));
  }
  for (const std::string& path : sockets) {
    if (!path.empty() && ::chown(path.c_str(), uid, gid) != 0) {
      return make_error(Errc::kIo, "engine.user: cannot hand " + path + " to " + e.user + ": " +
                                       std::strerror(errno));
    }
  }
  if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
    return make_error(Errc::kIo,
                      "engine.user: cannot switch to " + e.user + ": " + std::strerror(errno));
  }
  if (::setuid(0) == 0 || ::geteuid() != uid || ::getegid() != gid) {
    return make_error(Errc::kIo,
                      "engine.user: root privileges could be regained after "
                      "switching to " +
                          e.user + "; refusing to run");
  }
  RM_LOG_INFO("running as %s (uid %u, gid %u)", e.user.c_str(), static_cast<unsigned>(uid),
              static_cast<unsigned>(gid));
  return ok_result();
}

/// The batch options of docs/protocol.md (BATCH, 0x0014).
struct BatchOptions {
  std::string_view pool;
  std::string_view dkim_domain;
  std::string_view list_unsubscribe;         // https://…
  std::string_view list_unsubscribe_mailto;  // mailto:…
  std::string_view feedback_id;
  bool personalise = false;
  bool bulk() const {
    return !list_unsubscribe.empty() || !list_unsubscribe_mailto.empty() || !feedback_id.empty();
  }
};

Result<bool> parse_bool_option(std::string_view name, std::string_view v) {
  if (v == "true" || v == "1" || v == "yes") {
    return true;
  }
  if (v == "false" || v == "0" || v == "no") {
    return false;
  }
  return make_error(Errc::kInvalidArgument,
                    "batch option " + std::string(name) + " must be true or false");
}

Result<void> parse_batch_options(const std::vector<std::string_view>& in, BatchOptions* o) {
  bool post = false;
  std::vector<std::string_view> seen;
  for (std::string_view opt : in) {
    size_t eq = opt.find('=');
    if (eq == std::string_view::npos) {
      return make_error(Errc::kInvalidArgument,
                        "batch option \"" + std::string(opt) + "\" is not name=value");
    }
    std::string_view name = opt.substr(0, eq);
    std::string_view value = opt.substr(eq + 1);
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return make_error(Errc::kInvalidArgument,
                        "batch option " + std::string(name) + " is given twice");
    }
    seen.push_back(name);
    if (name == "pool") {
      o->pool = value;
    } else if (name == "dkim_domain") {
      if (value.empty()) {
        return make_error(Errc::kInvalidArgument, "batch option dkim_domain is empty");
      }
      o->dkim_domain = value;
    } else if (name == "list_unsubscribe") {
      RM_TRY(proto::validate_unsubscribe_https(value));
      o->list_unsubscribe = value;
    } else if (name == "list_unsubscribe_mailto") {
      RM_TRY(proto::validate_unsubscribe_mailto(value));
      o->list_unsubscribe_mailto = value;
    } else if (name == "list_unsubscribe_post") {
      auto b = parse_bool_option(name, value);
      RM_TRY(b);
      if (!*b) {
        return make_error(Errc::kInvalidArgument,
                          "list_unsubscribe_post=false: an https list_unsubscribe always "
                          "comes with List-Unsubscribe-Post (RFC 8058 one-click)");
      }
      post = true;
    } else if (name == "feedback_id") {
      RM_TRY(proto::validate_feedback_id(value));
      o->feedback_id = value;
    } else if (name == "personalise") {
      auto b = parse_bool_option(name, value);
      RM_TRY(b);
      o->personalise = *b;
    } else {
      return make_error(Errc::kInvalidArgument,
                        "unknown batch option \"" + std::string(opt) +
                            "\" (pool, dkim_domain, list_unsubscribe, "
                            "list_unsubscribe_mailto, list_unsubscribe_post, "
                            "feedback_id, personalise)");
    }
  }
  if (post && o->list_unsubscribe.empty()) {
    return make_error(Errc::kInvalidArgument,
                      "list_unsubscribe_post=true needs an https list_unsubscribe");
  }
  return ok_result();
}

/// The message as a template whose only placeholders are none: every
/// "{{" becomes the escape "{{{{" (proto/template.h).
std::string escape_template(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 16);
  size_t pos = 0;
  for (;;) {
    size_t p = text.find("{{", pos);
    if (p == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, p - pos));
    out.append("{{{{");
    pos = p + 2;
  }
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

  if (!c.ingest.socket.empty()) {
    auto fd = open_listen_socket("ingest.socket", c.ingest.socket, c.ingest.socket_mode);
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->listen_fd_ = *fd;
  }
  if (!c.control.socket.empty()) {
    auto fd = open_listen_socket("control.socket", c.control.socket, c.control.socket_mode);
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->control_fd_ = *fd;
  }
  for (const SubmissionListener& l : c.submission.listeners) {
    auto fd = open_submission_socket(l);  // engine/submission.h; served by shard 0
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->submission_fds_.push_back(*fd);
  }
  if (!c.http.listen.empty()) {
    auto fd = open_http_socket(c.http);  // engine/http_server.h; served by shard 0
    if (!fd.ok()) {
      return std::move(fd).take_error();
    }
    rt->http_fd_ = *fd;
  }
  // Everything that needs the starting identity (privileged ports) is
  // done: switch to engine.user before touching the spool, the event file
  // or any key.
  if (!c.engine.user.empty()) {
    RM_TRY(drop_privileges(c.engine, {c.ingest.socket, c.control.socket}));
  }
  if (c.spool.mode != SpoolMode::kOff) {
    auto lock = lock_spool_dir(c.spool);  // engine/spool.h: one engine per spool
    if (!lock.ok()) {
      return std::move(lock).take_error();
    }
    rt->spool_lock_fd_ = *lock;
  }
  if (!c.events.file.empty()) {
    auto file = EventFile::open(c.events.file);
    if (!file.ok()) {
      return std::move(file).take_error();
    }
    rt->event_file_ = std::move(*file);
  }
  {
    auto signer = DkimSigner::create(c.dkim);
    if (!signer.ok()) {
      return std::move(signer).take_error();
    }
    if (!(*signer)->empty()) {
      rt->dkim_ = std::move(*signer);
    }
  }
  {
    auto list = SuppressionList::open(c.suppression, *rt->clock_);
    if (!list.ok()) {
      return std::move(list).take_error();
    }
    rt->suppression_ = std::move(*list);
  }
  {
    uint64_t seed = 0;
    std::random_device rd;
    seed = (uint64_t{rd()} << 32) ^ rd();
    rt->message_id_seed_ = seed;
  }
  for (uint32_t i = 0; i < n * n; ++i) {
    rt->rings_.push_back(std::make_unique<ShardRing>());
  }
  for (uint32_t i = 0; i < n; ++i) {
    rt->external_.push_back(std::make_unique<MpscQueue>());
    rt->shards_.push_back(std::make_unique<Shard>(*rt, i, n));
  }
  if (c.suppression.enabled) {
    // Hard bounces of the invalid-recipient class feed the suppression
    // list through the shards' own event path (no thread runs yet).
    uint64_t id = rt->subscriber_seq_.fetch_add(1) + 1;
    Runtime* self = rt.get();
    for (auto& s : rt->shards_) {
      s->add_subscriber(id, [self](const EventView& v) { self->note_bounce(v); });
    }
  }
  if (!c.suppression.file.empty()) {
    rt->flush_thread_ = std::thread([r = rt.get()] { r->flush_loop(); });
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
  if (spool_lock_fd_ >= 0) {
    ::close(spool_lock_fd_);  // start() failed before any shard ran
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
  BatchOptions opts;
  if (auto r = parse_batch_options(in.options, &opts); !r.ok()) {
    return reject(r.error().message);
  }
  std::string_view pool_name = opts.pool;
  bool has_vars = false;
  for (std::string_view v : in.recipient_vars) {
    has_vars = has_vars || !v.empty();
  }
  if (has_vars && !opts.personalise) {
    return reject("the batch has recipient variables but no option personalise=true");
  }
  auto pool = config_.egress.pool_for(pool_name, sender_domain);
  if (!pool) {
    return reject("unknown pool \"" + std::string(pool_name) + "\"");
  }
  // Unsubscribe reports are facts about earlier mail: recorded before this
  // batch's recipients are checked (an address both unsubscribed and
  // addressed here is refused).
  if (!in.unsubscribed.empty() && suppression_->enabled()) {
    std::string note = "unsubscribed (batch " + ack.batch_id + ")";
    for (std::string_view u : in.unsubscribed) {
      auto mb = proto::parse_mailbox(u);
      if (!mb.ok() || mb->domain_literal) {
        continue;  // not an address ringmail could send to anyway
      }
      suppression_->note_unsubscribed(SuppressionList::key(u), note);
    }
  }
  // The message: bulk headers added, then personalised or signed.
  const int64_t now_wall_ms = clock_->wall_ms();
  const int64_t now_s = now_wall_ms / 1000;
  std::string prepared;  // the normalised message with added fields
  std::string_view content = in.message;
  std::shared_ptr<const Personalisation> personal;
  const bool unsubscribe_vars = opts.list_unsubscribe.find("{{") != std::string_view::npos ||
                                opts.list_unsubscribe_mailto.find("{{") != std::string_view::npos;
  const std::shared_ptr<const DkimSigner> dkim = dkim_signer();  // one signer per batch
  const bool add_fields = dkim != nullptr || opts.bulk();
  if (add_fields || opts.personalise || unsubscribe_vars) {
    proto::normalize_body(in.message, prepared);
    if (unsubscribe_vars && !opts.personalise) {
      // Only the URI's placeholders are live: the rest of the message is
      // not a template, so its own "{{" are escaped ("{{{{", template.h).
      prepared = escape_template(prepared);
    }
    if (add_fields) {
      proto::BulkHeaderOptions bo;
      bo.add_date = true;
      bo.date_s = now_s;
      std::string mid = proto::make_message_id(
          ack.batch_id, message_id_seed_ ^ message_ids_.fetch_add(1, std::memory_order_relaxed),
          sender_domain.empty() ? std::string_view("ringmail.invalid") : sender_domain);
      bo.message_id = mid;
      bo.list_unsubscribe = opts.list_unsubscribe;
      bo.list_unsubscribe_mailto = opts.list_unsubscribe_mailto;
      bo.feedback_id = opts.feedback_id;
      auto added = proto::add_bulk_headers(prepared, bo);
      if (!added.ok()) {
        return reject("cannot add header fields: " + added.error().message);
      }
    }
    content = prepared;
  }
  if (opts.personalise || unsubscribe_vars) {
    auto p = Personalisation::create(content, dkim, opts.dkim_domain, now_s);
    if (!p.ok()) {
      return reject(p.error().message);
    }
    personal = std::move(*p);
  }
  // Pass 1: validate, normalise the domain, pick the shard, size arenas.
  const uint32_t n = shard_count();
  struct Parsed {
    std::string addr;  // local@lower-domain
    uint32_t shard;
    uint16_t domain_off;
    std::string_view vars;  // personalised: the recipient's encoded variables
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
    if (suppression_->enabled() && suppression_->size() > 0) {
      if (auto hit = suppression_->check(p.addr)) {
        std::string why = "suppressed (" + std::string(suppression_reason_name(hit->reason));
        why += hit->expires_ms == 0
                   ? ")"
                   : " until " + proto::format_rfc5322_date(hit->expires_ms / 1000) + ")";
        ack.rejections.push_back({i, proto::RejectReason::kSuppressed, std::move(why)});
        continue;
      }
    }
    if (personal != nullptr) {
      std::string_view vars = i < in.recipient_vars.size() ? in.recipient_vars[i] : "";
      auto bound = proto::bind_vars(personal->tmpl(), vars, p.addr);
      if (!bound.ok()) {
        ack.rejections.push_back({i, proto::RejectReason::kTemplate, bound.error().message});
        continue;
      }
      p.vars = vars;
    }
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
  uint64_t need = rcpt_bytes + content.size() + content.size() / 32 + 256;
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
  mi.raw = content;
  mi.origin = in.origin;
  mi.auth_user = std::string(in.auth_user);
  mi.accepted_wall_ms = now_wall_ms;
  mi.accepted_at = clock_->now();
  mi.pool = *pool;
  mi.budget = &queued_bytes_;
  MessageRef msg;
  if (personal == nullptr) {
    // Signed once, here, for every recipient (engine/message.h).
    mi.dkim = dkim.get();
    mi.dkim_domain = std::string(opts.dkim_domain);
    mi.dkim_time_s = now_s;
    msg = Message::create(std::move(mi));
    if (!msg->dkim_error().empty()) {
      return reject("DKIM signing failed: " + msg->dkim_error());
    }
  }
  // Pass 2: build one job per shard that has recipients. A personalised
  // batch gets one Message per job (they share the template): a
  // Message's variables are indexed like its job's recipients.
  std::vector<Job*> jobs(n, nullptr);
  std::vector<std::vector<std::string_view>> job_vars(personal != nullptr ? n : 0);
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
    if (personal != nullptr) {
      job_vars[p.shard].push_back(p.vars);
    }
  }
  if (personal != nullptr) {
    for (uint32_t s = 0; s < n; ++s) {
      if (jobs[s] == nullptr) {
        continue;
      }
      MessageInit pi;
      pi.batch_id = mi.batch_id;
      pi.sender = mi.sender;
      pi.sender_utf8 = mi.sender_utf8;
      pi.origin = mi.origin;
      pi.auth_user = mi.auth_user;
      pi.accepted_wall_ms = mi.accepted_wall_ms;
      pi.accepted_at = mi.accepted_at;
      pi.pool = mi.pool;
      pi.budget = mi.budget;
      pi.personal = personal;
      pi.rcpt_vars = std::move(job_vars[s]);
      jobs[s]->msg = Message::create(std::move(pi));
    }
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
/// either acknowledged whole, or refused whole — and a refused batch leaves
/// nothing behind: parts that did become durable are revoked (their RETIRE
/// made durable) before the refusal is answered.
struct AckCollector {
  struct Part {
    uint32_t shard;
    Job* job;
    bool durable = false;  // written by the part's shard before `pending` drops
  };
  Runtime* rt;
  proto::Ack ack;
  Runtime::AckFn done;
  int origin;  // shard to answer on, or -1
  std::vector<Part> parts;
  std::atomic<uint32_t> pending{0};
  std::atomic<uint32_t> revoking{0};
  std::atomic<bool> failed{false};
};

void release_msg(Shard& shard, void* p, uint64_t /*a*/) {
  shard.scheduler().accept(static_cast<Job*>(p));
}

void drop_refused_job(Shard& shard, Job* job) {
  uint64_t bytes = job->addrs.size();
  uint64_t n = job->rcpts.size();
  delete job;
  shard.runtime().abandon(n, bytes);
}

void abandon_msg(Shard& shard, void* p, uint64_t /*a*/) {
  auto* job = static_cast<Job*>(p);
  if (shard.spool() != nullptr) {
    shard.spool()->retire_job(job);
  }
  drop_refused_job(shard, job);
}

void ack_msg(Shard& /*shard*/, void* p, uint64_t /*a*/) {
  std::unique_ptr<AckCollector> c(static_cast<AckCollector*>(p));
  c->done(std::move(c->ack));
}

void send_ack(Shard& shard, AckCollector* c) {
  if (c->origin >= 0) {
    shard.post(static_cast<uint32_t>(c->origin), ShardMsg{&ack_msg, c, 0});
  } else {
    ack_msg(shard, c, 0);
  }
}

/// A durable part of a refused batch: retire it durably, then (the last
/// one) answer the refusal.
void revoke_msg(Shard& shard, void* p, uint64_t job_ptr) {
  auto* c = static_cast<AckCollector*>(p);
  auto* job = reinterpret_cast<Job*>(job_ptr);
  Shard* sh = &shard;
  const size_t rcpts = job->rcpts.size();
  shard.spool()->revoke_job(job, [sh, c, rcpts](bool durable) {
    if (!durable) {
      RM_LOG_ERROR(
          "spool: batch %s was refused but its part on shard %u (%zu recipients) could not be "
          "revoked on disk now; it is once the disk works — should ringmail stop before that, "
          "those recipients may be delivered although the batch was refused",
          c->ack.batch_id.c_str(), sh->id(), rcpts);
    }
    if (c->revoking.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      send_ack(*sh, c);
    }
  });
  drop_refused_job(shard, job);
}

void part_done(Shard& shard, AckCollector* c, size_t part, bool ok) {
  if (!ok) {
    c->failed.store(true, std::memory_order_release);
  } else {
    c->parts[part].durable = true;
  }
  if (c->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    return;
  }
  bool failed = c->failed.load(std::memory_order_acquire);
  if (!failed) {
    for (const auto& pt : c->parts) {
      shard.post(pt.shard, ShardMsg{&release_msg, pt.job, 0});
    }
    send_ack(shard, c);
    return;
  }
  std::string id = c->ack.batch_id;
  c->ack = proto::Ack{};
  c->ack.batch_id = id;
  c->ack.status = proto::AckStatus::kSpoolUnavailable;
  c->ack.reason =
      "the spool cannot make this batch durable right now (disk error); nothing was "
      "accepted: send it again later";
  uint32_t durable = 0;
  for (const auto& pt : c->parts) {
    durable += pt.durable ? 1 : 0;
  }
  c->revoking.store(durable, std::memory_order_release);
  for (const auto& pt : c->parts) {
    if (pt.durable) {
      shard.post(pt.shard, ShardMsg{&revoke_msg, c, reinterpret_cast<uint64_t>(pt.job)});
    } else {
      shard.post(pt.shard, ShardMsg{&abandon_msg, pt.job, 0});
    }
  }
  if (durable == 0) {
    send_ack(shard, c);
  }
}

void spool_job_msg(Shard& shard, void* p, uint64_t part) {
  auto* c = static_cast<AckCollector*>(p);
  Job* job = c->parts[part].job;
  Shard* sh = &shard;
  shard.spool()->append_job(job, [sh, c, part](bool ok) { part_done(*sh, c, part, ok); });
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
      c->parts.push_back(AckCollector::Part{s, jobs[s]});
    }
  }
  const size_t parts = c->parts.size();
  c->pending.store(static_cast<uint32_t>(parts), std::memory_order_release);
  for (size_t i = 0; i < parts; ++i) {
    post(c->parts[i].shard, ShardMsg{&spool_job_msg, c, i});
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
  if (call->cmd == "list" || call->cmd == "rules") {
    out += call->cmd == "list" ? ",\"destinations\":[" : ",\"effects\":[";
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
    out += call->cmd == "pause" || call->cmd == "resume" ? ",\"destinations\":"
           : call->cmd == "rules-cancel"                 ? ",\"effects\":"
                                                         : ",\"recipients\":";
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
  } else if (call->cmd == "rules") {
    sched.list_rule_effects(call->arg.empty() ? "*" : call->arg, &call->parts[me]);
  } else if (call->cmd == "rules-cancel") {
    call->counts[me] = sched.cancel_rule_effects(call->arg);
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
    field("spool_segments", t.spool_segments);
    field("spool_errors", t.spool_errors);
    field("spool_damage", t.spool_damage);
    field("submission_auth_checks", t.submission_auth_checks);
    field("submission_reclaimed", t.submission_reclaimed);
    field("submission_timeouts", t.submission_timeouts);
    out += "}";
    done(std::move(out));
    return;
  }
  if (cmd == "suppression") {
    done(suppression_command(arg));
    return;
  }
  if (cmd == "reopen-logs") {
    std::string file = config_.events.file;
    reopen_event_file(from_shard, [done = std::move(done), file](std::string error) {
      std::string out = "{\"ok\":true,\"command\":\"reopen-logs\",\"events_file\":";
      proto::append_json_string(out, file);
      done(error.empty() ? out + "}" : control_error(error));
    });
    return;
  }
  if (cmd == "reload") {
    reload_from_source(from_shard, [done = std::move(done)](Result<ReloadReport> r) {
      done(r.ok() ? reload_json(*r)
                  : control_error("reload refused, nothing changed: " + r.error().message));
    });
    return;
  }
  if (cmd == "rules" && (arg == "cancel" || arg.starts_with("cancel "))) {
    // "rules cancel ID|PATTERN": one effect by id, or those of matching destinations.
    cmd = "rules-cancel";
    arg = arg.size() > 7 ? arg.substr(7) : "";
  }
  bool needs_arg = cmd == "pause" || cmd == "resume" || cmd == "flush" || cmd == "drop-batch" ||
                   cmd == "rules-cancel";
  if (cmd != "list" && cmd != "rules" && !needs_arg) {
    done(control_error("unknown command \"" + cmd +
                       "\" (list, pause, resume, flush, drop-batch, stats, rules, suppression, "
                       "reopen-logs, reload)"));
    return;
  }
  if (needs_arg && arg.empty()) {
    done(control_error(cmd + " needs an argument"));
    return;
  }
  if (cmd != "drop-batch" && !(cmd == "rules-cancel" && arg.find(':') != std::string::npos)) {
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

// ---------------------------------------------------------------------------
// Suppression: bounces, the periodic flush, operator commands.

void Runtime::note_bounce(const EventView& ev) {
  if (ev.type != EventType::kBounced) {
    return;
  }
  proto::EnhancedCode code = proto::parse_enhanced_code(ev.enhanced_code);
  if (!SuppressionList::suppresses(code)) {
    return;
  }
  suppression_->note_bounce(
      ev.recipient, code,
      SuppressionList::bounce_note(ev.code, ev.enhanced_code, ev.response, ev.batch));
}

void Runtime::flush_loop() {
  const Millis every = config_.suppression.flush_interval;
  std::unique_lock lock(flush_mu_);
  while (!flush_cv_.wait_for(lock, every, [&] { return flush_stop_; })) {
    lock.unlock();
    suppression_->expire();
    auto r = suppression_->flush();
    if (!r.ok()) {
      RM_LOG_ERROR("suppression: %s", r.error().message.c_str());
    }
    lock.lock();
  }
}

std::string Runtime::suppression_command(std::string_view args) {
  // suppression list [PATTERN [LIMIT]] | check ADDRESS | add ADDRESS [REASON [TTL_S [NOTE…]]]
  // | remove ADDRESS
  std::vector<std::string_view> w;
  size_t pos = 0;
  while (pos < args.size()) {
    size_t sp = args.find(' ', pos);
    if (sp == std::string_view::npos) {
      sp = args.size();
    }
    if (sp > pos) {
      w.push_back(args.substr(pos, sp - pos));
    }
    pos = sp + 1;
  }
  const char* usage =
      "usage: suppression list [PATTERN [LIMIT]] | check ADDRESS | add ADDRESS [REASON [TTL_S "
      "[NOTE]]] | remove ADDRESS";
  if (w.empty()) {
    return control_error(usage);
  }
  std::string out = "{\"ok\":true,\"command\":\"suppression ";
  out += w[0];
  out += "\"";
  SuppressionList& sl = *suppression_;
  if (w[0] == "list") {
    std::string_view pattern = w.size() > 1 ? w[1] : "*";
    size_t limit = 1000;
    if (w.size() > 2) {
      uint64_t v = 0;
      if (!proto::internal::parse_u64(w[2], &v) || v == 0) {
        return control_error("suppression list: LIMIT must be a positive number");
      }
      limit = static_cast<size_t>(std::min<uint64_t>(v, 1'000'000));
    }
    size_t total = 0;
    auto entries = sl.list(pattern, limit, &total);
    out += ",\"total\":";
    proto::append_json_uint(out, total);
    out += ",\"entries\":[";
    for (size_t i = 0; i < entries.size(); ++i) {
      out += i == 0 ? "" : ",";
      append_suppression_json(out, entries[i]);
    }
    out += "]}";
    return out;
  }
  if (w.size() < 2) {
    return control_error(usage);
  }
  std::string key = SuppressionList::key(w[1]);
  if (key.empty()) {
    return control_error("suppression: \"" + std::string(w[1]) + "\" is not an address");
  }
  out += ",\"address\":";
  proto::append_json_string(out, key);
  if (w[0] == "check") {
    auto hit = sl.check(key);
    out += ",\"suppressed\":";
    out += hit ? "true" : "false";
    if (hit) {
      out += ",\"reason\":";
      proto::append_json_string(out, suppression_reason_name(hit->reason));
      out += ",\"expires\":";
      if (hit->expires_ms == 0) {
        out += "null";
      } else {
        std::string ts;
        append_rfc3339_ms(ts, hit->expires_ms);
        proto::append_json_string(out, ts);
      }
    }
    out += "}";
    return out;
  }
  if (w[0] == "add") {
    SuppressionReason reason = SuppressionReason::kManual;
    if (w.size() > 2) {
      auto r = parse_suppression_reason(w[2]);
      if (!r) {
        return control_error("suppression add: unknown reason \"" + std::string(w[2]) +
                             "\" (invalid_recipient, unsubscribed, manual)");
      }
      reason = *r;
    }
    Millis ttl{0};
    if (w.size() > 3) {
      uint64_t v = 0;
      if (!proto::internal::parse_u64(w[3], &v) || v > 3650ull * 86'400) {
        return control_error("suppression add: TTL_S must be seconds (0 = never expires)");
      }
      ttl = Millis(static_cast<int64_t>(v) * 1000);
    }
    std::string note = "added by an operator";
    if (w.size() > 4) {
      size_t at = static_cast<size_t>(w[4].data() - args.data());
      note = std::string(args.substr(at));
    }
    auto r = sl.add(key, reason, ttl, note);
    if (!r.ok()) {
      return control_error("suppression add: " + r.error().message);
    }
    out += "}";
    return out;
  }
  if (w[0] == "remove") {
    auto r = sl.remove(key);
    if (!r.ok()) {
      return control_error("suppression remove: " + r.error().message);
    }
    out += ",\"removed\":";
    out += *r ? "true" : "false";
    out += "}";
    return out;
  }
  return control_error(usage);
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
    t.submission_auth_checks += st.submission_auth_checks.load(std::memory_order_relaxed);
    t.submission_reclaimed += st.submission_reclaimed.load(std::memory_order_relaxed);
    t.submission_timeouts += st.submission_timeouts.load(std::memory_order_relaxed);
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
    // Give queued mail the grace — while something can still be delivered.
    // Mail that only waits (for a retry time, a backoff, a pause) would
    // wait the whole grace for nothing.
    const auto deadline = std::chrono::steady_clock::now() + grace;
    int quiet = 0;
    bool timed_out = true;
    while (std::chrono::steady_clock::now() < deadline) {
      if (wait_idle(std::min<Millis>(Millis(100), grace))) {
        timed_out = false;
        break;
      }
      uint64_t active = 0;
      for (const auto& s : shards_) {
        active += s->stats_.active.load(std::memory_order_relaxed);
      }
      quiet = active == 0 ? quiet + 1 : 0;
      if (quiet >= 3) {
        timed_out = false;
        break;
      }
    }
    const uint64_t left = unfinished();
    if (left > 0) {
      const bool kept = config_.spool.mode != SpoolMode::kOff;
      RM_LOG_WARN("shutdown: %llu recipients still queued%s; in-flight ones are deferred; %s",
                  static_cast<unsigned long long>(left),
                  timed_out ? " when engine.shutdown_grace ran out"
                            : " and none can be delivered now (waiting for retries, backoffs "
                              "or pauses)",
                  kept ? "they stay in the spool and are delivered after the next start"
                       : "with the spool off they are not kept");
    }
  }
  for (auto& s : shards_) {
    s->request_stop();
  }
  for (auto& t : threads_) {
    t.join();
  }
  threads_.clear();
  // Tasks posted after a shard's last look at its queue (a subscription
  // racing the shutdown) never run: free them.
  for (auto& q : external_) {
    while (MpscNode* n = q->pop()) {
      delete static_cast<ExternalTask*>(n);
    }
  }
  if (flush_thread_.joinable()) {
    {
      std::lock_guard lock(flush_mu_);
      flush_stop_ = true;
    }
    flush_cv_.notify_all();
    flush_thread_.join();
  }
  if (suppression_ != nullptr) {
    auto r = suppression_->flush();
    if (!r.ok()) {
      RM_LOG_ERROR("suppression: %s", r.error().message.c_str());
    }
  }
  if (spool_lock_fd_ >= 0) {
    ::close(spool_lock_fd_);  // the shards are gone: nothing writes the spool any more
    spool_lock_fd_ = -1;
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(config_.ingest.socket.c_str());
  }
  if (control_fd_ >= 0) {
    ::close(control_fd_);
    control_fd_ = -1;
    ::unlink(config_.control.socket.c_str());
  }
  for (int fd : submission_fds_) {
    ::close(fd);
  }
  submission_fds_.clear();
  if (http_fd_ >= 0) {
    ::close(http_fd_);
    http_fd_ = -1;
  }
}

}  // namespace ringmail::engine
