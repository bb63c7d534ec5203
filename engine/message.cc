#include "engine/message.h"

#include "engine/dkim.h"
#include "engine/out_buffer.h"

namespace ringmail::engine {

RefPtr<Message> Message::create(MessageInit init) {
  auto* m = new Message();
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

void Message::append_wire(OutBuffer& out, bool stuffed, const RefPtr<Message>& self,
                          std::string_view /*vars*/) const {
  if (!signature_.empty()) {
    out.add_external(signature_, self);
  }
  out.add_external(stuffed ? data_body() : bdat_body(), self);
}

uint64_t Message::wire_size(std::string_view /*vars*/) const {
  return signature_.size() + size();
}

size_t Message::footprint() const {
  return sizeof(Message) + normalized_.capacity() + stuffed_.capacity() + batch_id_.capacity() +
         sender_.capacity() + signature_.capacity();
}

}  // namespace ringmail::engine
