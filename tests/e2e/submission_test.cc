// End to end: the submission listeners (engine/submission.h) of an embedded
// engine, against real clients — swaks (STARTTLS, implicit TLS, AUTH) — and
// raw sockets for the protocol attacks: SMTP smuggling endings, STARTTLS
// command injection, open-relay probes, AUTH brute force (concurrent too),
// the limits, trickling clients, and session and handshake floods (from
// many 127.0.0.x source addresses where the address matters).
// Accepted mail is delivered to ringmail-sink; every certificate is made by
// the test (TestPki) and the credentials by ringmail-passwd.
#include <gtest/gtest.h>

#include "proto/smtp_command.h"
#include "tests/e2e/tls_util.h"

namespace ringmail::testing {
namespace {

constexpr milliseconds kWait(20'000);

std::string swaks_path() {
  return env_or("SWAKS", "/usr/bin/swaks");
}
std::string passwd_path() {
  return env_or("RINGMAIL_PASSWD", "");
}

struct Ports {
  uint16_t starttls = 0, implicit = 0, plain = 0;
};

class SubmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok()) << pki_.log();
    ASSERT_TRUE(have_program(swaks_path())) << "swaks missing (apt-get install swaks)";
    ASSERT_TRUE(have_program(passwd_path())) << "RINGMAIL_PASSWD not set";
    ASSERT_TRUE(sink_.start({})) << sink_.error();
    // Credentials made by the tool, as an operator would.
    std::string line;
    ASSERT_TRUE(run_shell(dir_.path(),
                          "printf 'correct horse\\n' | '" + passwd_path() +
                              "' -i 1000 alice > creds.txt\n"
                              "printf 'other pw\\n' | '" +
                              passwd_path() + "' -i 1000 bob >> creds.txt\n",
                          &line))
        << line;
  }

  /// Starts the engine with the three listeners; `extra` goes into
  /// [submission] (limits, trusted_networks); `more` is appended TOML.
  void start(const std::string& extra = "", const std::string& more = "",
             const std::string& route = "") {
    ports_ = Ports{free_port(), free_port(), free_port()};
    auto good = pki_.good();
    std::string toml =
        "[delivery]\nehlo_name = \"client.test\"\ntls = \"none\"\n"
        "[routing]\ndefault = \"" +
        (route.empty() ? "127.0.0.1:" + std::to_string(sink_.port()) : route) +
        "\"\n"
        "[retry]\nschedule = [\"1h\"]\n"
        "[tls]\nhandshake_timeout = \"2s\"\n"
        "[submission]\nhostname = \"sub.test\"\ncredentials_file = \"" +
        dir_.file("creds.txt") + "\"\n" + extra +
        "\n[[submission.listeners]]\nlisten = \"127.0.0.1:" + std::to_string(ports_.starttls) +
        "\"\ntls = \"starttls\"\ncert_file = \"" + good.cert + "\"\nkey_file = \"" + good.key +
        "\"\n"
        "[[submission.listeners]]\nlisten = \"127.0.0.1:" +
        std::to_string(ports_.implicit) + "\"\ntls = \"implicit\"\ncert_file = \"" + good.cert +
        "\"\nkey_file = \"" + good.key +
        "\"\n"
        "[[submission.listeners]]\nlisten = \"127.0.0.1:" +
        std::to_string(ports_.plain) + "\"\ntls = \"none\"\n" + more;
    auto r = eng_.start(toml);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  struct Run {
    int rc;
    std::string out;
  };
  /// Starts swaks with `args` in *c (without waiting for it).
  bool start_swaks(Child* c, std::vector<std::string> args) {
    std::vector<std::string> argv = {swaks_path(),          "--ehlo",    "client.test", "--from",
                                     "sender@example.test", "--timeout", "10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return c->start(argv, dir_.path(), "swaks" + std::to_string(++runs_));
  }
  Run swaks(std::vector<std::string> args) {
    Child c;
    EXPECT_TRUE(start_swaks(&c, std::move(args)));
    int rc = c.wait(kWait);
    return Run{rc, c.out() + c.err()};
  }

  /// A client with the greeting read (TLS first on the implicit port).
  std::unique_ptr<SmtpTestClient> client(uint16_t port, bool tls = false) {
    auto c = std::make_unique<SmtpTestClient>(port);
    EXPECT_TRUE(c->connected());
    if (tls) {
      EXPECT_TRUE(c->start_tls()) << c->error();
    }
    Reply g = c->read_reply();
    EXPECT_EQ(g.code, 220) << g.str();
    return c;
  }
  /// EHLO, STARTTLS, EHLO again.
  std::unique_ptr<SmtpTestClient> starttls_client() {
    auto c = client(ports_.starttls);
    EXPECT_EQ(c->command("EHLO client.test").code, 250);
    EXPECT_EQ(c->command("STARTTLS").code, 220);
    EXPECT_TRUE(c->start_tls()) << c->error();
    EXPECT_EQ(c->command("EHLO client.test").code, 250);
    return c;
  }
  static std::string plain_auth(const std::string& user, const std::string& pw) {
    std::string raw = std::string(1, '\0') + user + std::string(1, '\0') + pw;
    std::string b64;
    proto::append_base64(b64, raw);
    return "AUTH PLAIN " + b64;
  }
  size_t delivered() {
    size_t n = 0;
    for (const auto& [rcpt, evs] : eng_.events.all()) {
      for (const auto& e : evs) {
        n += e.type == EventType::kDelivered ? 1 : 0;
      }
    }
    return n;
  }

  TestPki pki_;
  TempDir dir_;
  SinkProcess sink_;
  EmbeddedEngine eng_;
  Ports ports_;
  int runs_ = 0;
};

// --- real clients -----------------------------------------------------------

TEST_F(SubmissionTest, SwaksStartTlsAuthPlainIsQueuedAndDeliveredWithTheUser) {
  start();
  Run r = swaks({"--server", "127.0.0.1:" + std::to_string(ports_.starttls), "--to",
                 "rcpt1@dest.test", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                 "--auth-password", "correct horse"});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("250 2.0.0 Ok: queued as "), std::string::npos) << r.out;
  ASSERT_TRUE(eng_.events.wait_finals(1, kWait));
  auto evs = eng_.events.events("rcpt1@dest.test");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].type, EventType::kDelivered);
  EXPECT_NE(evs[0].json.find("\"auth_user\":\"alice\""), std::string::npos) << evs[0].json;
  EXPECT_TRUE(sink_.wait_stat("messages", 1));
}

TEST_F(SubmissionTest, SwaksImplicitTlsAuthLogin) {
  start();
  Run r = swaks({"--server", "127.0.0.1:" + std::to_string(ports_.implicit), "--to",
                 "rcpt2@dest.test", "--tls-on-connect", "--auth", "LOGIN", "--auth-user", "bob",
                 "--auth-password", "other pw"});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("235 2.7.0"), std::string::npos) << r.out;
  ASSERT_TRUE(eng_.events.wait_finals(1, kWait));
  auto evs = eng_.events.events("rcpt2@dest.test");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_NE(evs[0].json.find("\"auth_user\":\"bob\""), std::string::npos) << evs[0].json;
}

TEST_F(SubmissionTest, SwaksWrongPasswordIsRefused) {
  start();
  Run r =
      swaks({"--server", "127.0.0.1:" + std::to_string(ports_.starttls), "--to", "rcpt3@dest.test",
             "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong"});
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("535 5.7.8 Authentication credentials invalid"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("queued as"), std::string::npos);
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
}

TEST_F(SubmissionTest, SwaksWithoutTlsGetsNoAuth) {
  start();
  // AUTH is not even advertised before TLS: swaks gives up.
  Run r =
      swaks({"--server", "127.0.0.1:" + std::to_string(ports_.starttls), "--to", "rcpt4@dest.test",
             "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "correct horse"});
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_EQ(r.out.find("235 "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("queued as"), std::string::npos) << r.out;
  // And a client that tries anyway is refused (RFC 4954 4).
  auto c = client(ports_.starttls);
  Reply ehlo = c->command("EHLO client.test");
  ASSERT_EQ(ehlo.code, 250);
  for (const auto& l : ehlo.lines) {
    EXPECT_NE(l.rfind("AUTH", 0), 0u) << "AUTH advertised without TLS";
  }
  Reply a = c->command(plain_auth("alice", "correct horse"));
  EXPECT_EQ(a.code, 538) << a.str();
  EXPECT_NE(a.str().find("5.7.11"), std::string::npos);
}

TEST_F(SubmissionTest, SwaksRelayWithoutAuthIsRefused) {
  start();
  Run r = swaks({"--server", "127.0.0.1:" + std::to_string(ports_.starttls), "--to",
                 "victim@dest.test", "--tls"});
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("554 5.7.1 <victim@dest.test>: Relay access denied"), std::string::npos)
      << r.out;
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
}

// --- relay policy ------------------------------------------------------------

TEST_F(SubmissionTest, NoOpenRelayForAnyAddressForm) {
  start("max_errors = 1000\n");
  // Open-relay probes (reliability.md c3 #16). Without AUTH, on every
  // listener, not one may get 250.
  const char* probes[] = {
      "user@other.test",
      "<@a.test,@b.test:user@d.test>",
      "user%other.test@sub.test",
      "user@other.test@sub.test",
      "other.test!user@sub.test",
      "user@[127.0.0.1]",
      "user@[IPv6:::1]",
      "\"user@other.test\"@sub.test",
      "user@other.test.",
      "USER@OTHER.TEST",
      "user@sub.test",
      "postmaster@sub.test",
      "Postmaster",
      "postmaster",
      "user@localhost",
      "user@127.0.0.1",
      "user@sub.test.",
      "\"user\"@other.test",
      "user@xn--bcher-kva.test",
      "user@[192.0.2.1]",
      "@other.test:user@sub.test",
      "user@other.test>",
      "user",
      "user@",
      "user@other..test",
      "a.b@c.d.e.f.other.test",
      "user+tag@other.test",
      "\"a b\"@other.test",
      "user@-other.test",
      "user@other.test:25",
  };
  for (uint16_t port : {ports_.starttls, ports_.plain}) {
    auto c = client(port);
    ASSERT_EQ(c->command("EHLO client.test").code, 250);
    ASSERT_EQ(c->command("MAIL FROM:<spammer@example.test>").code, 250);
    for (const char* p : probes) {
      std::string line = std::string("RCPT TO:") + (p[0] == '<' ? "" : "<") + p +
                         (std::string(p).back() == '>' && p[0] == '<' ? "" : ">");
      Reply r = c->command(line);
      EXPECT_GE(r.code, 500) << line << " -> " << r.str();
    }
    EXPECT_EQ(c->command("DATA").code, 554);  // no recipient accepted
  }
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
}

TEST_F(SubmissionTest, TrustedNetworkRelaysWithoutAuthOnThePlainListener) {
  start("trusted_networks = [\"127.0.0.0/8\"]\n");
  auto c = client(ports_.plain);
  Reply e = c->command("EHLO client.test");
  ASSERT_EQ(e.code, 250);
  for (const auto& l : e.lines) {
    EXPECT_NE(l, "STARTTLS");  // a plaintext-only listener
  }
  EXPECT_EQ(c->command("MAIL FROM:<app@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<trusted@dest.test>").code, 250);
  EXPECT_EQ(c->command("DATA").code, 354);
  c->send("Subject: from a trusted network\r\n\r\nhi\r\n.\r\n");
  Reply q = c->read_reply();
  EXPECT_EQ(q.code, 250) << q.str();
  ASSERT_TRUE(eng_.events.wait_finals(1, kWait));
  auto evs = eng_.events.events("trusted@dest.test");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].json.find("auth_user"), std::string::npos);
}

// --- protocol attacks --------------------------------------------------------

TEST_F(SubmissionTest, SmugglingEndingsNeverEndTheMessage) {
  start("trusted_networks = [\"127.0.0.0/8\"]\n");
  // hannob/smtpsmug's non-standard end-of-data sequences (CVE-2023-51764
  // class), each followed by a smuggled transaction.
  const std::string endings[] = {"\n.\n",   "\n.\r\n", "\r.\r\n", "\r\n.\r",
                                 "\r\n.\n", "\r.\r",   "\n.",     "\r\n.\n\r\n"};
  for (const std::string& end : endings) {
    SCOPED_TRACE(::testing::PrintToString(end));
    auto c = client(ports_.plain);
    ASSERT_EQ(c->command("EHLO client.test").code, 250);
    ASSERT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
    ASSERT_EQ(c->command("RCPT TO:<legit@dest.test>").code, 250);
    ASSERT_EQ(c->command("DATA").code, 354);
    c->send("Subject: smuggle\r\n\r\nhello" + end +
            "MAIL FROM:<evil@example.test>\r\nRCPT TO:<smuggled@dest.test>\r\nDATA\r\n"
            "Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n");
    // Only the real <CRLF>.<CRLF> ends the data; the bare CR/LF fails it.
    Reply r = c->read_reply();
    EXPECT_EQ(r.code, 550) << r.str();
    EXPECT_NE(r.str().find("5.6.0"), std::string::npos) << r.str();
    // Nothing else was answered: the next reply is QUIT's.
    EXPECT_EQ(c->command("QUIT").code, 221);
  }
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
  EXPECT_TRUE(eng_.events.events("smuggled@dest.test").empty());
  EXPECT_TRUE(eng_.events.events("legit@dest.test").empty());
}

TEST_F(SubmissionTest, BareLfCommandIsRefused) {
  start("trusted_networks = [\"127.0.0.0/8\"]\n");
  auto c = client(ports_.plain);
  ASSERT_EQ(c->command("EHLO client.test").code, 250);
  c->send("MAIL FROM:<a@example.test>\n");
  Reply r = c->read_reply();
  EXPECT_EQ(r.code, 500) << r.str();
}

TEST_F(SubmissionTest, PlaintextPipelinedAfterStartTlsIsDiscarded) {
  start();
  auto c = client(ports_.starttls);
  ASSERT_EQ(c->command("EHLO client.test").code, 250);
  // CVE-2011-0411: commands injected behind STARTTLS in the same segment.
  c->send("STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.test>\r\n");
  Reply r = c->read_reply();
  ASSERT_EQ(r.code, 220) << r.str();
  // Any plaintext reply to the injected commands would be sitting in the
  // buffer (start_tls refuses) or break the handshake.
  ASSERT_TRUE(c->start_tls()) << c->error();
  // Everything from before TLS is forgotten (RFC 3207 4.2): no EHLO, no MAIL.
  Reply m = c->command("MAIL FROM:<a@example.test>");
  EXPECT_EQ(m.code, 503) << m.str();
  Reply e = c->command("EHLO client.test");
  ASSERT_EQ(e.code, 250) << e.str();
  EXPECT_EQ(e.lines[0], "sub.test");  // the EHLO reply, not a late "250 Ok" for RSET
  bool auth = false;
  for (const auto& l : e.lines) {
    auth = auth || l == "AUTH PLAIN LOGIN";
    EXPECT_NE(l, "STARTTLS");
  }
  EXPECT_TRUE(auth);
  Reply rc = c->command("RCPT TO:<x@dest.test>");
  EXPECT_EQ(rc.code, 503) << rc.str();  // the injected MAIL never ran
}

// --- AUTH --------------------------------------------------------------------

TEST_F(SubmissionTest, AuthFailuresAreRateLimitedPerAddress) {
  start("auth_fail_limit = 2\nauth_fail_window = \"60s\"\n");
  auto c = client(ports_.implicit, /*tls=*/true);
  ASSERT_EQ(c->command("EHLO client.test").code, 250);
  Reply unknown = c->command(plain_auth("nobody", "x"));
  Reply wrong = c->command(plain_auth("alice", "x"));
  EXPECT_EQ(unknown.code, 535);
  // Same answer whether the user exists or not.
  EXPECT_EQ(unknown.str(), wrong.str());
  // Limit reached: even the right password gets 4xx, at once.
  Reply limited = c->command(plain_auth("alice", "correct horse"));
  EXPECT_EQ(limited.code, 454) << limited.str();
  auto c2 = starttls_client();
  EXPECT_EQ(c2->command(plain_auth("alice", "correct horse")).code, 454);
}

TEST_F(SubmissionTest, ConcurrentBadAuthFromOneAddressRunsAtMostTheLimitOfChecks) {
  // carol's entry costs about 50 ms per check: far longer than it takes
  // all twenty attempts to arrive.
  std::string log;
  ASSERT_TRUE(run_shell(
      dir_.path(), "printf 'slow pw\\n' | '" + passwd_path() + "' -i 20000 carol >> creds.txt\n",
      &log))
      << log;
  start("auth_fail_limit = 5\nauth_fail_window = \"60s\"\n");
  std::vector<std::unique_ptr<SmtpTestClient>> cs;
  for (int i = 0; i < 20; ++i) {
    cs.push_back(client(ports_.implicit, /*tls=*/true));
    ASSERT_EQ(cs.back()->command("EHLO client.test").code, 250);
  }
  for (auto& c : cs) {
    ASSERT_TRUE(c->send(plain_auth("carol", "wrong") + "\r\n"));
  }
  size_t refused = 0, limited = 0;
  for (auto& c : cs) {
    Reply r = c->read_reply();
    if (r.code == 535) {
      ++refused;
    } else if (r.code == 454 && r.str().find("4.7.0") != std::string::npos) {
      ++limited;
    } else {
      ADD_FAILURE() << "unexpected reply " << r.str();
    }
  }
  uint64_t checks = eng_.engine->stats().submission_auth_checks;
  EXPECT_LE(checks, 5u);
  EXPECT_EQ(refused, checks);
  EXPECT_EQ(limited, 20u - refused);
  // The window is full: even the right password waits for it to end.
  EXPECT_EQ(cs[0]->command(plain_auth("carol", "slow pw")).code, 454);
}

TEST_F(SubmissionTest, AuthzidOtherThanTheUserIsRefused) {
  start();
  auto c = starttls_client();
  std::string raw = std::string("bob") + '\0' + "alice" + '\0' + "correct horse";
  std::string b64;
  proto::append_base64(b64, raw);
  EXPECT_EQ(c->command("AUTH PLAIN " + b64).code, 535);
  Reply ok = c->command(plain_auth("alice", "correct horse"));
  EXPECT_EQ(ok.code, 235) << ok.str();
}

TEST_F(SubmissionTest, AuthenticatedSubmissionOverRawTls) {
  start();
  auto c = starttls_client();
  ASSERT_EQ(c->command(plain_auth("alice", "correct horse")).code, 235);
  ASSERT_EQ(c->command("MAIL FROM:<alice@example.test>").code, 250);
  ASSERT_EQ(c->command("RCPT TO:<r1@dest.test>").code, 250);
  ASSERT_EQ(c->command("RCPT TO:<r2@other.test>").code, 250);
  ASSERT_EQ(c->command("DATA").code, 354);
  c->send("Subject: hi\r\n\r\n..dot-stuffed line\r\nbody\r\n.\r\n");
  Reply q = c->read_reply();
  ASSERT_EQ(q.code, 250) << q.str();
  ASSERT_TRUE(eng_.events.wait_finals(2, kWait));
  EXPECT_EQ(c->command("QUIT").code, 221);
}

// --- limits ------------------------------------------------------------------

TEST_F(SubmissionTest, LimitsGetClearReplies) {
  start(
      "trusted_networks = [\"127.0.0.0/8\"]\nmax_line = 512\nmax_message_bytes = 4096\n"
      "max_recipients = 100\nmax_commands = 200\n");
  auto c = client(ports_.plain);
  Reply e = c->command("EHLO client.test");
  ASSERT_EQ(e.code, 250);
  bool size = false;
  for (const auto& l : e.lines) {
    size = size || l == "SIZE 4096";
  }
  EXPECT_TRUE(size) << "SIZE not advertised";
  // RFC 5321 4.5.3.1.4: lines over the limit.
  Reply lng = c->command("NOOP " + std::string(600, 'x'));
  EXPECT_EQ(lng.code, 500) << lng.str();
  EXPECT_NE(lng.str().find("5.5.2"), std::string::npos);
  // SIZE= over the limit, then a body over it.
  EXPECT_EQ(c->command("MAIL FROM:<a@example.test> SIZE=5000").code, 552);
  ASSERT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(c->command("RCPT TO:<r" + std::to_string(i) + "@dest.test>").code, 250);
  }
  Reply many = c->command("RCPT TO:<r100@dest.test>");
  EXPECT_EQ(many.code, 452) << many.str();
  EXPECT_NE(many.str().find("4.5.3"), std::string::npos);
  ASSERT_EQ(c->command("DATA").code, 354);
  c->send("Subject: big\r\n\r\n" + std::string(6000, 'a') + "\r\n.\r\n");
  Reply big = c->read_reply();
  EXPECT_EQ(big.code, 552) << big.str();
  EXPECT_EQ(c->command("QUIT").code, 221);
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
}

TEST_F(SubmissionTest, CommandBudgetClosesTheSession) {
  start("max_commands = 10\n");
  auto c = client(ports_.plain);
  Reply last;
  for (int i = 0; i < 11 && last.code != 421; ++i) {
    last = c->command("NOOP");
  }
  EXPECT_EQ(last.code, 421) << last.str();
  EXPECT_TRUE(c->closed_by_peer());
}

TEST_F(SubmissionTest, IdleClientsAreClosed) {
  start("idle_timeout = \"300ms\"\n");
  auto c = client(ports_.plain);
  Reply r = c->read_reply();  // nothing sent: the server gives up first
  EXPECT_EQ(r.code, 421) << r.str();
  EXPECT_NE(r.str().find("4.4.2"), std::string::npos);
  EXPECT_TRUE(c->closed_by_peer());
  // A TLS client that never starts its handshake is dropped too.
  SmtpTestClient silent(ports_.implicit);
  ASSERT_TRUE(silent.connected());
  EXPECT_TRUE(silent.closed_by_peer());
}

TEST_F(SubmissionTest, ConcurrentSessionsPerAddressAreBounded) {
  start("max_sessions_per_ip = 2\n");
  auto a = client(ports_.plain);
  auto b = client(ports_.starttls);
  SmtpTestClient third(ports_.plain);
  Reply r = third.read_reply();
  EXPECT_EQ(r.code, 421) << r.str();
  EXPECT_NE(r.str().find("4.7.0"), std::string::npos);
  EXPECT_TRUE(third.closed_by_peer());
  // An implicit-TLS listener just closes (no plaintext to a TLS client).
  SmtpTestClient fourth(ports_.implicit);
  EXPECT_FALSE(fourth.start_tls());
  // A slot frees when a session ends.
  EXPECT_EQ(a->command("QUIT").code, 221);
  EXPECT_TRUE(a->closed_by_peer());
  EXPECT_TRUE(eventually([&] {
    SmtpTestClient again(ports_.plain);
    return again.read_reply().code == 220;
  }));
}

// --- session slots and deadlines ---------------------------------------------

TEST_F(SubmissionTest, IdleSessionsFromManyAddressesDoNotLockOutANewClient) {
  // Ten addresses, each well under max_sessions_per_ip, fill max_sessions
  // with sessions that just sit there. (reclaim_idle_after = 0s: any
  // session waiting for a command may make room, so no wait is needed.)
  start(
      "trusted_networks = [\"127.0.0.0/8\"]\nmax_sessions = 10\nmax_sessions_per_ip = 2\n"
      "reclaim_idle_after = \"0s\"\n");
  std::vector<std::unique_ptr<SmtpTestClient>> idle;
  for (int i = 0; i < 10; ++i) {
    std::string from = "127.0.0." + std::to_string(10 + i);
    auto c = std::make_unique<SmtpTestClient>(ports_.plain, from);
    ASSERT_TRUE(c->connected()) << from << ": " << c->error();
    ASSERT_EQ(c->read_reply().code, 220) << from;
    ASSERT_EQ(c->command("EHLO idle.test").code, 250) << from;
    if (i == 0) {
      // The longest waiting, but inside a transaction: sessions outside
      // one are reclaimed first.
      ASSERT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
    }
    idle.push_back(std::move(c));
  }
  // A new client from another address gets in, and gets service.
  SmtpTestClient fresh(ports_.plain, "127.0.0.99");
  ASSERT_TRUE(fresh.connected()) << fresh.error();
  Reply greeting = fresh.read_reply();
  ASSERT_EQ(greeting.code, 220) << greeting.str();
  ASSERT_EQ(fresh.command("EHLO fresh.test").code, 250);
  ASSERT_EQ(fresh.command("MAIL FROM:<fresh@example.test>").code, 250);
  ASSERT_EQ(fresh.command("RCPT TO:<fresh@dest.test>").code, 250);
  ASSERT_EQ(fresh.command("DATA").code, 354);
  fresh.send("Subject: got in\r\n\r\nhi\r\n.\r\n");
  Reply q = fresh.read_reply();
  EXPECT_EQ(q.code, 250) << q.str();
  // The oldest session outside a transaction made room, with a 421.
  Reply gone = idle[1]->read_reply();
  EXPECT_EQ(gone.code, 421) << gone.str();
  EXPECT_NE(gone.str().find("4.3.2"), std::string::npos) << gone.str();
  EXPECT_TRUE(idle[1]->closed_within(milliseconds(5'000)));
  // The others, the one in a transaction included, were left alone.
  EXPECT_EQ(idle[0]->command("RCPT TO:<kept@dest.test>").code, 250);
  EXPECT_EQ(idle[2]->command("NOOP").code, 250);
  EXPECT_EQ(eng_.engine->stats().submission_reclaimed, 1u);
  ASSERT_TRUE(eng_.events.wait_finals(1, kWait));
}

TEST_F(SubmissionTest, SessionsReceivingAMessageAreNeverReclaimed) {
  start(
      "trusted_networks = [\"127.0.0.0/8\"]\nmax_sessions = 2\nmax_sessions_per_ip = 10\n"
      "reclaim_idle_after = \"0s\"\n");
  // One session inside DATA, one between the chunks of a BDAT transfer.
  auto a = client(ports_.plain);
  ASSERT_EQ(a->command("EHLO a.test").code, 250);
  ASSERT_EQ(a->command("MAIL FROM:<a@example.test>").code, 250);
  ASSERT_EQ(a->command("RCPT TO:<in-data@dest.test>").code, 250);
  ASSERT_EQ(a->command("DATA").code, 354);
  ASSERT_TRUE(a->send("Subject: in data\r\n\r\n"));
  auto b = client(ports_.plain);
  ASSERT_EQ(b->command("EHLO b.test").code, 250);
  ASSERT_EQ(b->command("MAIL FROM:<b@example.test>").code, 250);
  ASSERT_EQ(b->command("RCPT TO:<in-bdat@dest.test>").code, 250);
  ASSERT_TRUE(b->send("BDAT 20\r\nSubject: in bdat\r\n\r\n"));
  ASSERT_EQ(b->read_reply().code, 250);
  // Nothing to reclaim: the newcomer is refused.
  SmtpTestClient refused(ports_.plain);
  Reply r = refused.read_reply();
  EXPECT_EQ(r.code, 421) << r.str();
  EXPECT_NE(r.str().find("4.7.0"), std::string::npos) << r.str();
  // Both messages complete.
  ASSERT_TRUE(a->send("body\r\n.\r\n"));
  Reply qa = a->read_reply();
  EXPECT_EQ(qa.code, 250) << qa.str();
  ASSERT_TRUE(b->send("BDAT 6 LAST\r\nbody\r\n"));
  Reply qb = b->read_reply();
  EXPECT_EQ(qb.code, 250) << qb.str();
  EXPECT_EQ(eng_.engine->stats().submission_reclaimed, 0u);
  ASSERT_TRUE(eng_.events.wait_finals(2, kWait));
  // Now idle, they can make room.
  SmtpTestClient admitted(ports_.plain);
  Reply g = admitted.read_reply();
  EXPECT_EQ(g.code, 220) << g.str();
  EXPECT_EQ(eng_.engine->stats().submission_reclaimed, 1u);
}

TEST_F(SubmissionTest, TrickledCommandIsCutOffAtTheCommandDeadline) {
  // idle_timeout restarts with every byte; the command deadline does not.
  start("command_timeout = \"1s\"\n");
  // In plaintext, a command line that never ends; over TLS, a record that
  // never ends (a header announcing 16 KiB, then single bytes).
  const std::string line = "NOOP " + std::string(100, 'x');
  const std::string record = std::string("\x17\x03\x03\x40\x00", 5) + std::string(100, 'x');
  for (bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "TLS" : "plaintext");
    auto c = tls ? client(ports_.implicit, /*tls=*/true) : client(ports_.plain);
    ASSERT_EQ(c->command("EHLO client.test").code, 250);
    const std::string& bytes = tls ? record : line;
    auto begin = Clock::now();
    Reply r;
    // One byte every 100 ms (the wait for a reply paces the client), for
    // at most 5 s.
    for (size_t i = 0; i < 50 && r.code == 0; ++i) {
      if (!c->send_raw(bytes.substr(i, 1)) || !c->silent_for(milliseconds(100))) {
        r = c->read_reply();
      }
    }
    auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - begin);
    EXPECT_EQ(r.code, 421) << "no reply after " << took.count() << " ms of trickling";
    EXPECT_NE(r.str().find("4.4.2"), std::string::npos) << r.str();
    EXPECT_LT(took, milliseconds(2'500));
    EXPECT_TRUE(c->closed_within(milliseconds(5'000)));
  }
  EXPECT_EQ(eng_.engine->stats().submission_timeouts, 2u);
}

TEST_F(SubmissionTest, MessageBodyBelowTheMinimumRateIsCutOffAndNotAccepted) {
  // The deadline is start + 500 ms + bytes / (100 bytes/s); 5 bytes per
  // 100 ms is half that rate, so the body is cut off after about 1 s.
  start(
      "trusted_networks = [\"127.0.0.0/8\"]\ndata_min_rate = 100\n"
      "data_rate_grace = \"500ms\"\n");
  for (bool bdat : {false, true}) {
    SCOPED_TRACE(bdat ? "BDAT" : "DATA");
    std::string rcpt = std::string(bdat ? "bdat" : "data") + "@dest.test";
    auto c = client(ports_.plain);
    ASSERT_EQ(c->command("EHLO client.test").code, 250);
    ASSERT_EQ(c->command("MAIL FROM:<slow@example.test>").code, 250);
    ASSERT_EQ(c->command("RCPT TO:<" + rcpt + ">").code, 250);
    if (bdat) {
      ASSERT_TRUE(c->send("BDAT 1000 LAST\r\n"));
    } else {
      ASSERT_EQ(c->command("DATA").code, 354);
    }
    const std::string body = "Subject: slow\r\n\r\n" + std::string(300, 'x');
    auto begin = Clock::now();
    Reply r;
    for (size_t at = 0; at + 5 <= body.size() && r.code == 0; at += 5) {
      if (!c->send(body.substr(at, 5)) || !c->silent_for(milliseconds(100))) {
        r = c->read_reply();
      }
    }
    auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - begin);
    EXPECT_EQ(r.code, 421) << "no reply after " << took.count() << " ms of trickling";
    EXPECT_NE(r.str().find("4.4.2"), std::string::npos) << r.str();
    EXPECT_LT(took, milliseconds(3'000));
    EXPECT_TRUE(c->closed_within(milliseconds(5'000)));
    EXPECT_TRUE(eng_.events.events(rcpt).empty());
  }
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
}

TEST_F(SubmissionTest, HandshakeFloodDoesNotBlockANewTlsClient) {
  start(
      "max_sessions = 5\nmax_sessions_per_ip = 1000\nmax_tls_handshakes = 20\n"
      "tls_handshake_timeout = \"500ms\"\n");
  struct Silent {
    std::unique_ptr<SmtpTestClient> c;
    Clock::time_point since;  // when its handshake could have begun
  };
  std::vector<Silent> silent;
  // Connections to the implicit-TLS port that never say a word: far more
  // than max_sessions ...
  auto flood = [&] {
    silent.push_back({std::make_unique<SmtpTestClient>(ports_.implicit), Clock::now()});
    return silent.back().c->connected();
  };
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(flood());
  }
  // ... and more than max_sessions that stop right after STARTTLS's 220.
  for (int i = 0; i < 8; ++i) {
    auto c = client(ports_.starttls);
    ASSERT_EQ(c->command("EHLO client.test").code, 250);
    ASSERT_EQ(c->command("STARTTLS").code, 220);
    silent.push_back({std::move(c), Clock::now()});
  }
  // Real clients handshake, authenticate and submit, while the flood goes
  // on for as long as they run (one more connection every 10 ms).
  Child implicit, starttls;
  ASSERT_TRUE(
      start_swaks(&implicit, {"--server", "127.0.0.1:" + std::to_string(ports_.implicit), "--to",
                              "through@dest.test", "--tls-on-connect", "--auth", "PLAIN",
                              "--auth-user", "alice", "--auth-password", "correct horse"}));
  ASSERT_TRUE(start_swaks(&starttls, {"--server", "127.0.0.1:" + std::to_string(ports_.starttls),
                                      "--to", "through2@dest.test", "--tls", "--auth", "PLAIN",
                                      "--auth-user", "alice", "--auth-password", "correct horse"}));
  auto done = [&] { return !implicit.running() && !starttls.running(); };
  while (!done() && silent.size() < 2'000) {
    ASSERT_TRUE(flood());
    eventually(done, milliseconds(10));
  }
  EXPECT_EQ(implicit.wait(kWait), 0) << implicit.out() << implicit.err();
  EXPECT_NE(implicit.out().find("250 2.0.0 Ok: queued as "), std::string::npos) << implicit.out();
  EXPECT_EQ(starttls.wait(kWait), 0) << starttls.out() << starttls.err();
  EXPECT_NE(starttls.out().find("250 2.0.0 Ok: queued as "), std::string::npos) << starttls.out();
  // Every silent connection is closed: the oldest dropped for newer ones,
  // the rest by the handshake deadline (plus slack for a loaded machine),
  // not by tls.handshake_timeout (2 s here).
  for (size_t i = 0; i < silent.size(); ++i) {
    auto left = std::chrono::duration_cast<milliseconds>(silent[i].since + milliseconds(1'400) -
                                                         Clock::now());
    EXPECT_TRUE(silent[i].c->closed_within(std::max(left, milliseconds(1))))
        << "connection " << i << " of " << silent.size() << " still open";
  }
  ASSERT_TRUE(eng_.events.wait_finals(2, kWait));
}

TEST_F(SubmissionTest, WithTheSpoolOn250ComesOnlyOnceTheMessageIsDurable) {
  // The acknowledgement now arrives later, from the spool's fsync, on a
  // shard message: the session waits for it.
  start("trusted_networks = [\"127.0.0.0/8\"]\n",
        "[spool]\nmode = \"sync\"\ndir = \"" + dir_.file("spool") + "\"\n");
  auto c = client(ports_.plain);
  ASSERT_EQ(c->command("EHLO client.test").code, 250);
  ASSERT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  ASSERT_EQ(c->command("RCPT TO:<durable@dest.test>").code, 250);
  ASSERT_EQ(c->command("DATA").code, 354);
  c->send("Subject: durable\r\n\r\nkept\r\n.\r\n");
  Reply q = c->read_reply();
  EXPECT_EQ(q.code, 250) << q.str();
  EXPECT_NE(q.str().find("queued as"), std::string::npos);
  // The next transaction on the same session works too.
  ASSERT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  ASSERT_EQ(c->command("RCPT TO:<durable2@dest.test>").code, 250);
  ASSERT_EQ(c->command("DATA").code, 354);
  c->send("Subject: durable 2\r\n\r\nkept\r\n.\r\n");
  EXPECT_EQ(c->read_reply().code, 250);
  ASSERT_TRUE(eng_.events.wait_finals(2, kWait));
}

TEST_F(SubmissionTest, FullQueueIs452AndNothingIsAccepted) {
  // Deliveries go nowhere (connection refused), so the first recipient
  // stays queued and fills limits.max_queued_recipients.
  start("trusted_networks = [\"127.0.0.0/8\"]\n", "[limits]\nmax_queued_recipients = 1\n",
        "127.0.0.1:" + std::to_string(free_port()));
  auto send = [&](const std::string& rcpt) {
    auto c = client(ports_.plain);
    EXPECT_EQ(c->command("EHLO client.test").code, 250);
    EXPECT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
    EXPECT_EQ(c->command("RCPT TO:<" + rcpt + ">").code, 250);
    EXPECT_EQ(c->command("DATA").code, 354);
    c->send("Subject: q\r\n\r\nq\r\n.\r\n");
    return c->read_reply();
  };
  EXPECT_EQ(send("first@dest.test").code, 250);
  Reply second = send("second@dest.test");
  EXPECT_EQ(second.code, 452) << second.str();
  EXPECT_NE(second.str().find("4.3.1"), std::string::npos);
  EXPECT_EQ(eng_.engine->stats().unfinished, 1u);
}

}  // namespace
}  // namespace ringmail::testing
