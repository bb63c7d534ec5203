/// ring.h — one io_uring per shard, and the Completion contract.
///
/// Ownership: a Ring belongs to the thread that created it (it is set up
/// with IORING_SETUP_SINGLE_ISSUER when the kernel supports it). Only that
/// thread may call any method.
///
/// Completion contract (after Seastar's kernel_completion): every SQE's
/// user_data is a live Completion*, or 0 for fire-and-forget operations
/// whose result nobody needs. The Completion must outlive its SQE: an owner
/// that wants to go away first cancels its operations and waits for their
/// CQEs (see Connection::close in smtp_connection.cc).
///
/// Kernel features are probed once at creation and exposed as explicit
/// queries; every optional feature has a tested fallback:
///   - SINGLE_ISSUER (6.0) and DEFER_TASKRUN (6.1): fall back to a plain
///     ring, then to COOP_TASKRUN, then to no flags.
///   - EXT_ARG (5.11): liburing falls back to an internal timeout SQE.
///   - SEND_ZC (6.0): plain SENDMSG.
///   - multishot ACCEPT (5.19) / RECV (6.0): single-shot re-armed ops.
/// RINGMAIL_RING_FEATURES=none in the environment disables all optional
/// features, so the fallbacks can be exercised on a new kernel.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/clock.h"
#include "proto/result.h"

namespace ringmail::engine {

class Completion {
 public:
  /// Called on the ring's thread with the CQE's res and flags. May submit
  /// new operations and may destroy `this` if no other operation of it is
  /// outstanding.
  virtual void complete(int res, uint32_t flags) = 0;

 protected:
  ~Completion() = default;
};

struct RingFeatures {
  bool single_issuer = false;
  bool defer_taskrun = false;
  bool coop_taskrun = false;
  bool ext_arg = false;
  bool send_zc = false;
  bool msg_ring = false;
  bool recv_multishot = false;
  bool accept_multishot = false;

  std::string describe() const;
};

class Ring {
 public:
  struct Options {
    unsigned entries = 1024;
    bool allow_optional_features = true;  // false = oldest-kernel behaviour
  };

  static Result<std::unique_ptr<Ring>> create(const Options& options);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  const RingFeatures& features() const { return features_; }

  /// Returns a zeroed-enough SQE (prep functions fill it). Never null: when
  /// the submission queue is full it is submitted first.
  io_uring_sqe* sqe();
  static void bind(io_uring_sqe* sqe, Completion* c) { io_uring_sqe_set_data(sqe, c); }

  // Convenience wrappers: prep + bind. `c` may be null (fire and forget).
  void recv(int fd, void* buf, size_t len, Completion* c);
  void send(int fd, const void* buf, size_t len, int msg_flags, Completion* c);
  void sendmsg(int fd, const msghdr* msg, int msg_flags, Completion* c);
  void read(int fd, void* buf, size_t len, uint64_t offset, Completion* c);
  void write(int fd, const void* buf, size_t len, uint64_t offset, Completion* c);
  void connect(int fd, const sockaddr* addr, socklen_t len, Completion* c);
  void accept(int fd, Completion* c, bool multishot);
  void close(int fd, Completion* c);
  void shutdown(int fd, int how, Completion* c);
  void poll_add(int fd, unsigned mask, Completion* c);
  void poll_remove(Completion* target, Completion* c);
  /// Cancels every operation whose user_data is `target`.
  void cancel(Completion* target, Completion* c);
  void fsync(int fd, bool datasync, Completion* c);

  /// Submits pending SQEs and waits until at least one CQE is available or
  /// `timeout` passes (zero = do not block). With DEFER_TASKRUN this is also
  /// where the kernel runs deferred completion work. Returns the number of
  /// SQEs submitted or a negative errno other than ETIME/EINTR.
  int submit_and_wait(Nanos timeout);
  /// Submits pending SQEs without waiting.
  int submit();
  /// Runs every available CQE's Completion. Returns how many were reaped.
  unsigned reap();

  unsigned pending_sqes() const { return io_uring_sq_ready(&ring_); }
  int fd() const { return ring_.ring_fd; }

 private:
  Ring() = default;
  io_uring ring_{};
  RingFeatures features_;
};

}  // namespace ringmail::engine
