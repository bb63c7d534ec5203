// ServerSession: the AUTH exchange (RFC 4954, SASL PLAIN RFC 4616, LOGIN).
#include <algorithm>

#include "proto/smtp_command.h"
#include "proto/smtp_server.h"

namespace ringmail::proto {

namespace {

constexpr std::string_view kLoginUserChallenge = "334 VXNlcm5hbWU6\r\n";      // "Username:"
constexpr std::string_view kLoginPasswordChallenge = "334 UGFzc3dvcmQ6\r\n";  // "Password:"

}  // namespace

bool ServerSession::auth_offered() const {
  return (config_.auth_mechs & (kAuthPlain | kAuthLogin)) != 0;
}

void ServerSession::on_auth() {
  const std::string& mech = cmd_.arg;
  if (!ehlo_) {
    reply(503, "5.5.1 Error: send EHLO first");
  } else if (!auth_offered()) {
    reply(503, "5.5.1 Error: authentication not enabled");
  } else if (authenticated_) {
    reply(503, "5.5.1 Error: already authenticated");
  } else if (tx_active_) {
    reply(503, "5.5.1 Error: MAIL transaction in progress");
  } else if (!tls_active_ && !config_.allow_plaintext_auth) {
    reply(538, "5.7.11 Encryption required for requested authentication mechanism");
  } else if (!(mech == "PLAIN" && (config_.auth_mechs & kAuthPlain) != 0) &&
             !(mech == "LOGIN" && (config_.auth_mechs & kAuthLogin) != 0)) {
    reply(504, "5.5.4 Error: unsupported authentication mechanism");
  } else {
    wipe_auth_request();
    auth_.mechanism = mech;
    auth_step_ = mech == "PLAIN" ? AuthStep::kPlain : AuthStep::kLoginUser;
    phase_ = Phase::kAuthResponse;
    framer_.set_max_line(config_.max_auth_line);
    if (!cmd_.has_auth_initial) {
      out_.append(mech == "PLAIN" ? std::string_view("334 \r\n") : kLoginUserChallenge);
      return;
    }
    // RFC 4954 4: "=" is an empty initial response.
    auth_continue(cmd_.auth_initial == "=" ? std::string_view() : cmd_.auth_initial);
  }
}

void ServerSession::wipe_auth_request() {
  auth_.mechanism.clear();
  auth_.authzid.clear();
  auth_.user.clear();
  std::fill(auth_.password.begin(), auth_.password.end(), '\0');
  auth_.password.clear();
}

void ServerSession::end_auth() {
  phase_ = Phase::kCommand;
  framer_.set_max_line(config_.max_line);
}

size_t ServerSession::read_auth_line(std::span<const char> in, bool* need_input) {
  if (in.empty()) {
    *need_input = true;
    return 0;
  }
  ParseResult r = framer_.feed(in);
  if (r.status == ParseStatus::kNeedMore) {
    *need_input = true;
    return r.consumed;
  }
  if (!count_command()) {
    return r.consumed;
  }
  if (config_.forbid_unauth_pipelining && r.consumed < in.size()) {
    protocol_violation("unauthorized pipelining during AUTH");
    return r.consumed;
  }
  if (r.status == ParseStatus::kError) {
    end_auth();
    reply(500, "5.5.6 Error: authentication exchange line is too long");
    return r.consumed;
  }
  std::string_view line = framer_.line();
  if (line == "*") {
    end_auth();
    reply(501, "5.7.0 Authentication cancelled");
    return r.consumed;
  }
  auth_continue(line);
  return r.consumed;
}

// Takes one base64 client response (the initial one or a continuation line).
void ServerSession::auth_continue(std::string_view b64) {
  Result<std::string> decoded = decode_base64(b64);
  if (!decoded) {
    end_auth();
    reply(501, "5.5.2 Error: cannot decode response");
    return;
  }
  switch (auth_step_) {
    case AuthStep::kPlain:
      end_auth();
      finish_plain(*decoded);
      break;
    case AuthStep::kLoginUser:
      auth_.user = std::move(*decoded);
      auth_step_ = AuthStep::kLoginPassword;
      out_.append(kLoginPasswordChallenge);
      break;
    case AuthStep::kLoginPassword:
      end_auth();
      auth_.password = std::move(*decoded);
      ask(DecisionKind::kAuth);
      break;
  }
  std::string& secret = *decoded;
  std::fill(secret.begin(), secret.end(), '\0');
}

// RFC 4616: [authzid] NUL authcid NUL passwd.
void ServerSession::finish_plain(std::string_view decoded) {
  size_t nul1 = decoded.find('\0');
  size_t nul2 = nul1 == std::string_view::npos ? nul1 : decoded.find('\0', nul1 + 1);
  if (nul2 == std::string_view::npos || decoded.find('\0', nul2 + 1) != std::string_view::npos ||
      nul2 == nul1 + 1) {
    reply(501, "5.5.2 Error: malformed PLAIN response");
    return;
  }
  auth_.authzid.assign(decoded.substr(0, nul1));
  auth_.user.assign(decoded.substr(nul1 + 1, nul2 - nul1 - 1));
  auth_.password.assign(decoded.substr(nul2 + 1));
  ask(DecisionKind::kAuth);
}

}  // namespace ringmail::proto
