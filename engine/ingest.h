/// ingest.h — the batch protocol server on the Unix socket (docs/protocol.md).
///
/// Runs on shard 0's ring. Each client connection reads frames (HELLO
/// first, then pipelined BATCH frames, SUBSCRIBE, CONTROL), answers every
/// BATCH with exactly one ACK in order, and streams EVENT frames to
/// subscribers. Bounds, each with its overflow behaviour:
///   - ingest.max_connections: further clients get an ERROR frame and are
///     closed;
///   - ingest.max_frame_bytes: a larger frame header gets an ERROR frame
///     and the connection is closed (the stream cannot be resynchronised);
///   - ingest.frame_timeout: a frame that has started must complete in
///     time (slow-loris), else ERROR and close — nothing of it is acked;
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

class Ingest {
 public:
  Ingest(Shard& shard, int listen_fd);
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

  Shard& shard_;
  int listen_fd_;
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
