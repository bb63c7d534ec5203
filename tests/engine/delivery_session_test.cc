// DeliverySession driven by scripted server replies: no sockets, no clock.
#include "engine/delivery_session.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace ringmail::engine {
namespace {

struct Recorded {
  std::string rcpt;
  Disposition disposition;
  Stage stage;
  uint16_t code;
  std::string enhanced;
  bool unknown;
};

class Recorder final : public SessionObserver {
 public:
  void on_rcpt_outcome(const SessionTxn& txn, size_t index, const Outcome& o) override {
    outcomes.push_back({std::string(txn.rcpts[index]), o.disposition, o.stage, o.reply->code,
                        o.reply->enhanced.str(), o.unknown});
  }
  void on_txn_done(SessionTxn& txn) override { done.push_back(txn.cookie); }
  void on_txn_returned(SessionTxn&& txn) override { returned.push_back(txn.cookie); }

  const Recorded* find(const std::string& rcpt) const {
    for (const auto& r : outcomes) {
      if (r.rcpt == rcpt) {
        return &r;
      }
    }
    return nullptr;
  }

  std::vector<Recorded> outcomes;
  std::vector<uint64_t> done;
  std::vector<uint64_t> returned;
};

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage_ = {"a@example.org", "b@example.org", "c@example.org", "d@example.org",
                "é@example.org"};
  }

  MessageRef message(std::string_view body = "Subject: hi\r\n\r\nhello\r\n",
                     std::string sender = "s@example.com") {
    MessageInit mi;
    mi.batch_id = "b1";
    mi.sender = std::move(sender);
    mi.raw = body;
    return Message::create(std::move(mi));
  }

  SessionTxn txn(MessageRef msg, std::vector<int> rcpts, uint64_t cookie) {
    SessionTxn t;
    t.msg = std::move(msg);
    for (int i : rcpts) {
      t.rcpts.push_back(storage_[static_cast<size_t>(i)]);
    }
    t.cookie = cookie;
    return t;
  }

  void make(DeliverySession::Options o = {}) {
    o.ehlo_name = "client.example";
    s_.emplace(std::move(o), &rec_);
    s_->on_connected();
  }

  /// Everything the session wants sent, as one string; clears it.
  std::string sent() {
    SendBatch b;
    s_->out().take(&b);
    std::string out;
    for (const iovec& v : b.iov()) {
      out.append(static_cast<const char*>(v.iov_base), v.iov_len);
    }
    b.advance(b.total());
    s_->on_output_flushed();  // the socket took every byte
    return out;
  }

  void reply(std::string_view bytes) {
    // Feed byte by byte: the reply parser must cope with any split.
    for (char c : bytes) {
      s_->on_data(std::span<const char>(&c, 1));
    }
  }

  void greet(std::string_view ehlo_reply) {
    reply("220 mx.example ESMTP\r\n");
    EXPECT_EQ(sent(), "EHLO client.example\r\n");
    reply(ehlo_reply);
    ASSERT_EQ(s_->phase(), DeliverySession::Phase::kReady);
  }

  /// Greeting and EHLO without requiring the session to become ready.
  void greet_without_ready(std::string_view ehlo_reply) {
    reply("220 mx.example ESMTP\r\n");
    EXPECT_EQ(sent(), "EHLO client.example\r\n");
    reply(ehlo_reply);
  }

  std::vector<std::string> storage_;
  Recorder rec_;
  std::optional<DeliverySession> s_;
};

constexpr std::string_view kEhloPipe =
    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
    "250 ENHANCEDSTATUSCODES\r\n";
constexpr std::string_view kEhloChunk =
    "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 100000\r\n";

TEST_F(SessionTest, PipelinedDataTransactionClassifiesEachRecipient) {
  make();
  greet(kEhloPipe);
  EXPECT_TRUE(s_->can_accept_txn());
  auto m = message();
  s_->add_txn(txn(m, {0, 1, 2}, 7));
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com> SIZE=" + std::to_string(m->size()) +
                        "\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                        "RCPT TO:<c@example.org>\r\nDATA\r\n");
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kMail);
  reply("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 1u);  // the bounce is known at once
  EXPECT_EQ(rec_.outcomes[0].rcpt, "b@example.org");
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kBounced);
  EXPECT_EQ(rec_.outcomes[0].stage, Stage::kRcpt);
  EXPECT_EQ(rec_.outcomes[0].enhanced, "5.1.1");
  EXPECT_EQ(sent(), "");  // DATA is a sync point: no body before 354
  reply("354 go ahead\r\n");
  EXPECT_EQ(sent(), "Subject: hi\r\n\r\nhello\r\n.\r\n");
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kDataDone);
  reply("250 2.0.0 queued as X\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 3u);
  EXPECT_EQ(rec_.find("a@example.org")->disposition, Disposition::kDelivered);
  EXPECT_EQ(rec_.find("c@example.org")->disposition, Disposition::kDelivered);
  EXPECT_EQ(rec_.find("c@example.org")->stage, Stage::kBody);
  EXPECT_EQ(rec_.done, std::vector<uint64_t>{7});
  EXPECT_TRUE(s_->idle());
  s_->quit();
  EXPECT_EQ(sent(), "QUIT\r\n");
  reply("221 bye\r\n");
  EXPECT_TRUE(s_->done());
}

TEST_F(SessionTest, ChunkingPipelinesTransactionsBackToBackWithRset) {
  DeliverySession::Options o;
  o.max_pipelined_txns = 2;
  make(o);
  greet(kEhloChunk);
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  ASSERT_TRUE(s_->can_accept_txn());
  s_->add_txn(txn(m, {1}, 2));
  EXPECT_FALSE(s_->can_accept_txn());  // window of 2
  std::string body(m->bdat_body());
  std::string size = std::to_string(m->size());
  // The second transaction follows the first in the same flight, after an
  // RSET: the first BDAT's verdict is not known yet.
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com> SIZE=" + size + "\r\nRCPT TO:<a@example.org>\r\n" +
                        "BDAT " + size + " LAST\r\n" + body + "RSET\r\n" +
                        "MAIL FROM:<s@example.com> SIZE=" + size +
                        "\r\nRCPT TO:<b@example.org>\r\nBDAT " + size + " LAST\r\n" + body);
  reply("250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 2u);
  EXPECT_EQ(rec_.find("a@example.org")->disposition, Disposition::kDeferred);
  EXPECT_EQ(rec_.find("b@example.org")->disposition, Disposition::kDelivered);
  EXPECT_EQ(rec_.done, (std::vector<uint64_t>{1, 2}));
}

TEST_F(SessionTest, WithoutPipeliningOneCommandAtATime) {
  make();
  greet("250 mx.example\r\n");
  auto m = message();
  s_->add_txn(txn(m, {0, 1}, 1));
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com>\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "RCPT TO:<a@example.org>\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "RCPT TO:<b@example.org>\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "DATA\r\n");
  reply("354 go\r\n");
  EXPECT_EQ(sent(), std::string(m->data_body()) + ".\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(rec_.outcomes.size(), 2u);
  EXPECT_EQ(rec_.find("b@example.org")->disposition, Disposition::kDelivered);
}

TEST_F(SessionTest, AllRecipientsRefusedWithoutPipeliningSendsRsetBeforeNextMail) {
  make();
  greet("250 mx.example\r\n");
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com>\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "RCPT TO:<a@example.org>\r\n");
  reply("550 5.1.1 unknown\r\n");
  EXPECT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(sent(), "");  // no DATA without an accepted recipient
  s_->add_txn(txn(m, {1}, 2));
  EXPECT_EQ(sent(), "RSET\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com>\r\n");
}

TEST_F(SessionTest, EhloRefusedFallsBackToHelo) {
  make();
  reply("220 old.example\r\n");
  EXPECT_EQ(sent(), "EHLO client.example\r\n");
  reply("502 5.5.2 command not recognized\r\n");
  EXPECT_EQ(sent(), "HELO client.example\r\n");
  reply("250 old.example\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kReady);
  EXPECT_FALSE(s_->caps().pipelining);
}

TEST_F(SessionTest, RefusedGreetingFailsBeforeReadyWithoutVerdicts) {
  make();
  reply("554 5.7.1 go away\r\n");
  EXPECT_TRUE(s_->done());
  EXPECT_TRUE(s_->failed_before_ready());
  ASSERT_TRUE(s_->last_error().has_value());
  EXPECT_EQ(s_->last_error()->code, 554);
  EXPECT_TRUE(rec_.outcomes.empty());
}

TEST_F(SessionTest, Reply421DefersEverythingUndecidedAndEnds) {
  make();
  greet(kEhloPipe);
  auto m = message();
  s_->add_txn(txn(m, {0, 1}, 1));
  sent();
  reply("250 ok\r\n550 5.1.1 unknown\r\n421 4.7.0 too busy, closing\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 2u);
  EXPECT_EQ(rec_.find("a@example.org")->disposition, Disposition::kBounced);
  EXPECT_EQ(rec_.find("b@example.org")->disposition, Disposition::kDeferred);
  EXPECT_EQ(rec_.find("b@example.org")->code, 421);
  EXPECT_TRUE(s_->done());
  EXPECT_TRUE(s_->server_closing());
  EXPECT_EQ(rec_.done.size(), 1u);
}

TEST_F(SessionTest, TimeoutAfterBodyIsAnUnknownOutcome) {
  make();
  greet(kEhloPipe);
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  sent();
  reply("250 ok\r\n250 ok\r\n354 go\r\n");
  sent();
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kDataDone);
  s_->on_timeout();
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDeferred);
  EXPECT_TRUE(rec_.outcomes[0].unknown);
  EXPECT_EQ(rec_.outcomes[0].enhanced, "4.4.2");
  EXPECT_TRUE(s_->done());
}

TEST_F(SessionTest, ConnectionLostWhileTheBodyIsStillBeingSentIsNotUnknown) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {0}, 1));
  sent();
  reply("250 ok\r\n250 ok\r\n354 go\r\n");
  // The body and final dot are queued but the socket has not taken them
  // (no sent()): the server cannot have accepted the message.
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kDataDone);
  s_->on_closed("reset by peer");
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDeferred);
  EXPECT_FALSE(rec_.outcomes[0].unknown);
}

TEST_F(SessionTest, ConnectionLostBeforeBodyIsNotUnknown) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {0}, 1));
  sent();
  reply("250 ok\r\n");
  s_->on_closed("reset by peer");
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDeferred);
  EXPECT_FALSE(rec_.outcomes[0].unknown);
}

TEST_F(SessionTest, UnexpectedReplyIsADesyncThatDefers) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {0}, 1));
  sent();
  reply("250 ok\r\n250 ok\r\n354 go\r\n");
  sent();
  reply("250 ok\r\n250 extra\r\n");
  // The extra reply arrived with nothing expected: the session fails, but the
  // recipient was already decided by the first one.
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDelivered);
  EXPECT_TRUE(s_->done());
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.5.0");
}

TEST_F(SessionTest, MalformedReplyDefersNeverBounces) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {0, 1}, 1));
  sent();
  reply("250-ok\r\n550 mixed codes\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 2u);
  for (const auto& o : rec_.outcomes) {
    EXPECT_EQ(o.disposition, Disposition::kDeferred);
  }
}

TEST_F(SessionTest, MailRefusedDecidesAllRecipientsAnd503NeverBounces) {
  make();
  greet(kEhloPipe);
  auto m = message();
  s_->add_txn(txn(m, {0, 1}, 1));
  sent();
  reply(
      "550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
      "503 5.5.1 need RCPT\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 2u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kBounced);
  EXPECT_EQ(rec_.outcomes[0].stage, Stage::kMail);
  EXPECT_EQ(rec_.done.size(), 1u);
  EXPECT_TRUE(s_->idle());

  s_->add_txn(txn(m, {2}, 2));
  sent();
  reply("503 5.5.1 nested MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 3u);
  EXPECT_EQ(rec_.outcomes[2].disposition, Disposition::kDeferred);
}

TEST_F(SessionTest, Rcpt552IsTreatedAs452) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {0}, 1));
  sent();
  reply("250 ok\r\n552 5.2.2 mailbox full\r\n554 5.5.1 no valid recipients\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDeferred);
}

TEST_F(SessionTest, DataRefusedAfterAcceptedRcptThenRsetBeforeNextTransaction) {
  make();
  greet(kEhloPipe);
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  sent();
  reply("250 ok\r\n250 ok\r\n451 4.3.0 no queue space\r\n");
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kDeferred);
  EXPECT_EQ(rec_.outcomes[0].stage, Stage::kData);
  s_->add_txn(txn(m, {1}, 2));
  EXPECT_EQ(sent().rfind("RSET\r\nMAIL FROM:", 0), 0u);
}

TEST_F(SessionTest, MessageOverServerSizeBouncesLocallyWithoutSending) {
  make();
  greet("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 2000\r\n");
  std::string big = "Subject: big\r\n\r\n" + std::string(3000, 'x') + "\r\n";
  s_->add_txn(txn(message(big), {0, 1}, 1));
  EXPECT_EQ(sent(), "");
  ASSERT_EQ(rec_.outcomes.size(), 2u);
  EXPECT_EQ(rec_.outcomes[0].disposition, Disposition::kBounced);
  EXPECT_EQ(rec_.outcomes[0].stage, Stage::kLocal);
  EXPECT_EQ(rec_.outcomes[0].enhanced, "5.3.4");
  EXPECT_EQ(rec_.done.size(), 1u);
}

TEST_F(SessionTest, Utf8AddressNeedsSmtputf8) {
  make();
  greet(kEhloPipe);
  s_->add_txn(txn(message(), {4, 0}, 1));
  std::string cmds = sent();
  EXPECT_NE(cmds.find("RCPT TO:<a@example.org>"), std::string::npos);
  EXPECT_EQ(cmds.find("\xc3"), std::string::npos);  // the UTF-8 address is never sent
  EXPECT_EQ(cmds.find("SMTPUTF8"), std::string::npos);
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].rcpt, "é@example.org");
  EXPECT_EQ(rec_.outcomes[0].enhanced, "5.6.7");
}

TEST_F(SessionTest, DotStuffedBodyAndEightBitMime) {
  make();
  greet(kEhloPipe);
  auto m = message("Subject: x\n\n.leading dot\nmiddle\n..two\ncaf\xc3\xa9\n");
  s_->add_txn(txn(m, {0}, 1));
  std::string cmds = sent();
  EXPECT_NE(cmds.find(" BODY=8BITMIME"), std::string::npos);
  reply("250 ok\r\n250 ok\r\n354 go\r\n");
  EXPECT_EQ(sent(), "Subject: x\r\n\r\n..leading dot\r\nmiddle\r\n...two\r\ncaf\xc3\xa9\r\n.\r\n");
}

TEST_F(SessionTest, TransactionsQueuedBeforeFailureAreReturnedUnattempted) {
  DeliverySession::Options o;
  o.max_pipelined_txns = 2;
  make(o);
  greet("250-mx.example\r\n250 PIPELINING\r\n");
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  s_->add_txn(txn(m, {1}, 2));  // waits behind the first DATA sync point
  std::string first = sent();
  EXPECT_EQ(first.find("RCPT TO:<b@"), std::string::npos);
  s_->on_closed("reset");
  EXPECT_EQ(rec_.returned, std::vector<uint64_t>{2});
  ASSERT_EQ(rec_.outcomes.size(), 1u);
  EXPECT_EQ(rec_.outcomes[0].rcpt, "a@example.org");
}

TEST_F(SessionTest, WaitGenerationChangesOncePerWait) {
  make();
  uint64_t g0 = s_->wait_generation();
  reply("220-mx");
  EXPECT_EQ(s_->wait_generation(), g0);  // trickled bytes do not extend the deadline
  reply(".example\r\n220 ok\r\n");
  EXPECT_NE(s_->wait_generation(), g0);
}

// ---------------------------------------------------------------------------
// STARTTLS (RFC 3207) and AUTH (RFC 4954), scripted.

constexpr std::string_view kEhloTls =
    "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-SIZE 100000\r\n"
    "250 STARTTLS\r\n";
// What the server says after TLS: no PIPELINING, no CHUNKING, AUTH offered.
constexpr std::string_view kEhloAfterTls =
    "250-mx.example\r\n250-SIZE 200000\r\n250 AUTH PLAIN LOGIN\r\n";

class TlsSessionTest : public SessionTest {
 protected:
  DeliverySession::Options tls_options(TlsPolicy p) {
    DeliverySession::Options o;
    o.tls = p;
    return o;
  }
  /// Greeting and EHLO with STARTTLS offered; expects STARTTLS to be sent.
  void to_starttls(std::string_view ehlo = kEhloTls) {
    reply("220 mx.example ESMTP\r\n");
    EXPECT_EQ(sent(), "EHLO client.example\r\n");
    reply(ehlo);
    EXPECT_EQ(sent(), "STARTTLS\r\n");  // alone: never pipelined with anything
    EXPECT_EQ(s_->phase(), DeliverySession::Phase::kStartTls);
    EXPECT_EQ(s_->wait(), DeliverySession::Wait::kStartTls);
  }
  void feed_whole(std::string_view bytes) { s_->on_data(std::span<const char>(bytes)); }
};

TEST_F(TlsSessionTest, StartTlsThenEhloAgainUsingOnlyPostTlsCapabilities) {
  make(tls_options(TlsPolicy::kOpportunistic));
  to_starttls();
  reply("220 2.0.0 ready\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kTlsHandshake);
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kNone);  // the driver times the handshake
  EXPECT_EQ(sent(), "");
  s_->on_tls_established();
  EXPECT_TRUE(s_->tls_active());
  EXPECT_EQ(sent(), "EHLO client.example\r\n");  // RFC 3207 4.2: ask again
  reply(kEhloAfterTls);
  ASSERT_EQ(s_->phase(), DeliverySession::Phase::kReady);
  // Pre-TLS PIPELINING and CHUNKING are forgotten: one command at a time, DATA.
  EXPECT_FALSE(s_->caps().pipelining);
  EXPECT_FALSE(s_->caps().chunking);
  EXPECT_FALSE(s_->caps().starttls);
  EXPECT_EQ(s_->caps().size_limit, 200000u);
  auto m = message();
  s_->add_txn(txn(m, {0}, 1));
  EXPECT_EQ(sent(), "MAIL FROM:<s@example.com> SIZE=" + std::to_string(m->size()) + "\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "RCPT TO:<a@example.org>\r\n");
  reply("250 ok\r\n");
  EXPECT_EQ(sent(), "DATA\r\n");
}

TEST_F(TlsSessionTest, ReplyQueuedBehindThe220IsResponseInjection) {
  make(tls_options(TlsPolicy::kRequired));
  to_starttls();
  // A man in the middle appends a reply before the handshake (NO STARTTLS).
  feed_whole("220 2.0.0 ready\r\n250-mx.example\r\n250 AUTH PLAIN\r\n");
  EXPECT_TRUE(s_->done());
  EXPECT_TRUE(s_->failed_before_ready());
  EXPECT_EQ(s_->failure_stage(), Stage::kTls);
  EXPECT_FALSE(s_->plaintext_retry_wanted());  // required: no plaintext
  ASSERT_TRUE(s_->last_error().has_value());
  EXPECT_EQ(s_->last_error()->code, 451);
  EXPECT_NE(s_->last_error()->text.find("response injection"), std::string::npos);
  EXPECT_EQ(sent(), "");  // nothing more is said on a tampered connection
}

TEST_F(TlsSessionTest, InjectionUnderOpportunisticAsksForAPlaintextConnection) {
  make(tls_options(TlsPolicy::kOpportunistic));
  to_starttls();
  feed_whole("220 ready\r\n250 injected\r\n");
  EXPECT_TRUE(s_->done());
  EXPECT_TRUE(s_->plaintext_retry_wanted());
  EXPECT_FALSE(s_->tls_active());
}

TEST_F(TlsSessionTest, RequiredWithoutStartTlsDefersAndQuits) {
  make(tls_options(TlsPolicy::kRequired));
  greet_without_ready(kEhloPipe);
  EXPECT_EQ(sent(), "QUIT\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kQuitting);
  EXPECT_EQ(s_->failure_stage(), Stage::kTls);
  ASSERT_TRUE(s_->last_error().has_value());
  EXPECT_EQ(s_->last_error()->code, 451);
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.4");
  reply("221 bye\r\n");
  EXPECT_TRUE(s_->done());
  EXPECT_TRUE(s_->failed_before_ready());
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.4");  // not the 221
}

TEST_F(TlsSessionTest, VerifyWithStartTlsRefusedDefers) {
  make(tls_options(TlsPolicy::kVerify));
  to_starttls();
  reply("454 4.7.0 TLS not available\r\n");
  EXPECT_EQ(sent(), "QUIT\r\n");
  EXPECT_EQ(s_->failure_stage(), Stage::kTls);
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.4");
  EXPECT_NE(s_->last_error()->text.find("454"), std::string::npos);
}

TEST_F(TlsSessionTest, OpportunisticGoesOnInPlaintextWhenStartTlsIsRefused) {
  make(tls_options(TlsPolicy::kOpportunistic));
  to_starttls();
  reply("454 4.7.0 TLS not available\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kReady);
  EXPECT_FALSE(s_->tls_active());
  EXPECT_TRUE(s_->caps().pipelining);  // the (only) EHLO's capabilities
}

TEST_F(TlsSessionTest, OpportunisticWithoutStartTlsOfferedIsPlaintext) {
  make(tls_options(TlsPolicy::kOpportunistic));
  greet(kEhloPipe);
  EXPECT_FALSE(s_->tls_active());
}

TEST_F(TlsSessionTest, PolicyNoneNeverSendsStartTls) {
  make(tls_options(TlsPolicy::kNone));
  greet(kEhloTls);
}

TEST_F(TlsSessionTest, HandshakeFailureDefersAndOnlyOpportunisticRetriesInPlaintext) {
  for (TlsPolicy p : {TlsPolicy::kOpportunistic, TlsPolicy::kRequired, TlsPolicy::kVerify}) {
    SCOPED_TRACE(static_cast<int>(p));
    make(tls_options(p));
    to_starttls();
    reply("220 ready\r\n");
    s_->on_tls_failed("with mx.example: ASN date error, current date after");
    EXPECT_TRUE(s_->done());
    EXPECT_TRUE(s_->failed_before_ready());
    EXPECT_EQ(s_->failure_stage(), Stage::kTls);
    EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.5");
    EXPECT_EQ(s_->plaintext_retry_wanted(), p == TlsPolicy::kOpportunistic);
    EXPECT_EQ(sent(), "");
  }
}

TEST_F(TlsSessionTest, SetTlsPolicyBeforeConnectSkipsStartTls) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.ehlo_name = "client.example";
  s_.emplace(std::move(o), &rec_);
  s_->set_tls_policy(TlsPolicy::kNone);  // the driver's plaintext fallback
  s_->on_connected();
  greet(kEhloTls);
}

TEST_F(TlsSessionTest, ImplicitTlsIsActiveFromTheGreeting) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.implicit_tls = true;
  o.auth_user = "relay-user";
  o.auth_password = "s3cret";
  make(o);
  EXPECT_TRUE(s_->tls_active());
  reply("220 smarthost ESMTP\r\n");
  EXPECT_EQ(sent(), "EHLO client.example\r\n");
  reply("250-smarthost\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n");
  // No STARTTLS inside TLS; AUTH at once.
  EXPECT_EQ(sent(), "AUTH PLAIN AHJlbGF5LXVzZXIAczNjcmV0\r\n");
  EXPECT_EQ(s_->wait(), DeliverySession::Wait::kAuth);
  reply("235 2.7.0 ok\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kReady);
}

TEST_F(TlsSessionTest, AuthPlainAfterStartTls) {
  DeliverySession::Options o = tls_options(TlsPolicy::kRequired);
  o.auth_user = "u";
  o.auth_password = "p";
  make(o);
  to_starttls();
  reply("220 go\r\n");
  s_->on_tls_established();
  EXPECT_EQ(sent(), "EHLO client.example\r\n");
  reply(kEhloAfterTls);
  EXPECT_EQ(sent(), "AUTH PLAIN AHUAcA==\r\n");  // base64("\0u\0p")
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kAuth);
  EXPECT_FALSE(s_->can_accept_txn());
  reply("235 2.7.0 Authentication successful\r\n");
  EXPECT_TRUE(s_->can_accept_txn());
}

TEST_F(TlsSessionTest, AuthLoginWhenPlainIsNotOffered) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.implicit_tls = true;
  o.auth_user = "user";
  o.auth_password = "pass";
  make(o);
  reply("220 smarthost\r\n");
  EXPECT_EQ(sent(), "EHLO client.example\r\n");
  reply("250-smarthost\r\n250 AUTH LOGIN CRAM-MD5\r\n");
  EXPECT_EQ(sent(), "AUTH LOGIN\r\n");
  reply("334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(sent(), "dXNlcg==\r\n");
  reply("334 UGFzc3dvcmQ6\r\n");
  EXPECT_EQ(sent(), "cGFzcw==\r\n");
  reply("235 ok\r\n");
  EXPECT_EQ(s_->phase(), DeliverySession::Phase::kReady);
}

TEST_F(TlsSessionTest, AuthRefusedDefersWithTheServersWordsAndQuits) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.implicit_tls = true;
  o.auth_user = "user";
  o.auth_password = "wrong";
  make(o);
  reply("220 smarthost\r\n");
  sent();
  reply("250-smarthost\r\n250 AUTH PLAIN\r\n");
  sent();
  reply("535 5.7.8 Authentication credentials invalid\r\n");
  EXPECT_EQ(sent(), "QUIT\r\n");
  EXPECT_EQ(s_->failure_stage(), Stage::kAuth);
  EXPECT_EQ(s_->last_error()->code, 535);
  EXPECT_TRUE(s_->failed_before_ready());
  EXPECT_TRUE(rec_.outcomes.empty());  // nothing was assigned; the scheduler defers
}

TEST_F(TlsSessionTest, NoCredentialsOverPlaintextUnlessAllowed) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.auth_user = "user";
  o.auth_password = "pass";
  make(o);
  greet_without_ready("250-smarthost\r\n250 AUTH PLAIN LOGIN\r\n");
  EXPECT_EQ(sent(), "QUIT\r\n");  // never "AUTH PLAIN ..."
  EXPECT_EQ(s_->failure_stage(), Stage::kAuth);
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.10");

  o.auth_plaintext = true;
  make(o);
  greet_without_ready("250-smarthost\r\n250 AUTH PLAIN LOGIN\r\n");
  EXPECT_EQ(sent(), "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
}

TEST_F(TlsSessionTest, NoUsableMechanismDefers) {
  DeliverySession::Options o = tls_options(TlsPolicy::kOpportunistic);
  o.implicit_tls = true;
  o.auth_user = "user";
  o.auth_password = "pass";
  make(o);
  reply("220 smarthost\r\n");
  sent();
  reply("250-smarthost\r\n250 AUTH CRAM-MD5 XOAUTH2\r\n");
  EXPECT_EQ(sent(), "QUIT\r\n");
  EXPECT_EQ(s_->failure_stage(), Stage::kAuth);
  EXPECT_EQ(s_->last_error()->enhanced.str(), "4.7.4");
}

TEST_F(TlsSessionTest, TimeoutWaitingForStartTlsReplyIsATlsStageFailure) {
  make(tls_options(TlsPolicy::kRequired));
  to_starttls();
  s_->on_timeout();
  EXPECT_TRUE(s_->done());
  EXPECT_EQ(s_->failure_stage(), Stage::kTls);
  EXPECT_NE(s_->last_error()->text.find("STARTTLS"), std::string::npos);
}

TEST(ClassifyReply, FollowsRfc5321) {
  auto r = [](uint16_t code, const char* t) { return proto::make_reply(code, t); };
  EXPECT_EQ(classify_reply(r(250, "ok"), Stage::kBody), Disposition::kDelivered);
  EXPECT_EQ(classify_reply(r(451, "4.3.0 x"), Stage::kBody), Disposition::kDeferred);
  EXPECT_EQ(classify_reply(r(554, "5.7.1 spam"), Stage::kBody), Disposition::kBounced);
  EXPECT_EQ(classify_reply(r(550, "5.1.1 x"), Stage::kRcpt), Disposition::kBounced);
  EXPECT_EQ(classify_reply(r(552, "5.2.2 x"), Stage::kRcpt), Disposition::kDeferred);
  EXPECT_EQ(classify_reply(r(554, "5.7.1 x"), Stage::kGreeting), Disposition::kDeferred);
  EXPECT_EQ(classify_reply(r(503, "5.5.1 x"), Stage::kMail), Disposition::kDeferred);
  EXPECT_EQ(classify_reply(r(550, "5.7.1 x"), Stage::kMail), Disposition::kBounced);
}

}  // namespace
}  // namespace ringmail::engine
