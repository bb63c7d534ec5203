// Bounce classification (proto/bounce.h): the class a final or deferred
// outcome is reported with, from the reply code, enhanced code, text and
// the stage it happened at; and the RFC 3464 report's per-recipient dates.
#include "proto/bounce.h"

#include <gtest/gtest.h>

namespace ringmail::proto {
namespace {

std::string_view cls(uint16_t code, std::string_view enhanced, std::string_view text,
                     FailureStage stage = FailureStage::kSmtp) {
  return failure_class_name(classify_failure(code, enhanced, text, stage));
}

TEST(Bounce, EnhancedCodesDecide) {
  EXPECT_EQ(cls(550, "5.1.1", "user unknown"), "invalid_recipient");
  EXPECT_EQ(cls(550, "5.1.2", "bad destination system"), "invalid_domain");
  EXPECT_EQ(cls(556, "5.1.10", "null MX"), "invalid_domain");
  EXPECT_EQ(cls(452, "4.2.2", "mailbox full"), "mailbox_full");
  EXPECT_EQ(cls(552, "5.2.2", "over quota"), "mailbox_full");
  EXPECT_EQ(cls(550, "5.7.1", "message blocked by policy"), "policy_block");
  EXPECT_EQ(cls(554, "5.7.1", "virus found in content"), "content_rejected");
  EXPECT_EQ(cls(550, "5.6.0", "message rejected"), "content_rejected");
  EXPECT_EQ(cls(552, "5.3.4", "message too big"), "content_rejected");
  EXPECT_EQ(cls(554, "5.4.7", "delivery time expired"), "expired");
}

TEST(Bounce, ThrottlingRepliesAreRateLimited) {
  EXPECT_EQ(cls(421, "4.7.0", "too many connections"), "rate_limited");
  EXPECT_EQ(cls(450, "4.7.28", "unusual rate of mail"), "rate_limited");
  EXPECT_EQ(cls(451, "", "try again later"), "rate_limited");
  EXPECT_TRUE(is_throttling_reply(421, "", "closing"));
  EXPECT_FALSE(is_throttling_reply(550, "5.1.1", "user unknown"));
}

TEST(Bounce, GreylistingIsRecognisedAndOnlyAsATemporaryReply) {
  EXPECT_TRUE(
      is_greylisting_reply(451, "4.7.1 <a@b.test>: Recipient address rejected: Greylisted"));
  EXPECT_TRUE(is_greylisting_reply(450, "Graylisted, please try again later"));
  EXPECT_TRUE(is_greylisting_reply(451, "4.7.1 grey-listed for 300 seconds"));
  EXPECT_FALSE(is_greylisting_reply(451, "4.7.1 rate limit exceeded"));
  EXPECT_FALSE(is_greylisting_reply(550, "5.7.1 greylisted forever?"));
  EXPECT_FALSE(is_greylisting_reply(250, "greylist ok"));
}

TEST(Bounce, LocalConnectionFailuresAreConnectionWhateverTheStep) {
  // What the client session reports itself when the server misbehaves
  // after the session was ready (stage SMTP): timeouts, a lost connection,
  // a protocol error.
  EXPECT_EQ(cls(451, "4.4.2", "timeout waiting for the reply to MAIL FROM"), "connection");
  EXPECT_EQ(cls(451, "4.4.2", "connection lost: closed by the server"), "connection");
  EXPECT_EQ(cls(451, "4.4.1", "no answer"), "connection");
  EXPECT_EQ(cls(451, "4.5.0", "protocol error: reply code changed between lines"), "connection");
  // A server's own 5.5.x syntax complaint is not a connection failure.
  EXPECT_NE(cls(500, "5.5.1", "command unrecognized"), "connection");
  // Before the session is ready the stage decides.
  EXPECT_EQ(cls(451, "4.4.2", "timeout waiting for the greeting", FailureStage::kConnection),
            "connection");
}

TEST(Bounce, StagesOverrideTheReply) {
  EXPECT_EQ(cls(451, "4.4.3", "SERVFAIL", FailureStage::kDns), "dns_failure");
  EXPECT_EQ(cls(550, "5.1.2", "NXDOMAIN", FailureStage::kDns), "invalid_domain");
  EXPECT_EQ(cls(451, "4.7.5", "handshake failed", FailureStage::kTls), "tls_failure");
  EXPECT_EQ(cls(550, "5.4.7", "expired", FailureStage::kExpiry), "expired");
  EXPECT_EQ(cls(554, "5.0.0", "dropped", FailureStage::kOperator), "dropped");
  EXPECT_EQ(cls(250, "2.0.0", "ok"), "none");
  EXPECT_EQ(cls(554, "", "transaction failed"), "other");
}

TEST(Bounce, ReportGivesEachRecipientItsOwnLastAttemptDate) {
  EXPECT_EQ(rfc5322_date(1'767'225'600), "Thu, 01 Jan 2026 00:00:00 +0000");
  DsnInput in;
  in.reporting_mta = "mta.example.test";
  in.to = "owner@example.test";
  in.arrival_date = rfc5322_date(1'767'225'600);
  in.date = rfc5322_date(1'767'225'600 + 302);
  in.message_id = "<dsn.1@mta.example.test>";
  in.boundary = "b1";
  DsnRecipient tried;
  tried.recipient = "tried@example.net";
  tried.status = "5.1.1";
  tried.last_attempt_date = rfc5322_date(1'767'225'600 + 61);
  DsnRecipient never;  // e.g. expired without an attempt whose time is known
  never.recipient = "never@example.net";
  never.status = "5.4.7";
  in.recipients = {tried, never};
  in.original = "Subject: x\r\n\r\nbody\r\n";
  std::string out;
  build_dsn(out, in);
  EXPECT_NE(out.find("Date: Thu, 01 Jan 2026 00:05:02 +0000\r\n"), std::string::npos) << out;
  size_t a = out.find("Final-Recipient: rfc822; tried@example.net");
  size_t b = out.find("Final-Recipient: rfc822; never@example.net");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  std::string first = out.substr(a, b - a);
  std::string second = out.substr(b, out.find("--b1", b) - b);
  EXPECT_NE(first.find("Last-Attempt-Date: Thu, 01 Jan 2026 00:01:01 +0000\r\n"), std::string::npos)
      << first;
  EXPECT_EQ(second.find("Last-Attempt-Date:"), std::string::npos) << second;
}

}  // namespace
}  // namespace ringmail::proto
