#include "engine/dsn.h"

#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/shard.h"

namespace ringmail::engine {

DsnCollector::Pending::Pending(DsnCollector* o) : owner(o), timer(&DsnCollector::on_timer, this) {}

DsnCollector::~DsnCollector() = default;

void DsnCollector::bounced(const Message& msg, std::string_view recipient,
                           const proto::Reply& reply, std::string_view remote_mta,
                           int64_t last_attempt_wall_ms) {
  if (!shard_.config().bounces.dsn || msg.sender().empty()) {
    return;
  }
  auto& slot = pending_[&msg];
  if (!slot) {
    slot = std::make_unique<Pending>(this);
    const_cast<Message&>(msg).add_ref();
    slot->msg = MessageRef(const_cast<Message*>(&msg));
    shard_.timers().schedule(&slot->timer,
                             shard_.clock().now() + shard_.config().bounces.dsn_delay);
  }
  proto::DsnRecipient r;
  r.recipient = std::string(recipient);
  r.status = reply.enhanced.present() ? reply.enhanced.str() : "5.0.0";
  r.remote_mta = std::string(remote_mta);
  r.diagnostic = reply.summary();
  if (last_attempt_wall_ms > 0) {
    r.last_attempt_date = proto::rfc5322_date(last_attempt_wall_ms / 1000);
  }
  slot->rcpts.push_back(std::move(r));
  if (slot->rcpts.size() >= kMaxPerReport) {
    slot->timer.cancel();
    flush(slot.get());
  }
}

void DsnCollector::on_timer(void* p) {
  auto* pending = static_cast<Pending*>(p);
  pending->owner->flush(pending);
}

void DsnCollector::flush(Pending* p) {
  std::unique_ptr<Pending> owned = std::move(pending_[p->msg.get()]);
  pending_.erase(p->msg.get());
  const Message& m = *p->msg;
  const Config& c = shard_.config();
  int64_t now_s = shard_.clock().wall_ms() / 1000;
  ++reports_;
  proto::DsnInput in;
  in.reporting_mta = c.delivery.ehlo_name;
  in.to = m.sender();
  in.envelope_id = m.batch_id();
  in.arrival_date = proto::rfc5322_date(m.accepted_wall_ms() / 1000);
  in.date = proto::rfc5322_date(now_s);
  std::string unique = std::to_string(shard_.clock().wall_ms()) + "." +
                       std::to_string(shard_.id()) + "." + std::to_string(reports_);
  in.message_id = "<dsn." + unique + "@" + c.delivery.ehlo_name + ">";
  in.boundary = "ringmail-dsn-" + unique;
  in.recipients = std::move(p->rcpts);
  in.original = m.bdat_body();
  std::string report;
  proto::build_dsn(report, in);
  BatchInput b;
  std::string id = m.batch_id() + "-dsn" + std::to_string(reports_);
  b.batch_id = id;
  b.sender = "";
  b.message = report;
  b.recipients.push_back(m.sender());
  std::string what = m.batch_id() + " to " + m.sender();
  shard_.runtime().submit_batch(b, static_cast<int>(shard_.id()), [what](proto::Ack ack) {
    if (ack.status != proto::AckStatus::kAccepted) {
      RM_LOG_WARN("delivery report for batch %s not queued: %s", what.c_str(), ack.reason.c_str());
    }
  });
}

}  // namespace ringmail::engine
