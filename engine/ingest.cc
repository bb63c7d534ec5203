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
        frame_timer_(&Conn::on_frame_timer, this) {
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

  void start() { arm_recv(); }

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

  void arm_recv() {
    if (recv_armed_ || closing_ || fd_ < 0) {
      return;
    }
    recv_armed_ = true;
    ++ops_;
    // A large payload is read straight into its own buffer.
    if (in_payload_ && payload_.size() - payload_have_ > kRecvBuf) {
      shard_.ring().recv(fd_, payload_.data() + payload_have_, payload_.size() - payload_have_,
                         &recv_op_);
      direct_ = true;
    } else {
      shard_.ring().recv(fd_, rbuf_, kRecvBuf, &recv_op_);
      direct_ = false;
    }
  }

  void stop_reading() {
    frame_timer_.cancel();
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
      if (payload_have_ == payload_.size()) {
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
        payload_.resize(h->length);
        payload_have_ = 0;
        in_payload_ = true;
      }
      size_t take = std::min(in.size(), payload_.size() - payload_have_);
      std::memcpy(payload_.data() + payload_have_, in.data(), take);
      payload_have_ += take;
      in.remove_prefix(take);
      if (payload_have_ == payload_.size() && !frame_complete()) {
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
    switch (static_cast<proto::FrameType>(frame_type_)) {
      case proto::FrameType::kHello:
        return on_hello(payload);
      case proto::FrameType::kBatch:
        return on_batch(payload);
      case proto::FrameType::kSubscribe:
        return on_subscribe(payload);
      case proto::FrameType::kControl:
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
    start_control(shard_, id_, payload);
    return true;
  }

  void on_send(int res, uint32_t /*flags*/) {
    sending_ = false;
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
  uint32_t ops_ = 0;
  bool recv_armed_ = false;
  bool direct_ = false;
  bool sending_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool hello_ = false;
  bool subscribed_ = false;
  bool own_only_ = false;
  char header_[proto::kFrameHeaderSize];
  size_t header_have_ = 0;
  bool in_payload_ = false;
  uint8_t frame_type_ = 0;
  std::string payload_;
  size_t payload_have_ = 0;
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
    it->second->queue_frame(proto::FrameType::kControlReply, json);
  }
}

void Ingest::AcceptOp::complete(int res, uint32_t flags) {
  ingest->on_accept(res, flags);
}

Ingest::Ingest(Shard& shard, int listen_fd) : shard_(shard), listen_fd_(listen_fd) {
  accept_op_.ingest = this;
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
    if (conns_.size() > shard_.config().ingest.max_connections) {
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
