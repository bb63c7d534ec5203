/// out_buffer.h — bytes a session wants sent, as scatter/gather pieces.
///
/// Command lines are small and owned here; message bodies are referenced in
/// place (the Message keeps them alive through the MessageRef held with
/// them), so a body is never copied to send it. The producer (a session)
/// appends to the staging side; the driver takes everything staged as one
/// SendBatch, sends it with one sendmsg per (partial) round, and drops it
/// when fully sent. Staging may grow while a batch is in flight: the two
/// never share memory, which is what keeps in-flight iovecs valid.
/// Thread safety: one shard thread.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "engine/message.h"

namespace ringmail::engine {

class SendBatch {
 public:
  /// Builds the iovec array for the unsent part (at most IOV_MAX entries;
  /// call again after advance() for the rest).
  const std::vector<iovec>& iov();
  /// Records `n` more bytes as sent.
  void advance(size_t n);
  bool done() const { return sent_ == total_; }
  size_t total() const { return total_; }
  size_t remaining() const { return total_ - sent_; }

 private:
  friend class OutBuffer;
  struct Piece {
    const char* ext;  // nullptr: command bytes at [off, off+len) of cmds_
    size_t off;
    size_t len;
  };
  std::string cmds_;
  std::vector<Piece> pieces_;
  std::vector<MessageRef> holds_;
  std::vector<iovec> iov_;
  size_t total_ = 0;
  size_t sent_ = 0;
  size_t piece_ = 0;      // first piece not fully sent
  size_t piece_off_ = 0;  // bytes of that piece already sent
};

class OutBuffer {
 public:
  /// The string that command writers append to; call commit() after each
  /// append so the bytes become a piece.
  std::string& cmd() { return staging_.cmds_; }
  void commit();
  /// Appends a body range that lives inside `holder`.
  void add_external(std::string_view bytes, const MessageRef& holder);
  void add_static(std::string_view bytes);  // bytes with static storage
  bool empty() const { return staging_.total_ == 0 && staging_.cmds_.size() == committed_; }
  size_t size() const { return staging_.total_; }
  /// Moves everything staged into `batch` (which must be done()).
  void take(SendBatch* batch);
  void clear();

 private:
  SendBatch staging_;
  size_t committed_ = 0;  // bytes of cmds_ already turned into pieces
};

}  // namespace ringmail::engine
