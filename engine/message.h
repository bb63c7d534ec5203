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
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "proto/message_body.h"
#include "proto/result.h"
#include "proto/template.h"

namespace ringmail::engine {
class OutBuffer;
class DkimSigner;
class Personalisation;
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
  /// Personalised messages (Personalisation::create): the shared template,
  /// and the variables of each recipient of the job this message belongs
  /// to (index = the job's recipient index; copied). `raw` is ignored.
  std::shared_ptr<const Personalisation> personal;
  std::vector<std::string_view> rcpt_vars;
};

/// A template shared by every per-shard Message of one personalised batch:
/// the parsed template (proto/template.h) and how each rendered copy is
/// signed. Immutable after create(); any thread may read it.
class Personalisation {
 public:
  /// Parses the CRLF-normalised `normalized` as a template. With a signer
  /// that has keys for the signing domain (`dkim_domain`, else the From
  /// field of the template), every rendered copy is signed at `time_s`;
  /// when the template has no placeholder the one signature is made here.
  /// Errors: template syntax, signing domain (see DkimSigner::signing_domain).
  static Result<std::shared_ptr<const Personalisation>> create(
      std::string_view normalized, std::shared_ptr<const DkimSigner> signer,
      std::string_view dkim_domain, int64_t time_s);

  const proto::Template& tmpl() const { return tmpl_; }
  /// The signing domain ("" when copies are not signed).
  const std::string& dkim_domain() const { return domain_; }
  int64_t dkim_time_s() const { return time_s_; }
  /// The DKIM-Signature field(s) for the copy rendered with `vars` (bound
  /// by proto::bind_vars); empty when unsigned.
  Result<std::string> sign(const proto::BoundVars& vars) const;
  size_t footprint() const { return sizeof(*this) + tmpl_.footprint() + shared_sig_.size(); }

 private:
  Personalisation() = default;
  proto::Template tmpl_;
  std::shared_ptr<const DkimSigner> signer_;
  std::string domain_;
  int64_t time_s_ = 0;
  std::string shared_sig_;  // the template has no placeholder: one signature for all
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
  /// Personalised: the template text (reports quote it; sends render it).
  std::string_view bdat_body() const;
  std::string_view data_body() const { return stuffed_.empty() ? normalized_ : stuffed_; }
  /// Bytes of the normalised message (without the DKIM-Signature fields;
  /// what goes on the wire and is announced with SIZE= is wire_size()).
  uint64_t size() const { return bdat_body().size(); }
  /// The DKIM-Signature field(s) sent before the body (CRLF-terminated), or
  /// empty when the message is not signed.
  std::string_view dkim_signature() const { return signature_; }
  /// Why signing failed (a malformed header section, no or several From
  /// fields, an unknown dkim_domain), or empty. The message is then
  /// unsigned; the caller decides whether to refuse it.
  const std::string& dkim_error() const { return dkim_error_; }
  /// Personalised: the template and its signing, or null.
  const Personalisation* personal() const { return personal_.get(); }
  bool personalised() const { return personal_ != nullptr; }
  /// Personalised: recipient `idx`'s encoded variables (the view the
  /// scheduler passes as SessionTxn::vars and append_wire's `vars`).
  std::string_view rcpt_vars(uint32_t idx) const {
    return idx + 1 < vars_off_.size()
               ? std::string_view(vars_).substr(vars_off_[idx], vars_off_[idx + 1] - vars_off_[idx])
               : std::string_view();
  }
  /// Appends the message as it goes on the wire to `out`: the DKIM-Signature
  /// segment when signed, then the BDAT form, or with `stuffed` the DATA
  /// form (without the final ".\r\n"). Shared bytes are referenced in place
  /// (`self` keeps them alive); only per-recipient parts are copied. `vars`
  /// are the recipient's personalisation values (empty for shared messages).
  /// Personalised messages render the template: static parts by reference,
  /// values and the copy's own DKIM-Signature copied. A personalised
  /// Message belongs to one job, so to one shard: only that shard's thread
  /// calls these (the signature cache below is not synchronised).
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
  std::shared_ptr<const Personalisation> personal_;
  std::string vars_;                // every recipient's variables, back to back
  std::vector<uint32_t> vars_off_;  // recipient i: [vars_off_[i], vars_off_[i+1])
  // Signatures of recently rendered copies, keyed by their vars view:
  // wire_size() and append_wire() of one transaction sign once.
  struct SigCacheEntry {
    const char* key = nullptr;
    size_t len = 0;
    std::string sig;
  };
  static constexpr size_t kSigCache = 8;
  mutable SigCacheEntry sig_cache_[kSigCache];
  mutable size_t sig_next_ = 0;
  const std::string& copy_signature(std::string_view vars, const proto::BoundVars& bound) const;
};

using MessageRef = RefPtr<Message>;

}  // namespace ringmail::engine
