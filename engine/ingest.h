/// ingest.h — the batch protocol servers on the Unix sockets
/// (docs/protocol.md): the ingest socket and the control socket.
///
/// Runs on shard 0's ring. Each client connection reads frames (HELLO
/// first, then pipelined BATCH frames, SUBSCRIBE, CONTROL), answers every
/// BATCH with exactly one ACK in order, and streams EVENT frames to
/// subscribers. The two sockets serve different parties:
///   - ingest (ingest.socket): BATCH, and SUBSCRIBE to the client's own
///     batches' events. CONTROL and subscriptions to everyone's events are
///     refused with an ERROR frame naming the control socket;
///   - control (control.socket): CONTROL commands (ringmail-ctl) and
///     SUBSCRIBE to all events; BATCH is refused.
/// Every connection's peer credentials (SO_PEERCRED, SO_PEERGROUPS) are
/// checked against the socket's PeerPolicy (allowed_users/allowed_groups):
/// a refused peer gets an ERROR frame and is closed, and the log names its
/// uid and pid.
///
/// Bounds, each with its overflow behaviour:
///   - ingest.max_connections: further clients get an ERROR frame and are
///     closed;
///   - ingest.max_frame_bytes: a larger frame header gets an ERROR frame
///     and the connection is closed (the stream cannot be resynchronised);
///   - memory: a frame's buffer grows with the bytes that actually arrive
///     (never from the announced length alone), and all clients' buffers
///     together stay within ingest.max_buffered_bytes and the memory
///     budget (limits.max_queued_bytes, which they are charged to). A frame
///     that would go over is refused: ERROR, close, nothing of it taken;
///   - ingest.frame_timeout: a frame that has started must complete in
///     time (slow-loris), else ERROR and close — nothing of it is acked;
///   - ingest.hello_timeout: HELLO must arrive this soon after connecting;
///   - ingest.idle_timeout: a client with nothing in progress (no frame
///     started, no batch awaiting its ACK, no command awaiting its reply,
///     no subscription) that sends nothing for this long is closed;
///   - ingest.max_subscriber_backlog: a subscriber that stops reading is
///     sent ERROR and closed once this many bytes wait for it, instead of
///     growing memory. Its events are still in the event file.
/// A client that disconnects mid-frame loses only that frame, which was
/// never acknowledged; other clients are unaffected.
/// Thread safety: shard 0's thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/ring.h"
#include "engine/timer_wheel.h"

namespace ringmail::engine {

class Shard;
struct PeerPolicy;

class Ingest {
 public:
  enum class Role : uint8_t { kBatches, kControl };
  Ingest(Shard& shard, int listen_fd, Role role);
  ~Ingest();
  Ingest(const Ingest&) = delete;
  Ingest& operator=(const Ingest&) = delete;

  void start();
  /// Stops accepting and closes every client (after what was queued for
  /// them is attempted once).
  void stop();
  bool stopped() const { return stopping_ && conns_.empty() && !accept_armed_; }
  /// Starts sends for connections with output. Once per loop iteration.
  void flush();
  /// Event records from any shard: repeated [u64 origin][u32 len][json].
  void deliver_events(std::string_view records);
  size_t connections() const { return conns_.size(); }
  /// Frame bytes buffered over all clients of this server.
  uint64_t buffered() const { return buffered_; }
  /// Sends a CONTROL_REPLY to client `conn` if it is still connected.
  void control_reply(uint64_t conn, std::string_view json);

  class Conn;

 private:
  struct AcceptOp final : Completion {
    Ingest* ingest;
    void complete(int res, uint32_t flags) override;
  };
  friend class Conn;
  void arm_accept();
  void on_accept(int res, uint32_t flags);
  void conn_closed(Conn* c);
  void mark_dirty(Conn* c);
  /// Reserves `n` more bytes of frame buffer: false when that would pass
  /// ingest.max_buffered_bytes or the memory budget.
  bool charge(uint64_t n);
  void release(uint64_t n);
  /// Empty when the connected peer may use this socket, else why not.
  std::string check_peer(int fd) const;

  Shard& shard_;
  int listen_fd_;
  Role role_;
  const PeerPolicy& peers_;
  uint64_t buffered_ = 0;
  AcceptOp accept_op_;
  bool accept_armed_ = false;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Conn*> conns_;
  std::vector<Conn*> dirty_;
  std::vector<Conn*> subscribers_;
  std::vector<Conn*> graveyard_;  // closed, deleted at the next flush()
};

}  // namespace ringmail::engine
