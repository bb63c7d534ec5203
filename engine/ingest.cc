#include "engine/ingest.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>

#include "engine/failpoint.h"
#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/shard.h"
#include "proto/address.h"
#include "proto/batch_wire.h"
#include "proto/json.h"

namespace ringmail::engine {

/// One client of the batch protocol.
class Ingest::Conn {
 public:
  Conn(Ingest& ingest, int fd, uint64_t id)
      : ingest_(ingest),
        shard_(ingest.shard_),
        fd_(fd),
        id_(id),
        frame_timer_(&Conn::on_frame_timer, this),
        idle_timer_(&Conn::on_idle_timer, this) {
    recv_op_.conn = this;
    recv_op_.fn = &Conn::on_recv;
    send_op_.conn = this;
    send_op_.fn = &Conn::on_send;
    cancel_op_.conn = this;
    cancel_op_.fn = &Conn::on_noop;
  }

  uint64_t id() const { return id_; }
  bool subscribed() const { return subscribed_; }
  void start_control(Shard& shard, uint64_t conn, std::string_view line);
  bool own_only() const { return own_only_; }
  bool closing() const { return closing_; }

  void start() {
    shard_.timers().schedule(&idle_timer_,
                             shard_.clock().now() + shard_.config().ingest.hello_timeout);
    arm_recv();
  }

  /// Queues a frame; closes the client when its backlog is over the limit.
  void queue_frame(proto::FrameType type, std::string_view payload) {
    if (closing_) {
      return;
    }
    if (out_.size() + payload.size() > shard_.config().ingest.max_subscriber_backlog &&
        type == proto::FrameType::kEvent) {
      fatal("event backlog over ingest.max_subscriber_backlog: the client is not reading");
      return;
    }
    proto::append_frame(out_, type, payload);
    ingest_.mark_dirty(this);
  }

  void flush() {
    if (sending_ || fd_ < 0) {
      return;
    }
    if (sent_ == sending_buf_.size()) {
      sending_buf_.clear();
      sent_ = 0;
      if (out_.empty()) {
        maybe_finish_close();
        return;
      }
      sending_buf_.swap(out_);
    }
    sending_ = true;
    ++ops_;
    shard_.ring().send(fd_, sending_buf_.data() + sent_, sending_buf_.size() - sent_, MSG_NOSIGNAL,
                       &send_op_);
  }

  /// Sends an ERROR frame, then closes once it is written.
  void fatal(std::string_view why) {
    if (closing_) {
      return;
    }
    RM_LOG_WARN("ingest client %llu: %.*s", static_cast<unsigned long long>(id_),
                static_cast<int>(why.size()), why.data());
    out_.clear();  // whatever else was queued is moot; the error must fit
    proto::append_frame(out_, proto::FrameType::kError, why);
    closing_ = true;
    stop_reading();
    ingest_.mark_dirty(this);
  }

  /// Closes without a farewell (peer gone).
  void drop() {
    closing_ = true;
    dropped_ = true;
    out_.clear();
    sending_buf_.clear();
    sent_ = 0;
    stop_reading();
    if (sending_) {
      ++ops_;
      shard_.ring().cancel(&send_op_, &cancel_op_);
    }
    maybe_finish_close();
  }

 private:
  struct Op final : Completion {
    Conn* conn = nullptr;
    void (Conn::*fn)(int, uint32_t) = nullptr;
    void complete(int res, uint32_t flags) override {
      Conn* c = conn;
      --c->ops_;
      (c->*fn)(res, flags);
      c->maybe_finish_close();
    }
  };

  /// Makes room in payload_ for `n` bytes of the frame (n <= frame_len_).
  /// The buffer grows with what arrives, doubling, never past the frame's
  /// length, each step charged against the shared limits.
  bool reserve_payload(size_t n) {
    if (payload_.size() >= n) {
      return true;
    }
    size_t want = std::min<size_t>(frame_len_, std::max({n, payload_.size() * 2, kRecvBuf}));
    size_t more = want - payload_.size();
    if (!ingest_.charge(more)) {
      fatal("frame of " + std::to_string(frame_len_) +
            " bytes refused: the daemon's buffers for incoming frames are full "
            "(ingest.max_buffered_bytes across clients, or the memory budget "
            "limits.max_queued_bytes); nothing of it was accepted: retry later");
      return false;
    }
    charged_ += more;
    payload_.resize(want);
    return true;
  }

  void release_payload() {
    ingest_.release(charged_);
    charged_ = 0;
  }

  void arm_recv() {
    if (recv_armed_ || closing_ || fd_ < 0) {
      return;
    }
    // A large payload is read straight into its own buffer, which grows
    // as the bytes arrive.
    if (in_payload_ && frame_len_ - payload_have_ > kRecvBuf) {
      if (!reserve_payload(std::min<size_t>(frame_len_, payload_have_ + kRecvBuf))) {
        return;
      }
      recv_armed_ = true;
      ++ops_;
      shard_.ring().recv(fd_, payload_.data() + payload_have_, payload_.size() - payload_have_,
                         &recv_op_);
      direct_ = true;
    } else {
      recv_armed_ = true;
      ++ops_;
      shard_.ring().recv(fd_, rbuf_, kRecvBuf, &recv_op_);
      direct_ = false;
    }
  }

  void stop_reading() {
    frame_timer_.cancel();
    idle_timer_.cancel();
    if (recv_armed_) {
      ++ops_;
      shard_.ring().cancel(&recv_op_, &cancel_op_);
    }
  }

  void on_recv(int res, uint32_t /*flags*/) {
    recv_armed_ = false;
    if (closing_) {
      return;
    }
    if (res > 0 && hello_) {
      shard_.timers().schedule(&idle_timer_,
                               shard_.clock().now() + shard_.config().ingest.idle_timeout);
    }
    if (res <= 0) {
      if (started_frame()) {
        RM_LOG_INFO(
            "ingest client %llu disconnected in the middle of a frame; it was not "
            "acknowledged",
            static_cast<unsigned long long>(id_));
      }
      drop();
      return;
    }
    if (direct_) {
      payload_have_ += static_cast<size_t>(res);
      if (payload_have_ == frame_len_) {
        if (!frame_complete()) {
          return;
        }
      }
    } else if (!consume(std::string_view(rbuf_, static_cast<size_t>(res)))) {
      return;
    }
    arm_recv();
  }

  bool started_frame() const { return header_have_ > 0 || in_payload_; }

  /// Feeds bytes from the small buffer; false when the connection is done.
  bool consume(std::string_view in) {
    while (!in.empty()) {
      if (!in_payload_) {
        if (header_have_ == 0) {
          shard_.timers().schedule(&frame_timer_,
                                   shard_.clock().now() + shard_.config().ingest.frame_timeout);
        }
        size_t take = std::min(in.size(), proto::kFrameHeaderSize - header_have_);
        std::memcpy(header_ + header_have_, in.data(), take);
        header_have_ += take;
        in.remove_prefix(take);
        if (header_have_ < proto::kFrameHeaderSize) {
          return true;
        }
        auto h = proto::decode_frame_header(std::span<const char>(header_, sizeof header_),
                                            shard_.config().ingest.max_frame_bytes);
        if (!h.ok()) {
          fatal("bad frame header: " + h.error().message);
          return false;
        }
        header_have_ = 0;
        frame_type_ = h->type;
        frame_len_ = h->length;
        payload_.clear();
        payload_have_ = 0;
        in_payload_ = true;
      }
      size_t take = std::min(in.size(), frame_len_ - payload_have_);
      if (!reserve_payload(payload_have_ + take)) {
        return false;
      }
      std::memcpy(payload_.data() + payload_have_, in.data(), take);
      payload_have_ += take;
      in.remove_prefix(take);
      if (payload_have_ == frame_len_ && !frame_complete()) {
        return false;
      }
    }
    return true;
  }

  /// A whole frame is in payload_. False when the connection is done.
  bool frame_complete() {
    in_payload_ = false;
    frame_timer_.cancel();
    std::string payload;
    payload.swap(payload_);
    payload.resize(frame_len_);
    bool more = dispatch_frame(payload);
    release_payload();  // the frame was decoded (a batch's parts charge the budget themselves)
    return more;
  }

  bool dispatch_frame(std::string_view payload) {
    const bool control = ingest_.role_ == Role::kControl;
    switch (static_cast<proto::FrameType>(frame_type_)) {
      case proto::FrameType::kHello:
        return on_hello(payload);
      case proto::FrameType::kBatch:
        if (control) {
          fatal("BATCH is not accepted on the control socket: send batches to ingest.socket");
          return false;
        }
        return on_batch(payload);
      case proto::FrameType::kSubscribe:
        return on_subscribe(payload);
      case proto::FrameType::kControl:
        if (!control) {
          fatal(
              "CONTROL commands are served on the control socket (control.socket, "
              "ringmail-ctl), not on the ingest socket");
          return false;
        }
        return on_control(payload);
      default:
        fatal("unexpected frame type " + std::to_string(frame_type_));
        return false;
    }
  }

  bool on_hello(std::string_view payload) {
    auto h = proto::decode_hello(payload);
    if (!h.ok()) {
      fatal("bad HELLO: " + h.error().message);
      return false;
    }
    if (h->version_min > proto::kProtocolVersion || h->version_max < proto::kProtocolVersion) {
      fatal("no common protocol version: server speaks " + std::to_string(proto::kProtocolVersion));
      return false;
    }
    const IngestConfig& ic = shard_.config().ingest;
    proto::Hello reply;
    reply.version_min = proto::kProtocolVersion;
    reply.version_max = proto::kProtocolVersion;
    reply.version = proto::kProtocolVersion;
    reply.peer_name = "ringmail";
    reply.max_frame = ic.max_frame_bytes;
    reply.max_message = ic.max_message_bytes;
    reply.max_recipients = ic.max_recipients;
    std::string out;
    proto::encode_hello(out, reply);
    queue_frame(proto::FrameType::kHello, out);
    hello_ = true;
    shard_.timers().schedule(&idle_timer_, shard_.clock().now() + ic.idle_timeout);
    return true;
  }

  bool require_hello() {
    if (!hello_) {
      fatal("the first frame must be HELLO");
      return false;
    }
    return true;
  }

  bool on_batch(std::string_view payload) {
    if (!require_hello()) {
      return false;
    }
    const IngestConfig& ic = shard_.config().ingest;
    proto::BatchLimits limits;
    limits.max_message = ic.max_message_bytes;
    limits.max_recipients = ic.max_recipients;
    uint64_t seq = ++batch_seq_;
    acks_.emplace_back();
    failpoint("ingest_batch");
    auto batch = proto::decode_batch(payload, limits);
    if (!batch.ok()) {
      proto::Ack ack;
      ack.status = proto::AckStatus::kRejected;
      ack.reason = batch.error().message;
      ack_ready(seq, std::move(ack));
      return true;
    }
    BatchInput in;
    in.batch_id = batch->batch_id;
    in.sender = batch->sender;
    in.message = batch->message;
    in.recipients = std::move(batch->recipients);
    in.origin = id_;
    in.options = std::move(batch->options);
    in.recipient_vars = std::move(batch->recipient_vars);
    in.unsubscribed = std::move(batch->unsubscribed);
    // The acknowledgement may come later (after the spool's fsync), on this
    // shard; the connection may be gone by then.
    Ingest* ingest = &ingest_;
    uint64_t conn = id_;
    shard_.runtime().submit_batch(in, static_cast<int>(shard_.id()),
                                  [ingest, conn, seq](proto::Ack ack) {
                                    auto it = ingest->conns_.find(conn);
                                    if (it != ingest->conns_.end()) {
                                      it->second->ack_ready(seq, std::move(ack));
                                    }
                                  });
    return true;
  }

  /// Stores the ACK of batch `seq` and sends every ACK that is now next in
  /// order: ACKs leave in batch order whatever order they complete in.
  void ack_ready(uint64_t seq, proto::Ack ack) {
    shard_.stats()
        .batches[static_cast<size_t>(BatchSource::kSocket)][static_cast<size_t>(ack.status)]
        .fetch_add(1, std::memory_order_relaxed);
    ack.seq = seq;
    size_t slot = static_cast<size_t>(seq - acked_);
    if (slot == 0 || slot > acks_.size()) {
      return;
    }
    acks_[slot - 1] = std::move(ack);
    while (!acks_.empty() && acks_.front().has_value()) {
      std::string out;
      proto::encode_ack(out, *acks_.front());
      acks_.pop_front();
      ++acked_;
      queue_frame(proto::FrameType::kAck, out);
    }
  }

  bool on_subscribe(std::string_view payload) {
    if (!require_hello()) {
      return false;
    }
    proto::FieldReader r(payload);
    proto::Field f;
    bool own = false;
    for (;;) {
      auto more = r.next(&f);
      if (!more.ok()) {
        fatal("bad SUBSCRIBE: " + more.error().message);
        return false;
      }
      if (!*more) {
        break;
      }
      if (f.tag == proto::tag::kScope) {
        auto v = proto::field_uint(f, 1);
        if (!v.ok() || *v > 1) {
          fatal("bad SUBSCRIBE scope");
          return false;
        }
        own = *v == 1;
      } else if ((f.tag & proto::tag::kOptionalBit) == 0) {
        fatal("unknown SUBSCRIBE field " + std::to_string(f.tag));
        return false;
      }
    }
    if (!own && ingest_.role_ != Role::kControl) {
      fatal(
          "SUBSCRIBE to every client's events is served on the control socket "
          "(control.socket); here only scope=own (this connection's batches)");
      return false;
    }
    if (!subscribed_) {
      subscribed_ = true;
      ingest_.subscribers_.push_back(this);
      shard_.runtime().add_socket_subscriber(1);
    }
    own_only_ = own;
    return true;
  }

  bool on_control(std::string_view payload) {
    if (!require_hello()) {
      return false;
    }
    ++controls_pending_;
    start_control(shard_, id_, payload);
    return true;
  }

 public:
  void control_answered() {
    if (controls_pending_ > 0) {
      --controls_pending_;
    }
  }

 private:
  void on_send(int res, uint32_t /*flags*/) {
    sending_ = false;
    if (dropped_) {
      return;  // its buffer is gone: a send that completed anyway changes nothing
    }
    if (res < 0) {
      if (res != -ECANCELED) {
        drop();
      }
      return;
    }
    sent_ += static_cast<size_t>(res);
    flush();
  }

  void on_noop(int, uint32_t) {}

  static void on_frame_timer(void* self) {
    auto* c = static_cast<Conn*>(self);
    c->fatal("frame not completed within ingest.frame_timeout; it was not acknowledged");
    c->ingest_.flush();
  }

  static void on_idle_timer(void* self) {
    auto* c = static_cast<Conn*>(self);
    const IngestConfig& ic = c->shard_.config().ingest;
    if (!c->hello_) {
      c->fatal("no HELLO within ingest.hello_timeout (" + std::to_string(ic.hello_timeout.count()) +
               "ms)");
    } else if (c->started_frame() || !c->acks_.empty() || c->controls_pending_ > 0 ||
               c->subscribed_) {
      // Waiting for us (an ACK, a reply) or for events: not idle.
      c->shard_.timers().schedule(&c->idle_timer_, c->shard_.clock().now() + ic.idle_timeout);
      return;
    } else {
      c->fatal("idle for ingest.idle_timeout (" + std::to_string(ic.idle_timeout.count()) +
               "ms) with nothing in progress: closed");
    }
    c->ingest_.flush();
  }

  void maybe_finish_close() {
    if (!closing_ || ops_ != 0) {
      return;
    }
    if (sent_ < sending_buf_.size() || !out_.empty()) {
      if (fd_ >= 0) {
        flush();  // the farewell ERROR frame goes first
        if (ops_ != 0) {
          return;
        }
      }
    }
    if (finished_) {
      return;
    }
    finished_ = true;
    frame_timer_.cancel();
    idle_timer_.cancel();
    release_payload();
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (subscribed_) {
      shard_.runtime().add_socket_subscriber(-1);
    }
    ingest_.conn_closed(this);
  }

  static constexpr size_t kRecvBuf = 64 * 1024;

  Ingest& ingest_;
  Shard& shard_;
  int fd_;
  uint64_t id_;
  Op recv_op_, send_op_, cancel_op_;
  Timer frame_timer_;
  Timer idle_timer_;  // hello_timeout, then idle_timeout
  uint32_t ops_ = 0;
  uint32_t controls_pending_ = 0;
  bool recv_armed_ = false;
  bool direct_ = false;
  bool sending_ = false;
  bool closing_ = false;
  bool dropped_ = false;  // closed without a farewell: pending output was discarded
  bool finished_ = false;
  bool hello_ = false;
  bool subscribed_ = false;
  bool own_only_ = false;
  char header_[proto::kFrameHeaderSize];
  size_t header_have_ = 0;
  bool in_payload_ = false;
  uint8_t frame_type_ = 0;
  size_t frame_len_ = 0;  // the frame being read: its announced length
  std::string payload_;   // grows as its bytes arrive (reserve_payload)
  size_t payload_have_ = 0;
  uint64_t charged_ = 0;  // payload_ bytes charged to Ingest::charge
  uint64_t batch_seq_ = 0;
  uint64_t acked_ = 0;                          // ACKs sent so far (batch_seq of the last one)
  std::deque<std::optional<proto::Ack>> acks_;  // batches acked_+1.. in order
  std::string out_;
  std::string sending_buf_;
  size_t sent_ = 0;
  char rbuf_[kRecvBuf];
};

void Ingest::Conn::start_control(Shard& shard, uint64_t conn, std::string_view line) {
  Ingest* ingest = &ingest_;
  shard.runtime().control(line, static_cast<int>(shard.id()),
                          [ingest, conn](std::string json) { ingest->control_reply(conn, json); });
}

void Ingest::control_reply(uint64_t conn, std::string_view json) {
  auto it = conns_.find(conn);
  if (it != conns_.end() && !it->second->closing()) {
    it->second->control_answered();
    it->second->queue_frame(proto::FrameType::kControlReply, json);
  }
}

void Ingest::AcceptOp::complete(int res, uint32_t flags) {
  ingest->on_accept(res, flags);
}

Ingest::Ingest(Shard& shard, int listen_fd, Role role)
    : shard_(shard),
      listen_fd_(listen_fd),
      role_(role),
      peers_(role == Role::kControl ? shard.config().control.peers : shard.config().ingest.peers) {
  accept_op_.ingest = this;
}

bool Ingest::charge(uint64_t n) {
  const Config& c = shard_.config();
  std::atomic<uint64_t>* budget = shard_.runtime().budget_counter();
  if (buffered_ + n > c.ingest.max_buffered_bytes ||
      budget->load(std::memory_order_relaxed) + n > c.limits.max_queued_bytes) {
    return false;
  }
  buffered_ += n;
  budget->fetch_add(n, std::memory_order_relaxed);
  return true;
}

void Ingest::release(uint64_t n) {
  if (n == 0) {
    return;
  }
  buffered_ -= n;
  shard_.runtime().budget_counter()->fetch_sub(n, std::memory_order_relaxed);
}

std::string Ingest::check_peer(int fd) const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return std::string("cannot read the peer's credentials: ") + std::strerror(errno);
  }
  std::vector<uint32_t> gids{static_cast<uint32_t>(cred.gid)};
  gid_t groups[64];
  socklen_t glen = sizeof groups;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
    for (size_t i = 0; i < glen / sizeof(gid_t); ++i) {
      gids.push_back(static_cast<uint32_t>(groups[i]));
    }
  }
  if (peers_.allows(static_cast<uint32_t>(cred.uid), gids, static_cast<uint32_t>(::geteuid()))) {
    return "";
  }
  const char* key = role_ == Role::kControl ? "control" : "ingest";
  RM_LOG_WARN(
      "%s socket: connection from uid %u (pid %d) refused: not in %s.allowed_users or "
      "%s.allowed_groups",
      key, static_cast<unsigned>(cred.uid), static_cast<int>(cred.pid), key, key);
  return "permission denied: uid " + std::to_string(cred.uid) + " may not use this socket (" + key +
         ".allowed_users / " + key + ".allowed_groups)";
}

Ingest::~Ingest() {
  for (auto& [id, c] : conns_) {
    delete c;
  }
  for (Conn* c : graveyard_) {
    delete c;
  }
}

void Ingest::start() {
  arm_accept();
}

void Ingest::arm_accept() {
  if (stopping_ || accept_armed_) {
    return;
  }
  accept_armed_ = true;
  shard_.ring().accept(listen_fd_, &accept_op_, /*multishot=*/true);
}

void Ingest::on_accept(int res, uint32_t flags) {
  bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) {
    accept_armed_ = false;
  }
  if (res < 0) {
    if (res != -ECANCELED && res != -EAGAIN && res != -EINTR) {
      RM_LOG_WARN("ingest accept: %s", std::strerror(-res));
    }
  } else if (stopping_) {
    ::close(res);
  } else {
    auto* c = new Conn(*this, res, next_id_++);
    conns_.emplace(c->id(), c);
    std::string denied = check_peer(res);
    if (!denied.empty()) {
      c->fatal(denied);
    } else if (conns_.size() > shard_.config().ingest.max_connections) {
      c->fatal("too many connections (ingest.max_connections)");
    } else {
      c->start();
    }
  }
  if (!more && !stopping_) {
    arm_accept();
  }
}

void Ingest::mark_dirty(Conn* c) {
  dirty_.push_back(c);
}

void Ingest::flush() {
  for (Conn* c : graveyard_) {
    delete c;
  }
  graveyard_.clear();
  std::vector<Conn*> d;
  d.swap(dirty_);
  std::sort(d.begin(), d.end());
  d.erase(std::unique(d.begin(), d.end()), d.end());
  for (Conn* c : d) {
    if (conns_.contains(c->id())) {
      c->flush();
    }
  }
}

void Ingest::conn_closed(Conn* c) {
  conns_.erase(c->id());
  std::erase(subscribers_, c);
  std::erase(dirty_, c);
  // Not deleted here: this runs inside the connection's own completion.
  graveyard_.push_back(c);
}

void Ingest::deliver_events(std::string_view records) {
  while (records.size() >= 12) {
    uint64_t origin;
    uint32_t len;
    std::memcpy(&origin, records.data(), 8);
    std::memcpy(&len, records.data() + 8, 4);
    records.remove_prefix(12);
    std::string_view json = records.substr(0, len);
    records.remove_prefix(std::min<size_t>(len, records.size()));
    for (Conn* c : std::vector<Conn*>(subscribers_)) {
      if (!c->closing() && (!c->own_only() || c->id() == origin)) {
        c->queue_frame(proto::FrameType::kEvent, json);
      }
    }
  }
}

void Ingest::stop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  if (accept_armed_) {
    shard_.ring().cancel(&accept_op_, nullptr);
  }
  for (auto& [id, c] : std::unordered_map<uint64_t, Conn*>(conns_)) {
    c->fatal("ringmail is shutting down");
  }
  flush();
}

}  // namespace ringmail::engine
