// One submission client: the session's decisions (see submission.h).
#include "engine/submission_conn.h"

#include <algorithm>

namespace ringmail::engine {

using proto::DecisionKind;
using submission_internal::printable;
using submission_internal::rfc5322_date;

// Feeds buffered input to the session until it needs more input, waits for
// something (an acknowledgement, the client reading its replies, a
// handshake) or closes.
void Submission::Conn::drive() {
  if (in_drive_) {
    return;  // an acknowledgement answered synchronously inside decide()
  }
  in_drive_ = true;
  while (state_ == State::kOpen && !tls_handshaking_ && !waiting_ && !output_blocked_ &&
         !tls_failed_) {
    auto [used, action] =
        session_.feed(std::span<const char>(in_ + in_begin_, in_end_ - in_begin_));
    in_begin_ += used;
    take_output();
    if (action == Action::kNeedInput) {
      if (pull_plaintext() > 0) {
        continue;
      }
      if (peer_eof_) {
        begin_close();  // close_notify or EOF: answer what was asked, then close
      }
      break;
    }
    if (action == Action::kDecide) {
      decide();
      take_output();
    } else if (action == Action::kStartTls) {
      // The 220 is queued in plaintext; everything the client pipelined
      // after STARTTLS was discarded by the session (CVE-2011-0411).
      if (session_.plaintext_discarded() > 0) {
        RM_LOG_WARN("submission: %llu plaintext bytes after STARTTLS from %s discarded",
                    static_cast<unsigned long long>(session_.plaintext_discarded()), peer_.c_str());
      }
      in_begin_ = in_end_ = 0;
      start_tls();
      break;
    } else if (action == Action::kClose) {
      begin_close();
      break;
    }
    // kFlush: take_output() emptied the session's buffer; go on.
  }
  in_drive_ = false;
  if (tls_failed_ && state_ == State::kOpen) {
    finish();
    return;
  }
  if (state_ == State::kDead) {
    return;
  }
  flush();
  arm_recv();
  update_deadlines();
}

// After the session moved: which deadlines run, and whether the session is
// one that may be reclaimed (see submission.h).
void Submission::Conn::update_deadlines() {
  using Awaiting = proto::ServerSession::Awaiting;
  TimePoint now = shard_.clock().now();
  const bool open = state_ == State::kOpen && !tls_handshaking_ && !waiting_;
  const Awaiting awaiting = open ? session_.awaiting() : Awaiting::kNothing;
  const bool progressed = session_.commands() != command_mark_;
  // A line: timed from its first byte. Lines that completed end their
  // deadline; one begun behind them (pipelined, or left while a decision
  // was pending) gets its own.
  if (awaiting != Awaiting::kLine) {
    command_timer_.cancel();
  } else if (session_.partial_line() || in_begin_ != in_end_) {
    if (!command_timer_.armed() || progressed) {
      arm_command_deadline(now);
    }
  } else if (progressed) {
    command_timer_.cancel();  // nothing of the next line yet
  }
  // Message content: from its start (the 354, or the first BDAT chunk
  // until the LAST one), grace + bytes / data_min_rate.
  if (awaiting == Awaiting::kContent || (awaiting == Awaiting::kLine && session_.chunking())) {
    const SubmissionConfig& sc = shard_.config().submission;
    if (!content_started_) {
      content_started_ = true;
      content_start_ = now;
      content_base_ = session_.content_bytes();
    }
    // Saturated: bytes beyond 2^50 change nothing that matters.
    uint64_t got = std::min<uint64_t>(session_.content_bytes() - content_base_, 1ull << 50);
    auto allowed = sc.data_rate_grace + Millis(got * 1000 / sc.data_min_rate);
    shard_.timers().schedule(&content_timer_, content_start_ + allowed);
  } else {
    content_started_ = false;
    content_timer_.cancel();
  }
  // Waiting for a command: reclaimable when max_sessions is full; the
  // wait is timed from the last completed command.
  WaitList* list = nullptr;
  if (awaiting == Awaiting::kLine && !session_.chunking() && slot_ == Slot::kSession) {
    list = session_.in_transaction() ? &owner_.idle_tx_ : &owner_.idle_;
  }
  bool moved = list != wait_.list || (list != nullptr && session_.commands() != wait_mark_);
  if (wait_.list != &owner_.handshakes_ && moved) {
    if (wait_.list != nullptr) {
      wait_.list->remove(this);
    }
    if (list != nullptr) {
      list->push_back(this, now);
    }
  }
  wait_mark_ = session_.commands();
}

void Submission::Conn::cut_off(std::string_view why, const char* limit) {
  RM_LOG_INFO("submission: %.*s from %s (%s): closing", static_cast<int>(why.size()), why.data(),
              peer_.c_str(), limit);
  shard_.stats().submission_timeouts.fetch_add(1, std::memory_order_relaxed);
  session_.close_with(421, "4.4.2 " + session_config().hostname + " Error: " + std::string(why));
  take_output();
  begin_close();
}

void Submission::Conn::decide() {
  const proto::Decision& d = session_.decision();
  switch (d.kind) {
    case DecisionKind::kHelo:
    case DecisionKind::kMail:
      session_.accept();
      return;
    case DecisionKind::kRcpt:
      on_rcpt(d);
      return;
    case DecisionKind::kMessage:
      on_message(d);
      return;
    case DecisionKind::kStartTls:
      if (listener_.tls != nullptr && tls_ == nullptr) {
        session_.accept();
      } else {
        session_.respond(454, "4.7.0 TLS not available");
      }
      return;
    case DecisionKind::kAuth:
      on_auth(*d.auth);
      return;
    case DecisionKind::kNone:
      return;
  }
}

void Submission::Conn::on_rcpt(const proto::Decision& d) {
  const proto::Mailbox& mb = d.command->path;
  std::string addr = printable(mb.str(), 256);
  if (!session_.authenticated() && !trusted_) {
    session_.respond(554, "5.7.1 <" + addr + ">: Relay access denied");
  } else if (mb.domain.empty()) {
    session_.respond(550, "5.1.1 <" + addr + ">: no local mailboxes here");
  } else if (mb.domain_literal) {
    session_.respond(550, "5.1.2 <" + addr + ">: address literals are not routable here");
  } else {
    session_.accept();
  }
}

std::string Submission::Conn::received_header() const {
  const bool esmtp = session_.ehlo();
  std::string proto = esmtp ? "ESMTP" : "SMTP";
  if (esmtp && session_.tls_active()) {
    proto += "S";
  }
  if (esmtp && session_.authenticated()) {
    proto += "A";
  }
  std::string ip = peer_.substr(0, peer_.rfind(':'));
  std::string h = "Received: from " + printable(session_.helo_name()) + " (" + ip + ")\r\n\tby " +
                  session_config().hostname + " (ringmail) with " + proto;
  if (!tls_summary_.empty()) {
    h += "\r\n\t(" + tls_summary_ + ")";
  }
  h += ";\r\n\t" + rfc5322_date(shard_.clock().wall_ms()) + "\r\n";
  return h;
}

void Submission::Conn::on_message(const proto::Decision& d) {
  const proto::Transaction& tx = *d.transaction;
  std::string message = received_header();
  message += session_.take_body();
  std::string sender = tx.null_sender ? std::string() : tx.sender.str();
  std::vector<std::string> rcpts;
  rcpts.reserve(tx.recipients.size());
  for (const proto::Recipient& r : tx.recipients) {
    rcpts.push_back(r.mailbox.str());
  }
  BatchInput in;
  in.sender = sender;
  in.message = message;
  for (const auto& r : rcpts) {
    in.recipients.push_back(r);
  }
  std::string user(session_.auth_user());
  in.auth_user = user;
  in.origin = 0;  // not a batch-socket client: events go to every subscriber
  waiting_ = true;
  Submission* owner = &owner_;
  uint64_t id = id_;
  // The acknowledgement may come now, or later on this shard (after the
  // spool's write); the connection may be gone by then.
  shard_.runtime().submit_batch(in, static_cast<int>(shard_.id()),
                                [owner, id](proto::Ack ack) { owner->on_ack(id, std::move(ack)); });
}

void Submission::Conn::on_ack(proto::Ack ack) {
  if (!waiting_ || state_ != State::kOpen) {
    return;
  }
  waiting_ = false;
  switch (ack.status) {
    case proto::AckStatus::kAccepted:
      RM_LOG_DEBUG("submission: %s from %s user=%s: %u recipients queued as %s",
                   session_.tls_active() ? "TLS" : "plaintext", peer_.c_str(),
                   std::string(session_.auth_user()).c_str(), ack.accepted, ack.batch_id.c_str());
      session_.respond(250, "2.0.0 Ok: queued as " + ack.batch_id);
      break;
    case proto::AckStatus::kTryLater:
      session_.respond(452, "4.3.1 " + ack.reason);
      break;
    case proto::AckStatus::kSpoolUnavailable:
      session_.respond(451, "4.3.0 " + ack.reason);
      break;
    case proto::AckStatus::kRejected:
      session_.respond(554, "5.6.0 message refused: " + ack.reason);
      break;
  }
  take_output();
  drive();
}

void Submission::Conn::on_auth(const proto::AuthRequest& a) {
  AuthFailureLimiter& limiter = owner_.limiter_;
  TimePoint now = shard_.clock().now();
  // Counted before the check, as pending: attempts sent at once from one
  // address start at most auth_fail_limit checks.
  if (!limiter.begin(key_, now)) {
    RM_LOG_WARN(
        "submission: AUTH refused from %s: too many failed or pending attempts "
        "(auth_fail_limit)",
        peer_.c_str());
    session_.respond(454, "4.7.0 Too many failed authentication attempts; try again later");
    return;
  }
  if (!a.authzid.empty() && a.authzid != a.user) {
    // An authorization identity other than the user would let one account
    // act as another: refused like a bad password.
    limiter.end(key_, now, /*failed=*/true);
    owner_.log_auth_failure(peer_, a.user);
    session_.respond(535, "5.7.8 Authentication credentials invalid");
    return;
  }
  waiting_ = true;
  auth_user_ = printable(a.user);
  auth_mech_ = a.mechanism;
  if (!owner_.check_auth(this, a)) {
    limiter.end(key_, now, /*failed=*/false);  // never checked
    waiting_ = false;
    session_.respond(454, "4.3.2 Authentication service busy; try again later");
  }
}

void Submission::Conn::on_auth_result(bool ok) {
  if (!waiting_ || state_ != State::kOpen) {
    return;
  }
  waiting_ = false;
  if (ok) {
    RM_LOG_INFO("submission: AUTH %s user=%s from %s", auth_mech_.c_str(), auth_user_.c_str(),
                peer_.c_str());
    session_.accept();
  } else {
    session_.respond(535, "5.7.8 Authentication credentials invalid");
  }
  take_output();
  drive();
}

}  // namespace ringmail::engine
