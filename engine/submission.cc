// The submission listeners (see submission.h).
#include "engine/submission.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/log.h"
#include "engine/shard.h"
#include "engine/submission_conn.h"

namespace ringmail::engine {
namespace {

// Room kept below ingest.max_message_bytes for the Received header.
constexpr uint64_t kTraceRoom = 1024;

proto::ServerConfig server_config(const Config& c, const SubmissionListener& l, bool auth) {
  const SubmissionConfig& s = c.submission;
  proto::ServerConfig sc;
  sc.hostname = s.hostname;
  sc.greeting = "ESMTP ringmail";
  sc.starttls = l.tls == SubmissionListener::Tls::kStartTls;
  sc.auth_mechs = auth ? (proto::kAuthPlain | proto::kAuthLogin) : 0;
  sc.allow_plaintext_auth = false;  // RFC 4954 4, RFC 8314: never
  // Relay is decided at RCPT (554 5.7.1), so trusted networks can submit
  // without AUTH on any listener.
  sc.require_auth = false;
  uint64_t engine_max = c.ingest.max_message_bytes > kTraceRoom
                            ? c.ingest.max_message_bytes - kTraceRoom
                            : c.ingest.max_message_bytes;
  sc.max_message = std::min<uint64_t>(s.max_message_bytes, engine_max);
  sc.max_recipients = s.max_recipients;
  sc.max_line = s.max_line;
  sc.max_hard_errors = s.max_errors;
  sc.max_commands = s.max_commands;
  sc.binarymime = false;  // bodies are normalised to CRLF text by the engine
  sc.dsn = false;
  sc.keep_body = true;
  sc.bare_line = proto::BareLinePolicy::kReject;
  sc.allow_bare_lf_commands = false;
  sc.forbid_unauth_pipelining = true;
  return sc;
}

}  // namespace

Result<int> open_submission_socket(const SubmissionListener& l) {
  int fd = ::socket(l.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return make_error(Errc::kIo,
                      "submission.listeners " + l.listen + ": socket: " + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&l.addr), l.addr_len) != 0 ||
      ::listen(fd, 512) != 0) {
    int e = errno;
    ::close(fd);
    return make_error(Errc::kIo,
                      "submission.listeners " + l.listen + ": cannot listen: " + std::strerror(e));
  }
  return fd;
}

// ---------------------------------------------------------------------------
// Listener

Submission::Submission(Shard& shard)
    : shard_(shard),
      limiter_(shard.config().submission.auth_fail_limit,
               shard.config().submission.auth_fail_window) {}

Submission::~Submission() {
  auth_.reset();  // joins the worker before anything it reads goes away
  for (auto& [id, c] : conns_) {
    delete c;  // only at a forced shutdown; normally stop() emptied this
  }
}

Result<std::unique_ptr<Submission>> Submission::create(Shard& shard, const std::vector<int>& fds) {
  const Config& cfg = shard.config();
  const SubmissionConfig& sc = cfg.submission;
  RM_ASSERT(fds.size() == sc.listeners.size());
  std::unique_ptr<Submission> s(new Submission(shard));
  if (!sc.credentials_file.empty()) {
    auto creds = CredentialStore::load(sc.credentials_file);
    if (!creds.ok()) {
      return std::move(creds).take_error();
    }
    s->creds_ = std::move(*creds);
  }
  if (!s->creds_.empty()) {
    s->auth_ = std::make_unique<AuthWorker>(&s->creds_, kMaxPendingAuth);
  }
  for (const std::string& n : sc.trusted_networks) {
    auto c = parse_cidr(n);
    RM_TRY(c);
    s->trusted_.push_back(*c);
  }
  auto contexts = load_tls_contexts(cfg.tls, sc);
  if (!contexts.ok()) {
    return std::move(contexts).take_error();
  }
  for (size_t i = 0; i < sc.listeners.size(); ++i) {
    const SubmissionListener& l = sc.listeners[i];
    auto li = std::make_unique<Listener>();
    li->owner = s.get();
    li->cfg = &l;
    li->fd = fds[i];
    li->op.listener = li.get();
    li->tls = std::move((*contexts)[i]);
    li->server = server_config(cfg, l, !s->creds_.empty());
    RM_LOG_INFO("submission: listening on %s (%s)%s", l.listen.c_str(),
                l.tls == SubmissionListener::Tls::kStartTls   ? "STARTTLS"
                : l.tls == SubmissionListener::Tls::kImplicit ? "implicit TLS"
                                                              : "no TLS",
                s->creds_.empty() ? ", no credentials file: AUTH off" : "");
    s->listeners_.push_back(std::move(li));
  }
  return s;
}

Result<std::vector<std::unique_ptr<TlsContext>>> Submission::load_tls_contexts(
    const TlsConfig& tls, const SubmissionConfig& sc) {
  std::vector<std::unique_ptr<TlsContext>> out;
  for (const SubmissionListener& l : sc.listeners) {
    if (l.tls == SubmissionListener::Tls::kNone) {
      out.push_back(nullptr);
      continue;
    }
    auto ctx = TlsContext::server(tls, l.cert_file, l.key_file);
    if (!ctx.ok()) {
      return make_error(ctx.error().code,
                        "submission.listeners " + l.listen + ": " + ctx.error().message);
    }
    out.push_back(std::move(*ctx));
  }
  return out;
}

void Submission::replace_tls_contexts(std::vector<std::unique_ptr<TlsContext>> contexts) {
  RM_ASSERT(contexts.size() == listeners_.size());
  for (size_t i = 0; i < listeners_.size(); ++i) {
    // A handshake in progress holds its own reference (wolfSSL counts the
    // context's users), so the old context may go now.
    listeners_[i]->tls = std::move(contexts[i]);
  }
}

void Submission::start() {
  for (auto& l : listeners_) {
    arm_accept(*l);
  }
}

void Submission::arm_accept(Listener& l) {
  if (stopping_ || l.armed) {
    return;
  }
  l.armed = true;
  shard_.ring().accept(l.fd, &l.op, /*multishot=*/true);
}

void Submission::AcceptOp::complete(int res, uint32_t flags) {
  listener->owner->on_accept(*listener, res, flags);
}

void Submission::on_accept(Listener& l, int res, uint32_t flags) {
  bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) {
    l.armed = false;
  }
  if (res < 0) {
    if (res != -ECANCELED && res != -EAGAIN && res != -EINTR) {
      RM_LOG_WARN("submission accept on %s: %s", l.cfg->listen.c_str(), std::strerror(-res));
    }
  } else if (stopping_) {
    ::close(res);
  } else {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (::getpeername(res, reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
      ::close(res);  // already gone
    } else {
      admit(l, res, peer);
    }
  }
  if (!more && !stopping_) {
    arm_accept(l);
  }
}

void Submission::admit(Listener& l, int fd, const sockaddr_storage& peer) {
  const SubmissionConfig& sc = shard_.config().submission;
  TimePoint now = shard_.clock().now();
  std::string key = client_key(peer);
  auto it = per_client_.find(key);
  uint32_t mine = it == per_client_.end() ? 0 : it->second;
  // An implicit-TLS client takes a handshake slot first; a session only
  // once it has finished the handshake (finish_handshake()).
  bool implicit = l.cfg->tls == SubmissionListener::Tls::kImplicit;
  const char* refusal = nullptr;
  if (mine >= sc.max_sessions_per_ip) {
    refusal = "too many sessions from your address";  // checked first: reclaims nothing
  } else if (implicit ? !can_admit(now) : !take_session_slot(now)) {
    refusal = "too many sessions";
  }
  if (refusal != nullptr) {
    refuse(l, fd, refusal);
    return;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto* c = new Conn(*this, l, fd, peer, next_id_++);
  conns_.emplace(c->id(), c);
  ++per_client_[key];
  c->counted_ = true;
  c->slot_ = implicit ? Slot::kNone : Slot::kSession;
  Conn::run(c, [](Conn* conn) { conn->start(); });
}

// Over a limit: no session object at all (threat: a connection flood must
// not cost a session's buffers per connection). The 421 fits in the socket
// buffer of a fresh connection; an implicit-TLS client gets a plain close,
// as plaintext would be noise to it and a handshake would cost what the
// limit protects.
void Submission::refuse(const Listener& l, int fd, const char* why) {
  if (l.cfg->tls != SubmissionListener::Tls::kImplicit) {
    std::string reply =
        "421 4.7.0 " + shard_.config().submission.hostname + " Error: " + why + "\r\n";
    ssize_t n = ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;  // best effort: the client is refused either way
    ::shutdown(fd, SHUT_WR);
  }
  ::close(fd);
  ++refused_;
  if (refused_ == 1 || refused_ % 1000 == 0) {
    RM_LOG_WARN("submission %s: refused a client: %s (%llu so far)", l.cfg->listen.c_str(), why,
                static_cast<unsigned long long>(refused_));
  }
}

bool Submission::trusted(const sockaddr_storage& addr) const {
  return std::any_of(trusted_.begin(), trusted_.end(),
                     [&](const Cidr& n) { return cidr_contains(n, addr); });
}

void Submission::release_slot(Conn* c) {
  if (c->wait_.list != nullptr) {
    c->wait_.list->remove(c);
  }
  if (c->slot_ == Slot::kSession) {
    --admitted_;
  }
  c->slot_ = Slot::kNone;
  if (!c->counted_) {
    return;
  }
  c->counted_ = false;
  auto it = per_client_.find(c->key());
  if (it != per_client_.end() && --it->second == 0) {
    per_client_.erase(it);
  }
}

Submission::Conn* Submission::reclaim_candidate(TimePoint now) const {
  const Millis after = shard_.config().submission.reclaim_idle_after;
  for (const WaitList* l : {&idle_, &idle_tx_}) {
    Conn* c = l->front();
    if (c != nullptr && now - c->wait_.since >= after) {
      return c;
    }
  }
  return nullptr;
}

bool Submission::can_admit(TimePoint now) const {
  return admitted_ < shard_.config().submission.max_sessions || reclaim_candidate(now) != nullptr;
}

bool Submission::take_session_slot(TimePoint now) {
  if (admitted_ >= shard_.config().submission.max_sessions) {
    Conn* victim = reclaim_candidate(now);
    if (victim == nullptr) {
      return false;
    }
    ++reclaimed_;
    shard_.stats().submission_reclaimed.fetch_add(1, std::memory_order_relaxed);
    if (reclaimed_ == 1 || reclaimed_ % 1000 == 0) {
      RM_LOG_WARN(
          "submission: max_sessions reached: closed the session waiting longest for a command "
          "(%llu so far)",
          static_cast<unsigned long long>(reclaimed_));
    }
    Conn::run(victim, [](Conn* v) { v->reclaim(); });  // releases its slot
    if (admitted_ >= shard_.config().submission.max_sessions) {
      return false;
    }
  }
  ++admitted_;
  return true;
}

void Submission::begin_handshake(Conn* c, TimePoint now) {
  if (c->wait_.list != nullptr) {
    c->wait_.list->remove(c);
  }
  if (c->slot_ == Slot::kSession) {
    --admitted_;
  }
  c->slot_ = Slot::kHandshake;
  if (handshakes_.size() >= shard_.config().submission.max_tls_handshakes) {
    // Threat: connections that never finish a handshake. The oldest has
    // had the longest to finish; dropping it (rather than refusing the
    // newcomer) serves every client that finishes its handshake before
    // max_tls_handshakes newer connections arrive, whatever the flood
    // left behind.
    ++dropped_;
    if (dropped_ == 1 || dropped_ % 1000 == 0) {
      RM_LOG_WARN(
          "submission: max_tls_handshakes reached: dropped the oldest handshake (%llu so far)",
          static_cast<unsigned long long>(dropped_));
    }
    Conn::run(handshakes_.front(), [](Conn* o) { o->finish(); });  // releases its slot
  }
  handshakes_.push_back(c, now);
}

bool Submission::finish_handshake(Conn* c, TimePoint now) {
  if (c->wait_.list == &handshakes_) {
    handshakes_.remove(c);
  }
  c->slot_ = Slot::kNone;
  if (!take_session_slot(now)) {
    return false;
  }
  c->slot_ = Slot::kSession;
  return true;
}

void Submission::WaitList::push_back(Conn* c, TimePoint since) {
  RM_ASSERT(c->wait_.list == nullptr);
  c->wait_ = WaitLink{tail_, nullptr, this, since};
  if (tail_ != nullptr) {
    tail_->wait_.next = c;
  } else {
    head_ = c;
  }
  tail_ = c;
  ++size_;
}

void Submission::WaitList::remove(Conn* c) {
  RM_ASSERT(c->wait_.list == this);
  if (c->wait_.prev != nullptr) {
    c->wait_.prev->wait_.next = c->wait_.next;
  } else {
    head_ = c->wait_.next;
  }
  if (c->wait_.next != nullptr) {
    c->wait_.next->wait_.prev = c->wait_.prev;
  } else {
    tail_ = c->wait_.prev;
  }
  c->wait_ = WaitLink{};
  --size_;
}

void Submission::conn_closed(Conn* c) {
  conns_.erase(c->id());
}

bool Submission::check_auth(Conn* c, const proto::AuthRequest& a) {
  if (auth_ == nullptr) {
    return false;
  }
  Runtime* rt = &shard_.runtime();
  uint32_t home = shard_.id();
  Submission* self = this;
  uint64_t id = c->id();
  std::string key = c->key();
  std::string peer = c->peer_;
  std::string user = a.user;
  bool queued = auth_->submit(a.user, a.password, [=](bool ok) {
    // Worker thread: hand the verdict back to the listener's shard.
    rt->post_external(home, [=](Shard&) { self->on_auth_result(id, key, peer, user, ok); });
  });
  if (queued) {
    ++auth_inflight_;
    shard_.stats().submission_auth_checks.fetch_add(1, std::memory_order_relaxed);
  }
  return queued;
}

void Submission::log_auth_failure(const std::string& peer, std::string_view user) {
  RM_LOG_WARN("submission: AUTH failed for user=%s from %s",
              submission_internal::printable(user).c_str(), peer.c_str());
}

void Submission::on_auth_result(uint64_t conn, const std::string& key, const std::string& peer,
                                const std::string& user, bool ok) {
  --auth_inflight_;
  // The attempt was counted when it was queued (Conn::on_auth); a failure
  // stays counted even if the client has left, a success gives it back.
  limiter_.end(key, shard_.clock().now(), /*failed=*/!ok);
  if (!ok) {
    log_auth_failure(peer, user);
  }
  auto it = conns_.find(conn);
  if (it == conns_.end()) {
    return;
  }
  Conn::run(it->second, [&](Conn* c) { c->on_auth_result(ok); });
}

void Submission::on_ack(uint64_t conn, proto::Ack ack) {
  shard_.stats()
      .batches[static_cast<size_t>(BatchSource::kSubmission)][static_cast<size_t>(ack.status)]
      .fetch_add(1, std::memory_order_relaxed);
  auto it = conns_.find(conn);
  if (it == conns_.end()) {
    return;  // the client left before its message was acknowledged
  }
  Conn::run(it->second, [&](Conn* c) { c->on_ack(std::move(ack)); });
}

void Submission::stop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  if (auth_ != nullptr) {
    auth_inflight_ -= static_cast<uint32_t>(auth_->cancel_pending());
  }
  for (auto& l : listeners_) {
    if (l->armed) {
      shard_.ring().cancel(&l->op, nullptr);
    }
  }
  std::vector<Conn*> all;
  for (auto& [id, c] : conns_) {
    all.push_back(c);
  }
  for (Conn* c : all) {
    Conn::run(c, [](Conn* conn) { conn->shutdown_now(); });
  }
}

bool Submission::stopped() const {
  if (!stopping_ || !conns_.empty() || auth_inflight_ != 0) {
    return false;
  }
  return std::none_of(listeners_.begin(), listeners_.end(), [](const auto& l) { return l->armed; });
}

}  // namespace ringmail::engine
