#include "engine/message.h"

#include "engine/dkim.h"
#include "engine/log.h"
#include "engine/out_buffer.h"
#include "proto/dkim.h"

namespace ringmail::engine {

Result<std::shared_ptr<const Personalisation>> Personalisation::create(
    std::string_view normalized, std::shared_ptr<const DkimSigner> signer,
    std::string_view dkim_domain, int64_t time_s) {
  auto t = proto::Template::parse(normalized);
  if (!t.ok()) {
    return make_error(Errc::kInvalidArgument, "template: " + t.error().message);
  }
  std::shared_ptr<Personalisation> p(new Personalisation());
  p->tmpl_ = std::move(*t);
  p->time_s_ = time_s;
  if (signer != nullptr && !signer->empty()) {
    // The signing domain comes from the template's own header section:
    // a From field whose domain is a placeholder cannot choose a key.
    auto split = proto::split_header(p->tmpl_.text());
    if (!split.ok()) {
      return make_error(Errc::kInvalidArgument, "DKIM: " + split.error().message);
    }
    auto domain = signer->signing_domain(*split, dkim_domain);
    if (!domain.ok()) {
      return make_error(Errc::kInvalidArgument, "DKIM: " + domain.error().message);
    }
    p->domain_ = std::move(*domain);
    if (!p->domain_.empty()) {
      p->signer_ = std::move(signer);
      if (!p->tmpl_.has_vars()) {
        auto sig = p->signer_->sign(p->tmpl_.text(), time_s, p->domain_);
        if (!sig.ok()) {
          return make_error(Errc::kInvalidArgument, "DKIM: " + sig.error().message);
        }
        p->shared_sig_ = std::move(*sig);
      }
    }
  }
  return std::shared_ptr<const Personalisation>(std::move(p));
}

Result<std::string> Personalisation::sign(const proto::BoundVars& vars) const {
  if (signer_ == nullptr) {
    return std::string();
  }
  if (!tmpl_.has_vars()) {
    return shared_sig_;  // every copy is the same message: signed once
  }
  // Deterministic (RSA PKCS#1 v1.5, Ed25519; fixed t=): a copy re-signed
  // after a restart is byte-identical to the one signed before it.
  std::string copy = proto::render_to_string(tmpl_, vars, /*stuffed=*/false);
  return signer_->sign(copy, time_s_, domain_);
}

namespace {

/// Sends rendered pieces: static text by reference, values copied.
class WireSink final : public proto::RenderSink {
 public:
  WireSink(OutBuffer& out, const RefPtr<Message>& self) : out_(out), self_(self) {}
  void shared(std::string_view bytes) override { out_.add_external(bytes, self_); }
  void copied(std::string_view bytes) override {
    out_.cmd().append(bytes);
    out_.commit();
  }

 private:
  OutBuffer& out_;
  const RefPtr<Message>& self_;
};

proto::BoundVars bind_or_die(const proto::Template& t, std::string_view vars) {
  // Variables were checked against the template at acceptance and at
  // spool recovery; a failure here is a broken invariant.
  auto bound = proto::bind_vars(t, vars, "");
  RM_ASSERT(bound.ok());
  return std::move(*bound);
}

}  // namespace

RefPtr<Message> Message::create(MessageInit init) {
  auto* m = new Message();
  if (init.personal != nullptr) {
    m->batch_id_ = std::move(init.batch_id);
    m->sender_ = std::move(init.sender);
    m->sender_utf8_ = init.sender_utf8;
    m->origin_ = init.origin;
    m->pool_ = init.pool;
    m->auth_user_ = std::move(init.auth_user);
    m->accepted_wall_ms_ = init.accepted_wall_ms;
    m->accepted_at_ = init.accepted_at;
    m->personal_ = std::move(init.personal);
    // Static text decides 8BITMIME and stuffing for every copy; values
    // with 8-bit bytes also count (an over-estimate for the others).
    m->info_ = proto::scan_body(m->personal_->tmpl().text());
    size_t total = 0;
    for (std::string_view v : init.rcpt_vars) {
      total += v.size();
    }
    m->vars_.reserve(total);
    m->vars_off_.reserve(init.rcpt_vars.size() + 1);
    m->vars_off_.push_back(0);
    for (std::string_view v : init.rcpt_vars) {
      for (unsigned char c : v) {
        if (c >= 0x80) {
          m->info_.eight_bit = true;
          break;
        }
      }
      m->vars_.append(v);
      m->vars_off_.push_back(static_cast<uint32_t>(m->vars_.size()));
    }
    if (init.budget != nullptr) {
      m->budget_ = init.budget;
      m->charged_ = m->footprint();
      m->budget_->fetch_add(m->charged_, std::memory_order_relaxed);
    }
    return RefPtr<Message>(m);
  }
  m->batch_id_ = std::move(init.batch_id);
  m->sender_ = std::move(init.sender);
  m->sender_utf8_ = init.sender_utf8;
  m->origin_ = init.origin;
  m->pool_ = init.pool;
  m->auth_user_ = std::move(init.auth_user);
  m->accepted_wall_ms_ = init.accepted_wall_ms;
  m->accepted_at_ = init.accepted_at;
  m->normalized_.reserve(init.raw.size() + init.raw.size() / 64 + 2);
  m->info_ = proto::normalize_body(init.raw, m->normalized_);
  m->normalized_.shrink_to_fit();
  if (m->info_.needs_stuffing) {
    m->stuffed_.reserve(m->normalized_.size() + 64);
    proto::append_dot_stuffed(m->normalized_, m->stuffed_);
  }
  if (init.dkim != nullptr && !init.dkim->empty()) {
    // Sign once: every recipient, transaction and connection sends these
    // same bytes (RFC 6376 signs the message as transmitted, unstuffed).
    auto sig = init.dkim->sign(m->normalized_, init.dkim_time_s, init.dkim_domain);
    if (sig.ok()) {
      m->signature_ = std::move(*sig);
    } else {
      m->dkim_error_ = std::move(sig).take_error().message;
    }
  }
  if (init.budget != nullptr) {
    m->budget_ = init.budget;
    m->charged_ = m->footprint();
    m->budget_->fetch_add(m->charged_, std::memory_order_relaxed);
  }
  return RefPtr<Message>(m);
}

std::string_view Message::bdat_body() const {
  return personal_ != nullptr ? personal_->tmpl().text() : std::string_view(normalized_);
}

const std::string& Message::copy_signature(std::string_view vars,
                                           const proto::BoundVars& bound) const {
  for (const SigCacheEntry& e : sig_cache_) {
    if (e.key == vars.data() && e.len == vars.size() && e.key != nullptr) {
      return e.sig;
    }
  }
  SigCacheEntry& e = sig_cache_[sig_next_++ % kSigCache];
  auto sig = personal_->sign(bound);
  // Signing a bound, validated copy fails only on wolfSSL errors (memory,
  // RNG): the copy then goes unsigned rather than not at all.
  e.sig = sig.ok() ? std::move(*sig) : std::string();
  e.key = vars.data() != nullptr ? vars.data() : "";
  e.len = vars.size();
  return e.sig;
}

void Message::append_wire(OutBuffer& out, bool stuffed, const RefPtr<Message>& self,
                          std::string_view vars) const {
  if (personal_ != nullptr) {
    proto::BoundVars bound = bind_or_die(personal_->tmpl(), vars);
    const std::string& sig = copy_signature(vars, bound);
    if (!sig.empty()) {
      out.cmd().append(sig);
      out.commit();
    }
    WireSink sink(out, self);
    proto::render(personal_->tmpl(), bound, stuffed, sink);
    return;
  }
  if (!signature_.empty()) {
    out.add_external(signature_, self);
  }
  out.add_external(stuffed ? data_body() : bdat_body(), self);
}

uint64_t Message::wire_size(std::string_view vars) const {
  if (personal_ != nullptr) {
    proto::BoundVars bound = bind_or_die(personal_->tmpl(), vars);
    return copy_signature(vars, bound).size() + proto::rendered_size(personal_->tmpl(), bound);
  }
  return signature_.size() + size();
}

size_t Message::footprint() const {
  return sizeof(Message) + normalized_.capacity() + stuffed_.capacity() + batch_id_.capacity() +
         sender_.capacity() + signature_.capacity() + vars_.capacity() +
         vars_off_.capacity() * sizeof(uint32_t);
}

}  // namespace ringmail::engine
