// ServerSession: STARTTLS (CVE-2011-0411, RFC 3207 4.2) and AUTH (RFC 4954).
#include "proto/smtp_server.h"

#include <gtest/gtest.h>

#include "proto/smtp_command.h"
#include "tests/proto/server_harness.h"

namespace ringmail::proto {
namespace {

using Action = ServerSession::Action;
using test::Harness;

ServerConfig tls_config() {
  ServerConfig c;
  c.starttls = true;
  c.auth_mechs = kAuthPlain | kAuthLogin;
  return c;
}

// CVE-2011-0411 and RFC 3207 4.2.
TEST(ServerSession, StartTlsDiscardsInjectedPlaintextAndResetsState) {
  Harness h(tls_config());
  std::string ehlo = h.send("EHLO c\r\n");
  EXPECT_NE(ehlo.find("250-STARTTLS\r\n"), std::string::npos);
  EXPECT_EQ(ehlo.find("AUTH"), std::string::npos);  // no plaintext AUTH
  EXPECT_EQ(h.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@x.example>\r\n"),
            "220 2.0.0 Ready to start TLS\r\n");
  EXPECT_EQ(h.last, Action::kStartTls);
  EXPECT_EQ(h.s.plaintext_discarded(), 34u);
  EXPECT_TRUE(h.leftover.empty());
  EXPECT_EQ(h.decisions.back(), DecisionKind::kStartTls);
  // Plaintext arriving during the handshake is discarded too.
  EXPECT_EQ(h.send("RSET\r\n"), "");
  EXPECT_EQ(h.last, Action::kStartTls);
  h.s.tls_established();
  EXPECT_TRUE(h.s.tls_active());
  EXPECT_EQ(h.s.helo_name(), "");
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
  std::string after = h.send("EHLO c\r\n");
  EXPECT_EQ(after.find("STARTTLS"), std::string::npos);
  EXPECT_NE(after.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
  EXPECT_EQ(h.send("STARTTLS\r\n"), "554 5.5.1 Error: TLS already active\r\n");
}

TEST(ServerSession, StartTlsRefusedOrOutOfSequence) {
  Harness h(tls_config());
  EXPECT_EQ(h.send("STARTTLS\r\n"), "503 5.5.1 Error: send EHLO first\r\n");
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(h.send("STARTTLS\r\n"), "503 5.5.1 Error: MAIL transaction in progress\r\n");
  h.send("RSET\r\n");
  h.decide = [](ServerSession& s) { s.respond(454, "4.7.0 TLS not available"); };
  EXPECT_EQ(h.send("STARTTLS\r\n"), "454 4.7.0 TLS not available\r\n");
  EXPECT_EQ(h.last, Action::kNeedInput);
  h.decide = [](ServerSession& s) { s.accept(); };
  EXPECT_EQ(h.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(ServerSession, AuthPlainWithInitialResponse) {
  Harness h(tls_config());
  h.s.set_tls_active(true);
  h.send("EHLO c\r\n");
  std::string ir;
  append_base64(ir, std::string("admin\0user\0secret", 17));
  EXPECT_EQ(h.send("AUTH PLAIN " + ir + "\r\n"), "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(h.auth_seen, (std::vector<std::string>{"PLAIN:admin:user:secret"}));
  EXPECT_TRUE(h.s.authenticated());
  EXPECT_EQ(h.s.auth_user(), "user");
  EXPECT_EQ(h.send("AUTH PLAIN " + ir + "\r\n"), "503 5.5.1 Error: already authenticated\r\n");
}

TEST(ServerSession, AuthPlainPipelinedWithMail) {
  ServerConfig c = tls_config();
  c.require_auth = true;
  Harness h(c);
  h.s.set_tls_active(true);
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "530 5.7.0 Authentication required\r\n");
  std::string ir;
  append_base64(ir, std::string("\0u\0p", 4));
  EXPECT_EQ(h.send("AUTH PLAIN " + ir + "\r\nMAIL FROM:<a@b.example>\r\n"),
            "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n");
}

TEST(ServerSession, AuthLoginExchangeAndFailure) {
  Harness h(tls_config());
  h.s.set_tls_active(true);
  h.decide = [](ServerSession& s) {
    if (s.decision().kind == DecisionKind::kAuth) {
      s.respond(535, "5.7.8 Authentication credentials invalid");
    } else {
      s.accept();
    }
  };
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
  std::string user;
  append_base64(user, "bob");
  EXPECT_EQ(h.send(user + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
  std::string pass;
  append_base64(pass, "hunter2");
  EXPECT_EQ(h.send(pass + "\r\n"), "535 5.7.8 Authentication credentials invalid\r\n");
  EXPECT_EQ(h.auth_seen, (std::vector<std::string>{"LOGIN::bob:hunter2"}));
  EXPECT_FALSE(h.s.authenticated());
  EXPECT_EQ(h.s.auth_failures(), 1u);
  // LOGIN with the user name as initial response.
  EXPECT_EQ(h.send("AUTH LOGIN " + user + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(h.send("*\r\n"), "501 5.7.0 Authentication cancelled\r\n");
  EXPECT_EQ(h.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

TEST(ServerSession, AuthErrors) {
  struct Case {
    std::vector<std::string> script;
    std::string last_reply;
  };
  const Case cases[] = {
      {{"AUTH PLAIN\r\n"}, "503 5.5.1 Error: send EHLO first\r\n"},
      {{"EHLO c\r\n", "AUTH CRAM-MD5\r\n"},
       "504 5.5.4 Error: unsupported authentication mechanism\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN\r\n"}, "334 \r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN\r\n", "*\r\n"}, "501 5.7.0 Authentication cancelled\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN\r\n", "!!!!\r\n"}, "501 5.5.2 Error: cannot decode response\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN dXNlcg==\r\n"}, "501 5.5.2 Error: malformed PLAIN response\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN AAA=\r\n"}, "501 5.5.2 Error: malformed PLAIN response\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN =\r\n"}, "501 5.5.2 Error: malformed PLAIN response\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "AUTH PLAIN\r\n"},
       "503 5.5.1 Error: MAIL transaction in progress\r\n"},
  };
  for (const Case& c : cases) {
    Harness h(tls_config());
    h.s.set_tls_active(true);
    std::string out;
    for (const std::string& line : c.script) {
      out = h.send(line);
    }
    EXPECT_EQ(out, c.last_reply) << c.script.back();
    EXPECT_TRUE(h.auth_seen.empty());
  }
}

TEST(ServerSession, AuthRefusedWithoutTls) {
  Harness h(tls_config());
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("AUTH PLAIN AHUAcA==\r\n"),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
  ServerConfig lax = tls_config();
  lax.allow_plaintext_auth = true;
  Harness p(lax);
  EXPECT_NE(p.send("EHLO c\r\n").find("AUTH PLAIN LOGIN"), std::string::npos);
  EXPECT_EQ(p.send("AUTH PLAIN AHUAcA==\r\n"), "235 2.7.0 Authentication successful\r\n");
}

TEST(ServerSession, AuthStateDroppedAfterStartTls) {
  ServerConfig c = tls_config();
  c.allow_plaintext_auth = true;
  Harness h(c);
  h.send("EHLO c\r\n");
  h.send("AUTH PLAIN AHUAcA==\r\n");
  ASSERT_TRUE(h.s.authenticated());
  h.send("STARTTLS\r\n");
  ASSERT_EQ(h.last, Action::kStartTls);
  h.s.tls_established();
  EXPECT_FALSE(h.s.authenticated());
  EXPECT_EQ(h.s.auth_user(), "");
}

TEST(ServerSession, AuthLinePipeliningIsRefused) {
  Harness h(tls_config());
  h.s.set_tls_active(true);
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("AUTH LOGIN\r\nYm9i\r\n"), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
  Harness h2(tls_config());
  h2.s.set_tls_active(true);
  h2.send("EHLO c\r\n");
  h2.send("AUTH LOGIN\r\n");
  EXPECT_EQ(h2.send("Ym9i\r\naHVudGVy\r\n"), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
}

}  // namespace
}  // namespace ringmail::proto
