// TlsChannel over memory buffers: a client and a server channel joined by
// the test, no sockets. Certificates come from the openssl CLI (TestPki).
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "engine/tls.h"

#include <gtest/gtest.h>

#include "tests/e2e/tls_util.h"

namespace ringmail::engine {
namespace {

using Status = TlsChannel::Status;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new testing::TestPki();
    ASSERT_TRUE(pki_->ok()) << pki_->log();
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  TlsConfig config(std::string min = "1.2") {
    TlsConfig c;
    c.ca_file = pki_->ca();
    c.min_version = std::move(min);
    return c;
  }
  std::unique_ptr<TlsContext> server_ctx(const testing::TestPki::Pair& p, std::string min = "1.2") {
    auto c = TlsContext::server(config(std::move(min)), p.cert, p.key);
    EXPECT_TRUE(c.ok()) << c.error().message;
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<TlsContext> client_ctx(std::string min = "1.2") {
    auto c = TlsContext::client(config(std::move(min)));
    EXPECT_TRUE(c.ok()) << c.error().message;
    return c.ok() ? std::move(*c) : nullptr;
  }

  /// Moves ciphertext between the two until both handshakes end. With
  /// `byte_by_byte` every transfer is split into single bytes.
  static Status handshake(TlsChannel& c, TlsChannel& s, bool byte_by_byte = false) {
    Status cs = Status::kWant, ss = Status::kWant;
    for (int round = 0; round < 100000; ++round) {
      if (cs == Status::kWant) {
        cs = c.handshake();
      }
      transfer(c, s, byte_by_byte);
      if (ss == Status::kWant) {
        ss = s.handshake();
      }
      transfer(s, c, byte_by_byte);
      if (cs == Status::kFailed || ss == Status::kFailed) {
        return Status::kFailed;
      }
      if (cs == Status::kDone && ss == Status::kDone) {
        return Status::kDone;
      }
    }
    return Status::kWant;
  }
  static void transfer(TlsChannel& from, TlsChannel& to, bool byte_by_byte) {
    std::string out;
    from.take_output(&out);
    if (!byte_by_byte) {
      to.feed(out);
      return;
    }
    for (char ch : out) {
      to.feed(std::span<const char>(&ch, 1));
    }
  }
  /// Everything `to` can decrypt right now.
  static std::string drain(TlsChannel& to) {
    std::string got;
    char buf[4096];
    for (;;) {
      size_t n = 0;
      if (to.read(std::span<char>(buf, sizeof buf), &n) != Status::kDone) {
        return got;
      }
      got.append(buf, n);
    }
  }

  static testing::TestPki* pki_;
};

testing::TestPki* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, HandshakeAndDataOverMemoryBuffers) {
  auto sctx = server_ctx(pki_->good());
  auto cctx = client_ctx();
  TlsChannel::ClientParams p;
  p.server_name = "mx.test";
  auto c = TlsChannel::client(*cctx, p);
  auto s = TlsChannel::server(*sctx);
  ASSERT_TRUE(c.ok() && s.ok());
  ASSERT_EQ(handshake(**c, **s), Status::kDone) << (*c)->error() << " / " << (*s)->error();
  EXPECT_EQ((*c)->version(), "TLSv1.3");
  EXPECT_EQ((*c)->cipher().rfind("TLS_", 0), 0u) << (*c)->cipher();  // IANA name
  EXPECT_EQ((*c)->summary(), (*c)->version() + " " + (*c)->cipher());
  EXPECT_FALSE((*c)->resumed());

  // A megabyte each way, in bounded batches as the drivers do.
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>('a' + i % 26);
  }
  std::string got;
  for (size_t off = 0; off < big.size(); off += TlsChannel::kMaxWriteBatch) {
    size_t n = std::min(TlsChannel::kMaxWriteBatch, big.size() - off);
    ASSERT_EQ((*c)->write(std::span<const char>(big.data() + off, n)), Status::kDone);
    EXPECT_LE((*c)->output_size(), TlsChannel::kMaxWriteBatch + 4096);
    transfer(**c, **s, false);
    got += drain(**s);
  }
  EXPECT_EQ(got, big);
  ASSERT_EQ((*s)->write(std::span<const char>("220 hi\r\n", 8)), Status::kDone);
  transfer(**s, **c, false);
  EXPECT_EQ(drain(**c), "220 hi\r\n");
}

TEST_F(TlsTest, EverySplitOfTheCiphertextWorks) {
  auto sctx = server_ctx(pki_->good());
  auto cctx = client_ctx();
  auto c = TlsChannel::client(*cctx, {});
  auto s = TlsChannel::server(*sctx);
  ASSERT_EQ(handshake(**c, **s, /*byte_by_byte=*/true), Status::kDone) << (*c)->error();
  ASSERT_EQ((*c)->write(std::span<const char>("EHLO x\r\n", 8)), Status::kDone);
  transfer(**c, **s, true);
  EXPECT_EQ(drain(**s), "EHLO x\r\n");
}

struct VerifyCase {
  const char* name;
  const char* cert;  // good, other, expired, self
  const char* server_name;
  bool ok;
};

class TlsVerifyTest : public TlsTest, public ::testing::WithParamInterface<VerifyCase> {};

TEST_P(TlsVerifyTest, ChainAndNameAreCheckedOnlyWhenAsked) {
  const VerifyCase& vc = GetParam();
  std::string which = vc.cert;
  testing::TestPki::Pair pair = which == "good"      ? pki_->good()
                                : which == "other"   ? pki_->other_name()
                                : which == "expired" ? pki_->expired()
                                                     : pki_->self_signed();
  auto sctx = server_ctx(pair);
  auto cctx = client_ctx();
  for (bool verify : {false, true}) {
    SCOPED_TRACE(verify ? "verify" : "no verify");
    TlsChannel::ClientParams p;
    p.server_name = vc.server_name;
    p.verify = verify;
    auto c = TlsChannel::client(*cctx, p);
    auto s = TlsChannel::server(*sctx);
    ASSERT_TRUE(c.ok()) << c.error().message;
    Status st = handshake(**c, **s);
    if (!verify || vc.ok) {
      EXPECT_EQ(st, Status::kDone) << (*c)->error();
    } else {
      EXPECT_EQ(st, Status::kFailed);
      EXPECT_FALSE((*c)->error().empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Certificates, TlsVerifyTest,
    ::testing::Values(VerifyCase{"good", "good", "mx.test", true},
                      VerifyCase{"good_localhost", "good", "localhost", true},
                      VerifyCase{"good_ip", "good", "127.0.0.1", true},
                      VerifyCase{"good_trailing_dot", "good", "mx.test.", true},
                      VerifyCase{"wrong_name", "good", "other.test", false},
                      VerifyCase{"other_name", "other", "mx.test", false},
                      VerifyCase{"expired", "expired", "mx.test", false},
                      VerifyCase{"self_signed", "self", "mx.test", false}),
    [](const ::testing::TestParamInfo<VerifyCase>& i) { return std::string(i.param.name); });

TEST_F(TlsTest, VersionFloorRefusesTls12WhenSetTo13) {
  auto sctx = server_ctx(pki_->good());
  // This server speaks TLS 1.2 at most.
  ASSERT_EQ(wolfSSL_CTX_set_max_proto_version(sctx->native(), TLS1_2_VERSION), WOLFSSL_SUCCESS);
  {
    auto cctx = client_ctx("1.2");
    auto c = TlsChannel::client(*cctx, {});
    auto s = TlsChannel::server(*sctx);
    ASSERT_EQ(handshake(**c, **s), Status::kDone) << (*c)->error();
    EXPECT_EQ((*c)->version(), "TLSv1.2");
    EXPECT_EQ((*c)->cipher().rfind("TLS_ECDHE_ECDSA_WITH_", 0), 0u) << (*c)->cipher();
  }
  auto cctx = client_ctx("1.3");
  auto c = TlsChannel::client(*cctx, {});
  auto s = TlsChannel::server(*sctx);
  EXPECT_EQ(handshake(**c, **s), Status::kFailed);
}

TEST_F(TlsTest, SessionsResumeOnTls13AndTls12) {
  for (bool tls12 : {false, true}) {
    SCOPED_TRACE(tls12 ? "TLS 1.2" : "TLS 1.3");
    auto sctx = server_ctx(pki_->good());
    if (tls12) {
      ASSERT_EQ(wolfSSL_CTX_set_max_proto_version(sctx->native(), TLS1_2_VERSION), WOLFSSL_SUCCESS);
    }
    auto cctx = client_ctx();
    TlsClient cache(config());
    TlsSessionPtr saved;
    for (int round = 0; round < 3; ++round) {
      TlsChannel::ClientParams p;
      p.server_name = "mx.test";
      p.verify = true;
      p.resume = cache.find_session("d|mx.test|v");
      auto c = TlsChannel::client(*cctx, p);
      auto s = TlsChannel::server(*sctx);
      ASSERT_EQ(handshake(**c, **s), Status::kDone) << (*c)->error();
      EXPECT_EQ((*c)->resumed(), round > 0);
      // A TLS 1.3 ticket arrives after the handshake: read first, as the
      // connection does before it saves the session.
      ASSERT_EQ((*s)->write(std::span<const char>("220 x\r\n", 7)), Status::kDone);
      transfer(**s, **c, false);
      EXPECT_EQ(drain(**c), "220 x\r\n");
      if (!(*c)->resumed()) {
        cache.store_session("d|mx.test|v", (*c)->session());
      }
    }
    EXPECT_EQ(cache.sessions(), 1u);
  }
}

TEST_F(TlsTest, CloseNotifyIsAClose) {
  auto sctx = server_ctx(pki_->good());
  auto cctx = client_ctx();
  auto c = TlsChannel::client(*cctx, {});
  auto s = TlsChannel::server(*sctx);
  ASSERT_EQ(handshake(**c, **s), Status::kDone);
  (*s)->close_notify();
  transfer(**s, **c, false);
  char buf[64];
  size_t n = 0;
  EXPECT_EQ((*c)->read(std::span<char>(buf, sizeof buf), &n), Status::kClosed);
}

TEST_F(TlsTest, GarbageFromThePeerFailsTheHandshake) {
  auto cctx = client_ctx();
  auto c = TlsChannel::client(*cctx, {});
  EXPECT_EQ((*c)->handshake(), Status::kWant);
  std::string junk = "250 this is not TLS\r\n";
  (*c)->feed(junk);
  EXPECT_EQ((*c)->handshake(), Status::kFailed);
  EXPECT_FALSE((*c)->error().empty());
}

TEST_F(TlsTest, EofDuringTheHandshakeFails) {
  auto cctx = client_ctx();
  auto c = TlsChannel::client(*cctx, {});
  EXPECT_EQ((*c)->handshake(), Status::kWant);
  (*c)->feed_eof();
  EXPECT_EQ((*c)->handshake(), Status::kFailed);
  EXPECT_NE((*c)->error().find("closed"), std::string::npos) << (*c)->error();
}

TEST_F(TlsTest, MissingCaBundleOnlyBreaksVerifiedChannels) {
  TlsConfig cfg = config();
  cfg.ca_file = pki_->dir().file("missing.pem");
  auto cctx = TlsContext::client(cfg);
  ASSERT_TRUE(cctx.ok());
  EXPECT_FALSE((*cctx)->ca_error().empty());
  TlsChannel::ClientParams p;
  p.server_name = "mx.test";
  EXPECT_TRUE(TlsChannel::client(**cctx, p).ok());
  p.verify = true;
  auto v = TlsChannel::client(**cctx, p);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message.find("tls.ca_file"), std::string::npos) << v.error().message;
}

TEST_F(TlsTest, ServerContextChecksItsFiles) {
  auto bad = TlsContext::server(config(), pki_->good().cert, pki_->other_name().key);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("does not match"), std::string::npos);
  auto missing = TlsContext::server(config(), pki_->dir().file("nope.crt"), pki_->good().key);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cert_file"), std::string::npos);
}

TEST(TlsClientTest, FallbackMemoryExpires) {
  TlsConfig cfg;
  TlsClient tc(cfg);
  TimePoint t0{};
  tc.remember_plaintext("mx|1.2.3.4:25", t0);
  EXPECT_TRUE(tc.plaintext_only("mx|1.2.3.4:25", t0 + Millis(1)));
  EXPECT_FALSE(tc.plaintext_only("mx|1.2.3.5:25", t0));
  EXPECT_FALSE(tc.plaintext_only("mx|1.2.3.4:25", t0 + TlsClient::kFallbackMemory));
}

TEST(TlsClientTest, FallbackMemoryIsBounded) {
  TlsConfig cfg;
  TlsClient tc(cfg);
  TimePoint t0{};
  for (size_t i = 0; i < TlsClient::kMaxFallbacks + 10; ++i) {
    tc.remember_plaintext("host" + std::to_string(i), t0);
  }
  // The newest is remembered; the table never grew past its bound.
  EXPECT_TRUE(tc.plaintext_only("host" + std::to_string(TlsClient::kMaxFallbacks + 9), t0));
  size_t live = 0;
  for (size_t i = 0; i < TlsClient::kMaxFallbacks + 10; ++i) {
    live += tc.plaintext_only("host" + std::to_string(i), t0) ? 1 : 0;
  }
  EXPECT_LE(live, TlsClient::kMaxFallbacks);
}

}  // namespace
}  // namespace ringmail::engine
