/// batch_client.h — a client of the ringmail batch protocol for tools and
/// tests (ringmail-inject, ringmail-bench, ringmail-ctl, e2e tests).
///
/// One non-blocking Unix-socket connection driven with poll(2): batches are
/// queued and written as the socket accepts them (pipelined), frames are
/// returned as they arrive. Not part of the daemon; plain syscalls are fine
/// here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/batch_wire.h"
#include "proto/result.h"

namespace ringmail::tools {

struct Frame {
  proto::FrameType type;
  std::string payload;
};

class BatchClient {
 public:
  BatchClient() = default;
  ~BatchClient();
  BatchClient(BatchClient&& o) noexcept;
  BatchClient& operator=(BatchClient&&) = delete;
  BatchClient(const BatchClient&) = delete;

  /// Connects and exchanges HELLO (waits up to `timeout_ms` for the reply).
  static Result<BatchClient> connect(const std::string& socket_path, std::string_view name,
                                     int timeout_ms = 10'000);
  const proto::Hello& server_hello() const { return hello_; }
  const std::string& server_name() const { return server_name_; }

  void queue_batch(const proto::BatchView& batch);
  void queue_frame(proto::FrameType type, std::string_view payload);
  /// Subscribes to events (own batches only, or all).
  void subscribe(bool own_only);
  size_t pending_output() const { return out_.size() - out_off_; }

  /// Writes what it can and returns the next complete frame, waiting up to
  /// `timeout_ms` (-1: forever). nullopt on timeout. Errors: the connection
  /// closed or failed.
  Result<std::optional<Frame>> next(int timeout_ms);
  /// Writes all queued output (waiting as needed) without reading frames
  /// beyond what arrives meanwhile (they stay buffered).
  Result<void> flush(int timeout_ms);

 private:
  std::optional<Frame> take_frame(Result<void>* err);
  Result<void> io(int timeout_ms, bool want_read);

  int fd_ = -1;
  std::string out_;
  size_t out_off_ = 0;
  std::string in_;
  size_t in_off_ = 0;
  proto::Hello hello_;
  std::string server_name_;
};

/// Extracts a top-level string or number field from one of ringmail's event
/// JSON objects (flat, produced by format_event_json). Returns "" if absent.
std::string event_field(std::string_view json, std::string_view key);

}  // namespace ringmail::tools
