#include "engine/out_buffer.h"

#include <climits>

#include "proto/result.h"

namespace ringmail::engine {

void OutBuffer::commit() {
  size_t len = staging_.cmds_.size() - committed_;
  if (len == 0) {
    return;
  }
  auto& pieces = staging_.pieces_;
  // Adjacent command bytes merge into one piece (one iovec).
  if (!pieces.empty() && pieces.back().ext == nullptr &&
      pieces.back().off + pieces.back().len == committed_) {
    pieces.back().len += len;
  } else {
    pieces.push_back({nullptr, committed_, len});
  }
  staging_.total_ += len;
  committed_ = staging_.cmds_.size();
}

void OutBuffer::add_external(std::string_view bytes, const MessageRef& holder) {
  commit();
  if (bytes.empty()) {
    return;
  }
  staging_.pieces_.push_back({bytes.data(), 0, bytes.size()});
  staging_.total_ += bytes.size();
  if (staging_.holds_.empty() || staging_.holds_.back().get() != holder.get()) {
    staging_.holds_.push_back(holder);
  }
}

void OutBuffer::add_static(std::string_view bytes) {
  commit();
  staging_.pieces_.push_back({bytes.data(), 0, bytes.size()});
  staging_.total_ += bytes.size();
}

void OutBuffer::take(SendBatch* batch) {
  commit();
  RM_ASSERT(batch->done());
  std::swap(*batch, staging_);
  batch->sent_ = 0;
  batch->piece_ = 0;
  batch->piece_off_ = 0;
  clear();
}

void OutBuffer::clear() {
  staging_.cmds_.clear();
  staging_.pieces_.clear();
  staging_.holds_.clear();
  staging_.total_ = 0;
  staging_.sent_ = 0;
  staging_.piece_ = 0;
  staging_.piece_off_ = 0;
  committed_ = 0;
}

const std::vector<iovec>& SendBatch::iov() {
  iov_.clear();
  size_t off = piece_off_;
  for (size_t i = piece_; i < pieces_.size() && iov_.size() < IOV_MAX; ++i) {
    const Piece& p = pieces_[i];
    const char* base = p.ext != nullptr ? p.ext : cmds_.data() + p.off;
    iov_.push_back(iovec{const_cast<char*>(base + off), p.len - off});
    off = 0;
  }
  return iov_;
}

void SendBatch::advance(size_t n) {
  sent_ += n;
  RM_ASSERT(sent_ <= total_);
  while (n > 0 && piece_ < pieces_.size()) {
    size_t left = pieces_[piece_].len - piece_off_;
    if (n < left) {
      piece_off_ += n;
      return;
    }
    n -= left;
    ++piece_;
    piece_off_ = 0;
  }
  if (done()) {
    // Release the message references as soon as the bytes are gone.
    holds_.clear();
  }
}

}  // namespace ringmail::engine
