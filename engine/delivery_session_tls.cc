// DeliverySession before the session is ready: STARTTLS (RFC 3207) and
// AUTH to smart hosts (RFC 4954). See delivery_session.h for the contract.
#include "engine/delivery_session.h"
#include "proto/smtp_command.h"

namespace ringmail::engine {

void DeliverySession::set_tls_policy(TlsPolicy policy) {
  RM_ASSERT(phase_ == Phase::kConnecting);
  options_.tls = policy;
}

void DeliverySession::on_starttls_reply(const proto::Reply& r) {
  if (r.code == 421) {
    return;  // the server is closing: handle_reply ends the session
  }
  if (r.code == 220) {
    if (surplus_) {
      on_tls_failed(
          "response injection: the server sent more after its 220 reply to STARTTLS; "
          "nothing of it was used");
      return;
    }
    phase_ = Phase::kTlsHandshake;
    return;
  }
  if (r.is_positive() || r.is_intermediate()) {
    protocol_error("unexpected reply to STARTTLS: " + r.summary());
    return;
  }
  if (tls_mandatory()) {
    refuse(Stage::kTls,
           proto::make_reply(451,
                             "4.7.4 TLS is required for this destination, but the server "
                             "refused STARTTLS: " +
                                 r.summary()));
    return;
  }
  begin_session();  // opportunistic: the server may go on in plaintext (RFC 3207 4)
}

void DeliverySession::on_tls_established() {
  RM_ASSERT(phase_ == Phase::kTlsHandshake);
  // RFC 3207 4.2: discard everything learnt from the server before TLS.
  tls_active_ = true;
  caps_ = proto::Capabilities{};
  parser_.reset();
  auto ok = proto::append_ehlo(out_.cmd(), options_.ehlo_name);
  RM_ASSERT(ok.ok());
  out_.commit();
  phase_ = Phase::kEhlo;
  expect(ExpectKind::kEhlo);
}

void DeliverySession::on_tls_failed(std::string_view what) {
  RM_ASSERT(phase_ == Phase::kTlsHandshake || phase_ == Phase::kStartTls ||
            (phase_ == Phase::kConnecting && options_.implicit_tls));
  failure_stage_ = Stage::kTls;
  plaintext_retry_ = options_.tls == TlsPolicy::kOpportunistic && !options_.implicit_tls;
  fail(proto::make_reply(451, "4.7.5 TLS failed " + std::string(what)), true);
}

void DeliverySession::begin_session() {
  if (options_.auth_user.empty()) {
    phase_ = Phase::kReady;
    return;
  }
  start_auth();
}

void DeliverySession::start_auth() {
  if (!tls_active_ && !options_.auth_plaintext) {
    refuse(Stage::kAuth, proto::make_reply(451,
                                           "4.7.10 AUTH credentials are only sent over TLS "
                                           "(auth_plaintext is off) and this session has no TLS"));
    return;
  }
  if ((caps_.auth & proto::kAuthPlain) != 0) {
    auto ok = proto::append_auth_plain(out_.cmd(), options_.auth_user, options_.auth_password);
    if (!ok.ok()) {
      refuse(Stage::kAuth,
             proto::make_reply(451, "4.7.0 unusable AUTH credentials: " + ok.error().message));
      return;
    }
    auth_step_ = AuthStep::kPlain;
  } else if ((caps_.auth & proto::kAuthLogin) != 0) {
    out_.cmd().append("AUTH LOGIN\r\n");
    auth_step_ = AuthStep::kLoginUser;
  } else {
    refuse(Stage::kAuth, proto::make_reply(451,
                                           "4.7.4 the server offers no AUTH mechanism "
                                           "ringmail supports (PLAIN, LOGIN)"));
    return;
  }
  out_.commit();
  phase_ = Phase::kAuth;
  expect(ExpectKind::kAuth);
}

void DeliverySession::on_auth_reply(const proto::Reply& r) {
  if (r.code == 421) {
    return;  // handle_reply ends the session
  }
  const bool login_prompt =
      auth_step_ == AuthStep::kLoginUser || auth_step_ == AuthStep::kLoginPassword;
  if (login_prompt && r.code == 334) {
    const std::string& secret =
        auth_step_ == AuthStep::kLoginUser ? options_.auth_user : options_.auth_password;
    proto::append_base64(out_.cmd(), secret);
    out_.cmd().append("\r\n");
    out_.commit();
    auth_step_ =
        auth_step_ == AuthStep::kLoginUser ? AuthStep::kLoginPassword : AuthStep::kLoginDone;
    expect(ExpectKind::kAuth);
    return;
  }
  if (!login_prompt && r.code == 235) {
    phase_ = Phase::kReady;
    return;
  }
  failure_stage_ = Stage::kAuth;
  if (r.is_intermediate()) {
    // A challenge we cannot answer: the exchange is not at a command
    // boundary, so no QUIT.
    fail(proto::make_reply(451, "4.7.0 unexpected AUTH challenge: " + r.summary()), true);
    return;
  }
  // 535 and friends: the server's own words, deferred (R26: a bad password
  // in the configuration must never bounce mail).
  refuse(Stage::kAuth, r);
}

void DeliverySession::refuse(Stage stage, const proto::Reply& reply) {
  failure_stage_ = stage;
  fail(reply, true);
  send_quit();
}

}  // namespace ringmail::engine
