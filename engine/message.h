/// message.h — a batch's immutable, shared content.
///
/// A batch is one message and many recipients. The message (envelope
/// sender, batch id, and the body in its two wire forms) is built once at
/// ingest and then only read, by every shard and every connection that
/// carries one of its recipients, straight from this memory (scatter/gather
/// sends). Forms:
///   - bdat_body(): the CRLF-normalised body, sent as a BDAT chunk;
///   - data_body(): the dot-stuffed form for DATA (the same bytes when no
///     line starts with '.'), followed on the wire by ".\r\n".
/// Both are computed once per message, never per recipient or connection.
/// DKIM (engine/dkim.h): when MessageInit names a signer, the normalised
/// message is signed once here; the DKIM-Signature field(s) are kept apart
/// and sent as their own segment before the shared body (append_wire), so
/// signing copies nothing. A signature never needs dot-stuffing (its lines
/// start with "DKIM-Signature:" or a TAB).
///
/// Lifetime: intrusive atomic reference count (MessageRef). Any thread may
/// hold a reference; the last release frees it on whichever thread that is
/// (mimalloc returns cross-thread frees to the owning heap cheaply).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "engine/clock.h"
#include "proto/message_body.h"

namespace ringmail::engine {
class OutBuffer;
class DkimSigner;
}  // namespace ringmail::engine

namespace ringmail::engine {

template <class T>
class RefPtr {
 public:
  RefPtr() = default;
  explicit RefPtr(T* p) : p_(p) {}  // adopts one reference
  RefPtr(const RefPtr& o) : p_(o.p_) {
    if (p_ != nullptr) {
      p_->add_ref();
    }
  }
  RefPtr(RefPtr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  RefPtr& operator=(RefPtr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~RefPtr() {
    if (p_ != nullptr) {
      p_->release();
    }
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};

struct MessageInit {
  std::string batch_id;
  std::string sender;  // bare reverse-path; empty = null sender
  bool sender_utf8 = false;
  std::string_view raw;   // the platform's bytes (copied once, normalised)
  uint64_t origin = 0;    // ingest connection id (0 = embedding API)
  std::string auth_user;  // submission listener user, if any
  uint32_t pool = 0;      // egress pool (Config::egress.pools index)
  /// Memory budget counter the message's bytes are charged to (may be null);
  /// the charge is returned when the message is freed.
  std::atomic<uint64_t>* budget = nullptr;
  int64_t accepted_wall_ms = 0;
  TimePoint accepted_at{};
  /// DKIM: sign with every key of the signing domain (the From domain, or
  /// `dkim_domain` when set: a batch option). Null: unsigned. The signer
  /// must only live through create().
  const DkimSigner* dkim = nullptr;
  std::string dkim_domain;
  int64_t dkim_time_s = 0;  // t= (seconds since the epoch)
};

class Message {
 public:
  static RefPtr<Message> create(MessageInit init);

  void add_ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete this;
    }
  }

  const std::string& batch_id() const { return batch_id_; }
  const std::string& sender() const { return sender_; }
  bool sender_utf8() const { return sender_utf8_; }
  std::string_view bdat_body() const { return normalized_; }
  std::string_view data_body() const { return stuffed_.empty() ? normalized_ : stuffed_; }
  /// Bytes of the normalised message (without the DKIM-Signature fields;
  /// what goes on the wire and is announced with SIZE= is wire_size()).
  uint64_t size() const { return normalized_.size(); }
  /// The DKIM-Signature field(s) sent before the body (CRLF-terminated), or
  /// empty when the message is not signed.
  std::string_view dkim_signature() const { return signature_; }
  /// Why signing failed (a malformed header section, no or several From
  /// fields, an unknown dkim_domain), or empty. The message is then
  /// unsigned; the caller decides whether to refuse it.
  const std::string& dkim_error() const { return dkim_error_; }
  /// Appends the message as it goes on the wire to `out`: the DKIM-Signature
  /// segment when signed, then the BDAT form, or with `stuffed` the DATA
  /// form (without the final ".\r\n"). Shared bytes are referenced in place
  /// (`self` keeps them alive); only per-recipient parts are copied. `vars`
  /// are the recipient's personalisation values (empty for shared messages).
  void append_wire(OutBuffer& out, bool stuffed, const RefPtr<Message>& self,
                   std::string_view vars) const;
  /// The size of what append_wire(…, stuffed = false, …, vars) sends.
  uint64_t wire_size(std::string_view vars) const;
  bool eight_bit() const { return info_.eight_bit; }
  const proto::BodyInfo& body_info() const { return info_; }
  uint64_t origin() const { return origin_; }
  uint32_t pool() const { return pool_; }
  const std::string& auth_user() const { return auth_user_; }
  int64_t accepted_wall_ms() const { return accepted_wall_ms_; }
  TimePoint accepted_at() const { return accepted_at_; }
  /// Approximate heap bytes held, for the memory budget.
  size_t footprint() const;

 private:
  Message() = default;
  ~Message() {
    if (budget_ != nullptr) {
      budget_->fetch_sub(charged_, std::memory_order_relaxed);
    }
  }

  std::atomic<uint32_t> refs_{1};
  proto::BodyInfo info_;
  std::string batch_id_;
  std::string sender_;
  bool sender_utf8_ = false;
  std::string normalized_;
  std::string stuffed_;    // empty unless some line starts with '.'
  std::string signature_;  // DKIM-Signature field(s), or empty
  std::string dkim_error_;
  uint64_t origin_ = 0;
  uint32_t pool_ = 0;
  std::atomic<uint64_t>* budget_ = nullptr;
  uint64_t charged_ = 0;
  std::string auth_user_;
  int64_t accepted_wall_ms_ = 0;
  TimePoint accepted_at_{};
};

using MessageRef = RefPtr<Message>;

}  // namespace ringmail::engine
