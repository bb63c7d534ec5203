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
