// End to end: the delivery side's TLS against real servers. Python's
// aiosmtpd (OpenSSL) with STARTTLS or implicit TLS, `openssl s_server`
// scripted as an implicit-TLS smart host, and a scripted server on a raw
// socket for response injection. Every certificate — good, expired,
// self-signed, wrong name — is made per run by TestPki. Checks each TLS
// policy, SNI and host-name verification (names from dnsmasq), the
// opportunistic plaintext fallback, session resumption, AUTH to smart
// hosts, and that events say whether and how TLS was used.
#include <gtest/gtest.h>

#include "proto/dns_answer.h"
#include "proto/smtp_command.h"
#include "tests/e2e/tls_util.h"

namespace ringmail::testing {
namespace {

constexpr milliseconds kWait(20'000);

/// Everything a test needs in the engine's TOML.
struct EngineSpec {
  std::string route;  // [routing] default
  std::string policy = "opportunistic";
  std::string shaping;    // extra keys of the [[shaping]] match = "*" table
  std::string tls_extra;  // extra [tls] keys
  std::string more;       // appended TOML
};

class TlsDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok()) << pki_.log();
    ASSERT_TRUE(have_program(python_path())) << python_path();
  }

  void start(const EngineSpec& s) {
    std::string toml = "[delivery]\nehlo_name = \"client.test\"\ntls = \"" + s.policy +
                       "\"\n[delivery.timeouts]\ngreeting = \"10s\"\nehlo = \"10s\"\n"
                       "[routing]\ndefault = \"" +
                       s.route +
                       "\"\n"
                       "[retry]\nschedule = [\"1h\"]\n"
                       "[tls]\nca_file = \"" +
                       pki_.ca() + "\"\nhandshake_timeout = \"5s\"\n" + s.tls_extra +
                       "\n[[shaping]]\nmatch = \"*\"\n" + s.shaping + "\n" + s.more;
    eng_ = std::make_unique<EmbeddedEngine>();
    auto r = eng_->start(toml);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  void submit(const std::string& rcpt) {
    Batch b;
    b.sender = "sender@example.test";
    b.message = message_of(2000, "tls test");
    b.recipients = {rcpt};
    Ack ack = eng_->engine->submit(b);
    ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  }

  /// The first event for `rcpt`, once it exists.
  EventCollector::Ev first_event(const std::string& rcpt) {
    EventCollector::Ev none{};
    bool got = eventually([&] { return !eng_->events.events(rcpt).empty(); }, kWait);
    EXPECT_TRUE(got) << "no event for " << rcpt;
    return got ? eng_->events.events(rcpt).front() : none;
  }

  static std::string route_to(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }
  static bool has(const std::string& json, const std::string& piece) {
    return json.find(piece) != std::string::npos;
  }

  TestPki pki_;
  std::unique_ptr<EmbeddedEngine> eng_;
};

TEST_F(TlsDeliveryTest, StartTlsIsUsedAndRecordedInEvents) {
  TlsPeer peer;
  auto good = pki_.good();
  ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", good.cert, "--key", good.key}))
      << peer.err();
  start({.route = route_to(peer.port())});
  submit("a@tls.test");
  auto ev = first_event("a@tls.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.json;
  EXPECT_TRUE(has(ev.json, "\"tls\":\"TLSv1.3 TLS_")) << ev.json;
  // The server saw: EHLO in plaintext, STARTTLS, EHLO again under TLS, and
  // the message under TLS.
  EXPECT_EQ(peer.count({"\"event\": \"ehlo\"", "\"tls\": false"}), 1u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"starttls\"", "TLSv1.3"}), 1u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"ehlo\"", "\"tls\": true"}), 1u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"tls\": \"TLSv1.3\""}), 1u) << peer.log();
  // An address literal route: no SNI (RFC 6066 3).
  EXPECT_EQ(peer.count({"\"event\": \"sni\"", "\"name\": null"}), 1u) << peer.log();
}

// --- each policy against certificates a verifying client must refuse -------

struct PolicyCase {
  const char* name;
  const char* cert;  // "expired" or "self"
  const char* policy;
};

class TlsPolicyTest : public TlsDeliveryTest, public ::testing::WithParamInterface<PolicyCase> {};

TEST_P(TlsPolicyTest, BadCertificatesOnlyStopVerify) {
  const PolicyCase& pc = GetParam();
  auto pair = std::string(pc.cert) == "expired" ? pki_.expired() : pki_.self_signed();
  TlsPeer peer;
  ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", pair.cert, "--key", pair.key}))
      << peer.err();
  start({.route = route_to(peer.port()), .policy = pc.policy});
  submit("p@policy.test");
  auto ev = first_event("p@policy.test");
  std::string policy = pc.policy;
  if (policy == "verify") {
    EXPECT_EQ(ev.type, EventType::kDeferred) << ev.json;
    EXPECT_EQ(ev.code, 451);
    EXPECT_EQ(ev.enhanced, "4.7.5") << ev.json;
    EXPECT_TRUE(has(ev.json, "\"stage\":\"tls\"")) << ev.json;
    EXPECT_TRUE(has(ev.json, "\"class\":\"tls_failure\"")) << ev.json;
    EXPECT_EQ(peer.messages(), 0u);
  } else {
    EXPECT_EQ(ev.type, EventType::kDelivered) << ev.json;
    EXPECT_EQ(peer.messages(), 1u);
    if (policy == "none") {
      EXPECT_TRUE(has(ev.json, "\"tls\":\"none\"")) << ev.json;
      EXPECT_EQ(peer.count({"\"event\": \"starttls\""}), 0u);
    } else {
      EXPECT_TRUE(has(ev.json, "\"tls\":\"TLSv1.")) << ev.json;
      EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"tls\": \"TLSv1.3\""}), 1u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Certificates, TlsPolicyTest,
    ::testing::Values(PolicyCase{"expired_none", "expired", "none"},
                      PolicyCase{"expired_opportunistic", "expired", "opportunistic"},
                      PolicyCase{"expired_required", "expired", "required"},
                      PolicyCase{"expired_verify", "expired", "verify"},
                      PolicyCase{"self_signed_none", "self", "none"},
                      PolicyCase{"self_signed_opportunistic", "self", "opportunistic"},
                      PolicyCase{"self_signed_required", "self", "required"},
                      PolicyCase{"self_signed_verify", "self", "verify"}),
    [](const ::testing::TestParamInfo<PolicyCase>& i) { return std::string(i.param.name); });

TEST_F(TlsDeliveryTest, VerifyAcceptsTheTestCaByAddress) {
  TlsPeer peer;
  auto good = pki_.good();
  ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", good.cert, "--key", good.key}));
  start({.route = route_to(peer.port()), .policy = "verify"});
  submit("v@verify.test");
  auto ev = first_event("v@verify.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.json;
}

/// dnsmasq on loopback serving the names the verify test needs.
class Dnsmasq {
 public:
  bool start(const std::vector<std::string>& records) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_port(SOCK_DGRAM);
      std::vector<std::string> argv = {
          env_or("DNSMASQ", "/usr/sbin/dnsmasq"),
          "--keep-in-foreground",
          "--port=" + std::to_string(port_),
          "--listen-address=127.0.0.1",
          "--bind-interfaces",
          "--no-resolv",
          "--no-hosts",
          "--local=/test/",
          "--pid-file=" + dir_.file("pid"),
          "--user=" + std::string(::getenv("USER") != nullptr ? ::getenv("USER") : "root")};
      argv.insert(argv.end(), records.begin(), records.end());
      child_ = std::make_unique<Child>();
      if (!child_->start(argv, dir_.path(), "dnsmasq" + std::to_string(attempt))) {
        return false;
      }
      if (eventually([&] { return !child_->running() || answers(); }, kWait) && child_->running()) {
        return true;
      }
    }
    return false;
  }
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  bool answers() const { return dns_server_answers(port_, "mx.test"); }
  TempDir dir_;
  std::unique_ptr<Child> child_;
  uint16_t port_ = 0;
};

TEST_F(TlsDeliveryTest, VerifyChecksTheMxHostNameAndSendsSni) {
  Dnsmasq dns;
  ASSERT_TRUE(dns.start({"--host-record=mx.test,127.0.0.1", "--host-record=other.test,127.0.0.1"}));
  TlsPeer peer;
  auto good = pki_.good();  // SAN mx.test, localhost, 127.0.0.1
  ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", good.cert, "--key", good.key}));
  std::string p = std::to_string(peer.port());
  start({.route = route_to(peer.port()),
         .policy = "verify",
         .more = "[routing.domains]\n\"ok.test\" = \"[mx.test]:" + p +
                 "\"\n\"bad.test\" = \"[other.test]:" + p + "\"\n[dns]\nservers = [\"" +
                 dns.server() + "\"]\nallow_loopback = true\n"});
  submit("u@ok.test");
  submit("u@bad.test");
  auto ok = first_event("u@ok.test");
  auto bad = first_event("u@bad.test");
  EXPECT_EQ(ok.type, EventType::kDelivered) << ok.json;
  EXPECT_TRUE(has(ok.json, "\"mx\":\"mx.test\"")) << ok.json;
  EXPECT_EQ(bad.type, EventType::kDeferred) << bad.json;
  EXPECT_TRUE(has(bad.json, "\"stage\":\"tls\"")) << bad.json;
  EXPECT_EQ(peer.count({"\"event\": \"sni\"", "\"name\": \"mx.test\""}), 1u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"sni\"", "\"name\": \"other.test\""}), 1u) << peer.log();
  EXPECT_EQ(peer.messages(), 1u);
}

TEST_F(TlsDeliveryTest, RequiredDefersWhenStartTlsIsNotOffered) {
  TlsPeer peer;
  ASSERT_TRUE(peer.start({"--mode", "plain"}));  // STARTTLS stripped, as by a MitM
  start({.route = route_to(peer.port()), .policy = "required"});
  submit("r@required.test");
  auto ev = first_event("r@required.test");
  EXPECT_EQ(ev.type, EventType::kDeferred) << ev.json;
  EXPECT_EQ(ev.enhanced, "4.7.4") << ev.json;
  EXPECT_TRUE(has(ev.json, "\"stage\":\"tls\"")) << ev.json;
  EXPECT_TRUE(has(ev.json, "does not offer STARTTLS")) << ev.json;
  EXPECT_EQ(peer.messages(), 0u);
}

TEST_F(TlsDeliveryTest, OpportunisticFallsBackToPlaintextOnceAndRemembers) {
  TlsPeer peer;
  auto good = pki_.good();
  // The server's only suite is one ringmail never offers: every handshake fails.
  ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", good.cert, "--key", good.key, "--tls-max",
                          "1.2", "--ciphers", "ECDHE-ECDSA-AES128-CCM"}));
  start({.route = route_to(peer.port()), .shaping = "max_msgs_per_conn = 1\n"});
  submit("f1@fallback.test");
  auto ev1 = first_event("f1@fallback.test");
  EXPECT_EQ(ev1.type, EventType::kDelivered) << ev1.json;
  EXPECT_TRUE(has(ev1.json, "\"tls\":\"none\"")) << ev1.json;
  submit("f2@fallback.test");
  auto ev2 = first_event("f2@fallback.test");
  EXPECT_EQ(ev2.type, EventType::kDelivered) << ev2.json;
  // Connections: the failed TLS one, its plaintext retry, then one plaintext
  // connection for the second message — STARTTLS was not tried again.
  EXPECT_EQ(peer.count({"\"event\": \"ehlo\""}), 3u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"tls\": null"}), 2u) << peer.log();
}

TEST_F(TlsDeliveryTest, SessionsAreResumedPerDestination) {
  for (bool resumption : {true, false}) {
    SCOPED_TRACE(resumption ? "resumption on" : "resumption off");
    TlsPeer peer;
    auto good = pki_.good();
    ASSERT_TRUE(peer.start({"--mode", "starttls", "--cert", good.cert, "--key", good.key}));
    start({.route = route_to(peer.port()),
           .shaping = "max_msgs_per_conn = 1\n",
           .tls_extra = std::string("session_resumption = ") + (resumption ? "true" : "false")});
    for (int i = 0; i < 3; ++i) {
      std::string rcpt = "s" + std::to_string(i) + "@resume.test";
      submit(rcpt);
      EXPECT_EQ(first_event(rcpt).type, EventType::kDelivered);
    }
    EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"reused\": false"}), resumption ? 1u : 3u)
        << peer.log();
    EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"reused\": true"}), resumption ? 2u : 0u)
        << peer.log();
    eng_.reset();
  }
}

TEST_F(TlsDeliveryTest, ImplicitTlsAndAuthToAnOpensslSmartHost) {
  SServerPeer smart;
  std::string b64;
  proto::append_base64(b64, std::string("\0relay\0s3cret", 13));
  ASSERT_TRUE(smart.start(pki_.good(), b64)) << smart.err();
  start({.route = route_to(smart.port()),
         .shaping = "implicit_tls = true\nauth_user = \"relay\"\nauth_password = \"s3cret\"\n"});
  submit("i@implicit.test");
  auto ev = first_event("i@implicit.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.json << "\n" << smart.transcript();
  EXPECT_TRUE(has(ev.json, "\"tls\":\"TLSv1.3 TLS_")) << ev.json;
  std::string t = smart.transcript();
  EXPECT_NE(t.find("AUTH PLAIN " + b64), std::string::npos) << t;
  EXPECT_EQ(t.find("STARTTLS"), std::string::npos) << t;
  EXPECT_EQ(smart.messages(), 1u);
}

TEST_F(TlsDeliveryTest, AuthOverStartTlsAndARefusedPasswordDefers) {
  TlsPeer peer;
  auto good = pki_.good();
  ASSERT_TRUE(peer.start(
      {"--mode", "starttls", "--cert", good.cert, "--key", good.key, "--auth", "relay:right"}));
  start({.route = route_to(peer.port()),
         .policy = "required",
         .shaping = "auth_user = \"relay\"\nauth_password = \"right\"\n",
         .more = "[[shaping]]\nmatch = \"wrong.test\"\nauth_user = \"relay\"\n"
                 "auth_password = \"wrong\"\n"});
  submit("ok@auth.test");
  auto ok = first_event("ok@auth.test");
  EXPECT_EQ(ok.type, EventType::kDelivered) << ok.json;
  EXPECT_EQ(peer.count({"\"event\": \"message\"", "\"auth\": \"relay\""}), 1u) << peer.log();
  EXPECT_EQ(peer.count({"\"event\": \"auth\"", "\"tls\": true", "\"ok\": true"}), 1u);

  submit("x@wrong.test");
  auto bad = first_event("x@wrong.test");
  EXPECT_EQ(bad.type, EventType::kDeferred) << bad.json;  // never a bounce (R26)
  EXPECT_EQ(bad.code, 535) << bad.json;
  EXPECT_TRUE(has(bad.json, "\"stage\":\"auth\"")) << bad.json;
}

TEST_F(TlsDeliveryTest, CredentialsAreNeverSentWithoutTls) {
  TlsPeer peer;
  // A server offering AUTH in plaintext, and no STARTTLS.
  ASSERT_TRUE(peer.start({"--mode", "plain", "--auth", "relay:pw", "--auth-anywhere"}));
  start({.route = route_to(peer.port()),
         .shaping = "auth_user = \"relay\"\nauth_password = \"pw\"\n",
         .more = "[[shaping]]\nmatch = \"allowed.test\"\nauth_user = \"relay\"\n"
                 "auth_password = \"pw\"\nauth_plaintext = true\n"});
  submit("n@plain.test");
  auto ev = first_event("n@plain.test");
  EXPECT_EQ(ev.type, EventType::kDeferred) << ev.json;
  EXPECT_EQ(ev.enhanced, "4.7.10") << ev.json;
  EXPECT_EQ(peer.count({"\"event\": \"auth\""}), 0u) << peer.log();
  // Explicitly allowed for one destination: then it is used.
  submit("y@allowed.test");
  EXPECT_EQ(first_event("y@allowed.test").type, EventType::kDelivered);
  EXPECT_EQ(peer.count({"\"event\": \"auth\"", "\"tls\": false", "\"ok\": true"}), 1u);
}

/// A server that appends a reply to its 220 for STARTTLS, as a man in the
/// middle injecting responses would (reliability.md R22, c2 #10).
class InjectingServer {
 public:
  InjectingServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 8);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~InjectingServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  int starttls_seen() const { return starttls_.load(); }
  int bytes_after_injection() const { return after_.load(); }

 private:
  void serve() {
    int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) {
      return;
    }
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto say = [&](std::string_view s) { (void)!::send(c, s.data(), s.size(), MSG_NOSIGNAL); };
    say("220 inject.test ESMTP\r\n");
    std::string buf;
    bool injected = false;
    char tmp[4096];
    for (;;) {
      ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) {
        break;
      }
      if (injected) {
        after_ += static_cast<int>(n);  // a ClientHello here would mean it went on
        continue;
      }
      buf.append(tmp, static_cast<size_t>(n));
      size_t nl;
      while ((nl = buf.find("\r\n")) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 2);
        if (line.rfind("EHLO", 0) == 0) {
          say("250-inject.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
        } else if (line == "STARTTLS") {
          ++starttls_;
          say("220 2.0.0 go ahead\r\n250 2.0.0 injected\r\n");  // one segment
          injected = true;
        } else {
          say("250 ok\r\n");
        }
      }
    }
    ::close(c);
  }
  int fd_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<int> starttls_{0};
  std::atomic<int> after_{0};
};

TEST_F(TlsDeliveryTest, ResponseInjectionBeforeTheHandshakeAborts) {
  InjectingServer mitm;
  start({.route = route_to(mitm.port()), .policy = "required"});
  submit("i@inject.test");
  auto ev = first_event("i@inject.test");
  EXPECT_EQ(ev.type, EventType::kDeferred) << ev.json;
  EXPECT_TRUE(has(ev.json, "response injection")) << ev.json;
  EXPECT_TRUE(has(ev.json, "\"stage\":\"tls\"")) << ev.json;
  EXPECT_EQ(mitm.starttls_seen(), 1);
  EXPECT_EQ(mitm.bytes_after_injection(), 0);  // no handshake on a tampered stream
}

}  // namespace
}  // namespace ringmail::testing
