// ServerSession driven by scripted client bytes; no sockets.
#include "proto/smtp_server.h"

#include <gtest/gtest.h>

#include "tests/proto/server_harness.h"

namespace ringmail::proto {
namespace {

using Action = ServerSession::Action;
using test::Harness;
using test::HeapBytes;

constexpr std::string_view kEhloReply =
    "250-localhost\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250-CHUNKING\r\n"
    "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n";

TEST(ServerSession, BasicTransaction) {
  Harness h;
  EXPECT_EQ(h.greeting, "220 localhost ESMTP ringmail\r\n");
  EXPECT_EQ(h.send("EHLO client.example\r\n"), kEhloReply);
  EXPECT_EQ(h.s.helo_name(), "client.example");
  EXPECT_TRUE(h.s.ehlo());
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.send("RCPT TO:<c@d.example>\r\n"), "250 2.1.5 Ok\r\n");
  EXPECT_EQ(h.send("DATA\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(h.send("Subject: hi\r\n\r\n..dot\r\n.\r\n"), "250 2.0.0 Ok\r\n");
  ASSERT_EQ(h.bodies.size(), 1u);
  EXPECT_EQ(h.bodies[0], "Subject: hi\r\n\r\n.dot\r\n");
  EXPECT_EQ(h.s.messages_accepted(), 1u);
  EXPECT_EQ(h.send("QUIT\r\n"), "221 2.0.0 Bye\r\n");
  EXPECT_EQ(h.last, Action::kClose);
  EXPECT_TRUE(h.s.closed());
  EXPECT_EQ(h.s.close_reason(), "quit");
  HeapBytes more("NOOP\r\n");
  ServerSession::FeedResult r = h.s.feed(more.span());
  EXPECT_EQ(r.consumed, 0u);
  EXPECT_EQ(r.action, Action::kClose);
  EXPECT_EQ(h.decisions, (std::vector<DecisionKind>{DecisionKind::kHelo, DecisionKind::kMail,
                                                    DecisionKind::kRcpt, DecisionKind::kMessage}));
}

TEST(ServerSession, DecisionCarriesTheCommand) {
  Harness h;
  std::string sender;
  std::vector<std::string> rcpts;
  h.decide = [&](ServerSession& s) {
    const Decision& d = s.decision();
    if (d.kind == DecisionKind::kMail) {
      sender = d.command->path.str();
      EXPECT_EQ(d.command->mail.size, 100u);
    } else if (d.kind == DecisionKind::kRcpt) {
      rcpts.push_back(d.command->path.str());
      EXPECT_EQ(d.transaction->sender.str(), "a@b.example");
    } else if (d.kind == DecisionKind::kMessage) {
      EXPECT_EQ(d.transaction->recipients.size(), 2u);
      std::string body = s.take_body();
      EXPECT_EQ(body, "x\r\n");
      s.respond(250, "2.0.0 Ok: queued as 4F2A");
      return;
    }
    s.accept();
  };
  h.send("EHLO c\r\n");
  std::string out = h.send(
      "MAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<r1@x.example>\r\nRCPT TO:<r2@x.example>\r\n"
      "DATA\r\n");
  EXPECT_EQ(out,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with "
            "<CR><LF>.<CR><LF>\r\n");
  EXPECT_EQ(h.send("x\r\n.\r\n"), "250 2.0.0 Ok: queued as 4F2A\r\n");
  EXPECT_EQ(sender, "a@b.example");
  EXPECT_EQ(rcpts, (std::vector<std::string>{"r1@x.example", "r2@x.example"}));
}

// The same client conversation, each write split at every point, gives the
// same replies and the same message.
TEST(ServerSession, PipelinedGroupsAtEverySplit) {
  const std::vector<std::string> writes = {
      "EHLO c\r\n",
      "MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n",
      "line 1\r\n.line2\r\n\r\n.\r\nRSET\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<c@x.example>\r\n"
      "BDAT 4\r\nabcdBDAT 3 LAST\r\nefgQUIT\r\n",
  };
  std::string expected;
  {
    Harness h;
    for (const std::string& w : writes) {
      expected += h.send(w);
    }
    ASSERT_EQ(h.bodies, (std::vector<std::string>{"line 1\r\nline2\r\n\r\n", "abcdefg"}));
    EXPECT_EQ(h.last, Action::kClose);
  }
  for (size_t w = 0; w < writes.size(); ++w) {
    for (const auto& pieces : test::all_splits(writes[w])) {
      Harness h;
      std::string out;
      for (size_t i = 0; i < w; ++i) {
        out += h.send(writes[i]);
      }
      // Pieces of one write arrive separately; carry unconsumed bytes on.
      std::string carry;
      for (const std::string& p : pieces) {
        out += h.send(carry + p);
        carry = h.leftover;
      }
      for (size_t i = w + 1; i < writes.size(); ++i) {
        out += h.send(writes[i]);
      }
      EXPECT_EQ(out, expected) << "write " << w << " in " << pieces.size() << " pieces";
      EXPECT_EQ(h.bodies, (std::vector<std::string>{"line 1\r\nline2\r\n\r\n", "abcdefg"}));
    }
  }
}

TEST(ServerSession, SequencingErrors) {
  struct Case {
    std::vector<std::string> script;
    std::string last_reply;
  };
  const Case cases[] = {
      {{"MAIL FROM:<a@b.example>\r\n"}, "503 5.5.1 Error: send HELO/EHLO first\r\n"},
      {{"EHLO c\r\n", "RCPT TO:<a@b.example>\r\n"}, "503 5.5.1 Error: need MAIL command\r\n"},
      {{"EHLO c\r\n", "DATA\r\n"}, "503 5.5.1 Error: need MAIL command\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "DATA\r\n"},
       "554 5.5.1 Error: no valid recipients\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "MAIL FROM:<a@b.example>\r\n"},
       "503 5.5.1 Error: nested MAIL command\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "RSET\r\n", "RCPT TO:<x@y.example>\r\n"},
       "503 5.5.1 Error: need MAIL command\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "EHLO c\r\n", "RCPT TO:<x@y.example>\r\n"},
       "503 5.5.1 Error: need MAIL command\r\n"},
      {{"XYZZY\r\n"}, "500 5.5.2 Error: command not recognized\r\n"},
      {{"NOOP\n"}, "500 5.5.2 Error: bare <LF> received\r\n"},
      {{"EHLO\r\n"}, "501 5.5.4 Syntax: EHLO hostname\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example> FOO=1\r\n"},
       "555 5.5.4 Unsupported parameter FOO\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example> RET=FULL\r\n"},
       "555 5.5.4 Error: DSN not supported\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "RCPT TO:<x@y.example> NOTIFY=NEVER\r\n"},
       "555 5.5.4 Error: DSN not supported\r\n"},
      {{"HELO c\r\n", "MAIL FROM:<a@b.example> SIZE=10\r\n"},
       "555 5.5.4 Error: parameters need EHLO\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<\xc3\xa9@b.example>\r\n"},
       "553 5.6.7 Error: SMTPUTF8 required for this address\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example>\r\n", "RCPT TO:<\xc3\xa9@b.example>\r\n"},
       "553 5.6.7 Error: SMTPUTF8 required for this address\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example> SIZE=52428801\r\n"},
       "552 5.3.4 Error: message size exceeds fixed limit\r\n"},
      {{"EHLO c\r\n", "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"},
       "555 5.5.4 Error: BINARYMIME not supported\r\n"},
      {{"EHLO c\r\n", "STARTTLS\r\n"}, "502 5.5.1 Error: command not implemented\r\n"},
      {{"EHLO c\r\n", "AUTH PLAIN\r\n"}, "503 5.5.1 Error: authentication not enabled\r\n"},
      {{"VRFY user\r\n"}, "252 2.0.0 Send some mail, I'll try my best\r\n"},
      {{"HELP\r\n"}, "214 2.0.0 See RFC 5321\r\n"},
      {{"NOOP\r\n"}, "250 2.0.0 Ok\r\n"},
  };
  for (const Case& c : cases) {
    Harness h;
    std::string out;
    for (const std::string& line : c.script) {
      out = h.send(line);
    }
    EXPECT_EQ(out, c.last_reply) << c.script.back();
    EXPECT_FALSE(h.s.closed()) << c.script.back();
  }
}

TEST(ServerSession, SmtpUtf8Accepted) {
  Harness h;
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("MAIL FROM:<\xc3\xa9@b.example> SMTPUTF8\r\n"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(h.send("RCPT TO:<\xc3\xa9@b\xc3\xa9.example>\r\n"), "250 2.1.5 Ok\r\n");
}

TEST(ServerSession, LineTooLongThenContinues) {
  ServerConfig c;
  c.max_line = 32;
  Harness h(c);
  EXPECT_EQ(h.send("NOOP " + std::string(100, 'x') + "\r\nNOOP\r\n"),
            "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
  // A 10 MB line in 64 KiB reads: bounded, one reply.
  std::string chunk(1 << 16, 'y');
  std::string out;
  for (int i = 0; i < 160; ++i) {
    out += h.send(chunk);
  }
  out += h.send("\r\n");
  EXPECT_EQ(out, "500 5.5.2 Error: line too long\r\n");
}

TEST(ServerSession, DataTooBigIsRefusedAfterTheTerminator) {
  ServerConfig c;
  c.max_message = 100;
  Harness h(c);
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
  std::string out = h.send(std::string(500, 'z') + "\r\n");
  EXPECT_EQ(out, "");
  EXPECT_EQ(h.send(".\r\n"), "552 5.3.4 Error: message too big\r\n");
  EXPECT_TRUE(h.bodies.empty());
  EXPECT_EQ(h.send("RCPT TO:<x@y.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
}

TEST(ServerSession, TooManyRecipientsIsNotAHardError) {
  ServerConfig c;
  c.max_recipients = 2;
  c.max_hard_errors = 3;
  Harness h(c);
  h.send("EHLO c\r\n");
  std::string group = "MAIL FROM:<a@b.example>\r\n";
  for (int i = 0; i < 6; ++i) {
    group += "RCPT TO:<r" + std::to_string(i) + "@x.example>\r\n";
  }
  std::string out = h.send(group);
  EXPECT_EQ(out,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many "
            "recipients\r\n452 4.5.3 Error: too many recipients\r\n452 4.5.3 Error: too many "
            "recipients\r\n452 4.5.3 Error: too many recipients\r\n");
  EXPECT_FALSE(h.s.closed());
  EXPECT_EQ(h.s.hard_errors(), 0u);
}

TEST(ServerSession, RejectedRecipientsMeanNoValidRecipients) {
  Harness h;
  h.decide = [](ServerSession& s) {
    if (s.decision().kind == DecisionKind::kRcpt) {
      s.respond(550, "5.1.1 User unknown");
    } else {
      s.accept();
    }
  };
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n"),
            "250 2.1.0 Ok\r\n550 5.1.1 User unknown\r\n554 5.5.1 Error: no valid recipients\r\n");
  EXPECT_EQ(h.s.hard_errors(), 2u);
}

TEST(ServerSession, BareLineEndInDataIsRefusedUnderReject) {
  Harness h;
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
  EXPECT_EQ(h.send("a\nb\r\n.\r\n"), "550 5.6.0 Error: bare CR or LF in message\r\n");
  EXPECT_TRUE(h.bodies.empty());
  EXPECT_EQ(h.send("RCPT TO:<x@y.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
}

TEST(ServerSession, BareLineEndNormalisedUnderNormalize) {
  ServerConfig c;
  c.bare_line = BareLinePolicy::kNormalize;
  Harness h(c);
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
  EXPECT_EQ(h.send("a\nb\r\n.\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.bodies, (std::vector<std::string>{"a\r\nb\r\n"}));
}

// CVE-2023-51764 class: a fake end of data followed by a second transaction.
TEST(ServerSession, SmugglingAttemptStaysOneMessage) {
  for (BareLinePolicy policy : {BareLinePolicy::kReject, BareLinePolicy::kNormalize}) {
    for (std::string ending : {"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n.\n", "\r.\r"}) {
      ServerConfig c;
      c.bare_line = policy;
      Harness h(c);
      h.send("EHLO c\r\n");
      h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
      std::string out = h.send("Subject: x\r\n\r\nhello" + ending +
                               "MAIL FROM:<admin@b.example>\r\nRCPT TO:<victim@y.example>\r\n"
                               "DATA\r\n\r\nsmuggled\r\n.\r\n");
      size_t mails = 0;
      for (DecisionKind k : h.decisions) {
        mails += k == DecisionKind::kMail ? 1 : 0;
      }
      EXPECT_EQ(mails, 1u) << ::testing::PrintToString(ending);
      if (policy == BareLinePolicy::kReject) {
        EXPECT_EQ(out, "550 5.6.0 Error: bare CR or LF in message\r\n");
      } else {
        EXPECT_EQ(out, "250 2.0.0 Ok\r\n");
        ASSERT_EQ(h.bodies.size(), 1u);
        EXPECT_NE(h.bodies[0].find("MAIL FROM:<admin"), std::string::npos);
      }
    }
  }
}

TEST(ServerSession, Bdat) {
  Harness h;
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 5\r\nhello"), "250 2.0.0 5 octets received\r\n");
  EXPECT_EQ(h.send("BDAT 6 LAST\r\n world"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.bodies, (std::vector<std::string>{"hello world"}));
  // BDAT 0 LAST ends an empty-so-far message.
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 0 LAST\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.bodies.back(), "");
}

TEST(ServerSession, AwaitingTellsTheDriverWhatItWaitsFor) {
  using Awaiting = ServerSession::Awaiting;
  Harness h({}, /*start=*/false);
  EXPECT_EQ(h.s.awaiting(), Awaiting::kNothing);  // no greeting yet
  h.s.start();
  h.take_output();
  EXPECT_EQ(h.s.awaiting(), Awaiting::kLine);
  EXPECT_FALSE(h.s.partial_line());
  h.send("EHLO c\r\n");
  h.send("NO");
  EXPECT_TRUE(h.s.partial_line());
  h.send("OP\r\n");
  EXPECT_FALSE(h.s.partial_line());
  // An overlong line being skipped is still a partial line.
  h.send(std::string(5000, 'x'));
  EXPECT_TRUE(h.s.partial_line());
  h.send("\r\n");
  EXPECT_FALSE(h.s.partial_line());
  EXPECT_FALSE(h.s.in_transaction());
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_TRUE(h.s.in_transaction());
  h.send("DATA\r\n");
  EXPECT_EQ(h.s.awaiting(), Awaiting::kContent);
  EXPECT_EQ(h.s.content_bytes(), 0u);
  h.send("hello\r\n");
  EXPECT_EQ(h.s.content_bytes(), 7u);
  // A pending decision waits for the driver, not the client.
  HeapBytes end(".\r\n");
  ASSERT_EQ(h.s.feed(end.span()).action, ServerSession::Action::kDecide);
  EXPECT_EQ(h.s.content_bytes(), 10u);
  EXPECT_EQ(h.s.awaiting(), Awaiting::kNothing);
  h.s.accept();
  h.take_output();
  EXPECT_EQ(h.s.awaiting(), Awaiting::kLine);
  EXPECT_FALSE(h.s.in_transaction());
  // BDAT: chunking() spans the commands between chunks.
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_FALSE(h.s.chunking());
  h.send("BDAT 5\r\nhel");
  EXPECT_EQ(h.s.awaiting(), Awaiting::kContent);
  EXPECT_TRUE(h.s.chunking());
  h.send("lo");
  EXPECT_EQ(h.s.awaiting(), Awaiting::kLine);
  EXPECT_TRUE(h.s.chunking());
  EXPECT_EQ(h.s.content_bytes(), 15u);
  h.send("BDAT 1 LAST\r\n!");
  EXPECT_FALSE(h.s.chunking());
  EXPECT_EQ(h.s.content_bytes(), 16u);
  h.s.close_with(421, "4.4.2 bye");
  EXPECT_EQ(h.s.awaiting(), Awaiting::kNothing);
}

TEST(ServerSession, BdatChunkBytesAreNeverCommands) {
  Harness h;
  h.send("EHLO c\r\n");
  // No MAIL: refused, but "QUIT\r\n" inside the chunk is data, not a command.
  EXPECT_EQ(h.send("BDAT 6\r\nQUIT\r\nNOOP\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
  EXPECT_FALSE(h.s.closed());
  // MAIL but no recipient: 554, chunk consumed in pieces.
  h.send("MAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(h.send("BDAT 10 LAST\r\nQUIT\r\n"), "");
  EXPECT_EQ(h.send("RSET"), "554 5.5.1 Error: no valid recipients\r\n");
  EXPECT_EQ(h.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
  // The refused LAST chunk ended the transaction.
  EXPECT_EQ(h.send("RCPT TO:<x@y.example>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
}

TEST(ServerSession, BdatSizeOverflowCloses) {
  for (std::string line : {"BDAT 18446744073709551616\r\n", "BDAT 12x\r\n", "BDAT\r\n"}) {
    Harness h;
    h.send("EHLO c\r\n");
    std::string out = h.send(line + "x");
    EXPECT_EQ(out.substr(0, 23), "501 5.5.4 Syntax: BDAT ") << line;
    EXPECT_EQ(h.last, Action::kClose);
    EXPECT_EQ(h.s.close_reason(), "bad BDAT");
  }
}

TEST(ServerSession, BdatTooBigFailsTheRestOfTheTransaction) {
  ServerConfig c;
  c.max_message = 8;
  Harness h(c);
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 6\r\n123456"), "250 2.0.0 6 octets received\r\n");
  EXPECT_EQ(h.send("BDAT 6\r\n789012"), "552 5.3.4 Error: message too big\r\n");
  EXPECT_EQ(h.send("BDAT 2 LAST\r\nab"), "554 5.5.0 Error: transaction failed; send RSET\r\n");
  EXPECT_TRUE(h.bodies.empty());
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(ServerSession, BdatAndDataDoNotMix) {
  Harness h;
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  h.send("BDAT 2\r\nab");
  EXPECT_EQ(h.send("DATA\r\n"), "503 5.5.1 Error: DATA during BDAT transfer\r\n");
  EXPECT_EQ(h.send("RCPT TO:<z@y.example>\r\n"), "503 5.5.1 Error: RCPT during BDAT transfer\r\n");
  EXPECT_EQ(h.send("BDAT 1 LAST\r\nc"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.bodies, (std::vector<std::string>{"abc"}));
}

TEST(ServerSession, BdatBareLineEnds) {
  Harness h;
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 3 LAST\r\na\nb"), "550 5.6.0 Error: bare CR or LF in message\r\n");
  // A CRLF split across chunks is fine; a CR at the very end is not.
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 2\r\na\r"), "250 2.0.0 2 octets received\r\n");
  EXPECT_EQ(h.send("BDAT 1 LAST\r\n\n"), "250 2.0.0 Ok\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 2 LAST\r\na\r"), "550 5.6.0 Error: bare CR or LF in message\r\n");
  // BINARYMIME content is opaque.
  ServerConfig c;
  c.binarymime = true;
  Harness b(c);
  b.send("EHLO c\r\n");
  b.send("MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(b.send("DATA\r\n"), "503 5.5.1 Error: BINARYMIME requires BDAT\r\n");
  EXPECT_EQ(b.send("BDAT 3 LAST\r\na\nb"), "250 2.0.0 Ok\r\n");
}

TEST(ServerSession, KeepBodyOffCountsOnly) {
  ServerConfig c;
  c.keep_body = false;
  Harness h(c);
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
  EXPECT_EQ(h.send("abc\r\n.\r\n"), "250 2.0.0 Ok\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  EXPECT_EQ(h.send("BDAT 4 LAST\r\nabcd"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.bodies, (std::vector<std::string>{"", ""}));
  EXPECT_EQ(h.body_sizes, (std::vector<uint64_t>{5, 4}));
}

TEST(ServerSession, EarlyTalker) {
  Harness h({}, /*start=*/false);
  EXPECT_EQ(h.send("EHLO c\r\n"), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
  EXPECT_EQ(h.last, Action::kClose);
  EXPECT_EQ(h.s.close_reason(), "early talker");
  Harness quiet({}, false);
  HeapBytes none("");
  EXPECT_EQ(quiet.s.feed(none.span()).action, Action::kNeedInput);
}

TEST(ServerSession, UnauthorizedPipelining) {
  struct Case {
    const char* name;
    bool pipelining;
    std::string hello;
    std::string write;
    bool violation;
  };
  const Case cases[] = {
      {"not advertised", false, "EHLO c\r\n",
       "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n", true},
      {"after HELO", true, "HELO c\r\n", "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n",
       true},
      {"with EHLO and PIPELINING", true, "EHLO c\r\n",
       "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n", false},
      {"EHLO not last", true, "", "EHLO c\r\nMAIL FROM:<a@b.example>\r\n", true},
      {"DATA not last", true, "EHLO c\r\n",
       "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nSubject: x\r\n", true},
      {"NOOP not last", true, "EHLO c\r\n", "NOOP\r\nNOOP\r\n", true},
      {"RSET then MAIL", true, "EHLO c\r\n", "RSET\r\nMAIL FROM:<a@b.example>\r\n", false},
      {"partial line after", true, "EHLO c\r\n", "NOOP\r\nNO", true},
  };
  for (const Case& c : cases) {
    ServerConfig config;
    config.pipelining = c.pipelining;
    Harness h(config);
    if (!c.hello.empty()) {
      h.send(c.hello);
    }
    std::string out = h.send(c.write);
    bool closed = h.s.closed() && out.find("554 5.5.0 Error: SMTP protocol synchronization\r\n") !=
                                      std::string::npos;
    EXPECT_EQ(closed, c.violation) << c.name << ": " << out;
  }
  // End of data followed by a command, without PIPELINING.
  ServerConfig config;
  config.pipelining = false;
  Harness h(config);
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\n");
  h.send("RCPT TO:<x@y.example>\r\n");
  h.send("DATA\r\n");
  EXPECT_EQ(h.send("x\r\n.\r\nQUIT\r\n"), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
  EXPECT_TRUE(h.bodies.empty());
  // The same with the check off.
  config.forbid_unauth_pipelining = false;
  Harness lax(config);
  lax.send("EHLO c\r\n");
  EXPECT_EQ(lax.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nNOOP\r\nNOOP\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
}

TEST(ServerSession, HardErrorLimit) {
  ServerConfig c;
  c.max_hard_errors = 3;
  Harness h(c);
  EXPECT_EQ(h.send("FOO\r\n"), "500 5.5.2 Error: command not recognized\r\n");
  EXPECT_EQ(h.send("FOO\r\n"), "500 5.5.2 Error: command not recognized\r\n");
  EXPECT_EQ(h.send("FOO\r\n"),
            "500 5.5.2 Error: command not recognized\r\n421 4.7.0 localhost Error: too many "
            "errors\r\n");
  EXPECT_EQ(h.last, Action::kClose);
  EXPECT_EQ(h.s.close_reason(), "too many errors");
}

TEST(ServerSession, AcceptedMessageResetsHardErrors) {
  ServerConfig c;
  c.max_hard_errors = 3;
  Harness h(c);
  h.send("FOO\r\n");
  h.send("FOO\r\n");
  h.send("EHLO c\r\n");
  h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n");
  h.send(".\r\n");
  EXPECT_EQ(h.s.hard_errors(), 0u);
  h.send("FOO\r\n");
  EXPECT_FALSE(h.s.closed());
}

TEST(ServerSession, CommandLimit) {
  ServerConfig c;
  c.max_commands = 3;
  Harness h(c);
  h.send("NOOP\r\n");
  h.send("NOOP\r\n");
  EXPECT_EQ(h.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(h.send("NOOP\r\n"), "421 4.7.0 localhost Error: too many commands\r\n");
  EXPECT_EQ(h.last, Action::kClose);
}

TEST(ServerSession, AsynchronousDecision) {
  Harness h;
  h.send("EHLO c\r\n");
  HeapBytes bytes("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n");
  ServerSession::FeedResult r = h.s.feed(bytes.span());
  ASSERT_EQ(r.action, Action::kDecide);
  EXPECT_EQ(r.consumed, 25u);
  EXPECT_EQ(h.s.decision().kind, DecisionKind::kMail);
  // Feeding while a decision is pending consumes nothing.
  ServerSession::FeedResult again = h.s.feed(bytes.span().subspan(r.consumed));
  EXPECT_EQ(again.consumed, 0u);
  EXPECT_EQ(again.action, Action::kDecide);
  EXPECT_EQ(h.s.output(), "");
  h.s.respond(250, "2.1.0 Sender ok");
  EXPECT_EQ(h.s.decision().kind, DecisionKind::kNone);
  r = h.s.feed(bytes.span().subspan(25));
  ASSERT_EQ(r.action, Action::kDecide);
  h.s.respond(251, "2.1.5 Will forward");
  r = h.s.feed(bytes.span().subspan(bytes.span().size()));
  EXPECT_EQ(r.action, Action::kNeedInput);
  EXPECT_EQ(h.take_output(), "250 2.1.0 Sender ok\r\n251 2.1.5 Will forward\r\n");
}

TEST(ServerSession, DriverRepliesAreSanitisedAndMultiline) {
  Harness h;
  h.decide = [](ServerSession& s) {
    if (s.decision().kind == DecisionKind::kMail) {
      s.respond(550, "5.7.1 first line\nsecond\rline\x01");
    } else {
      s.accept();
    }
  };
  h.send("EHLO c\r\n");
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "550-5.7.1 first line\r\n550 second?line?\r\n");
}

TEST(ServerSession, Driver421Closes) {
  Harness h;
  h.decide = [](ServerSession& s) { s.respond(421, "4.3.2 Service shutting down"); };
  EXPECT_EQ(h.send("EHLO c\r\n"), "421 4.3.2 Service shutting down\r\n");
  EXPECT_EQ(h.last, Action::kClose);
}

TEST(ServerSession, CloseWith) {
  Harness h;
  h.send("EHLO c\r\n");
  h.s.close_with(421, "4.4.2 localhost Error: timeout exceeded");
  EXPECT_EQ(h.take_output(), "421 4.4.2 localhost Error: timeout exceeded\r\n");
  EXPECT_TRUE(h.s.closed());
  EXPECT_EQ(h.s.close_reason(), "closed by driver");
}

TEST(ServerSession, RefusedGreeting) {
  Harness h({}, false);
  h.s.start_refused("5.3.2 No service here");
  EXPECT_EQ(h.take_output(), "554 5.3.2 No service here\r\n");
  EXPECT_EQ(h.send("EHLO c\r\n"), "503 5.5.1 Error: no valid service\r\n");
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "503 5.5.1 Error: no valid service\r\n");
  EXPECT_EQ(h.send("QUIT\r\n"), "221 2.0.0 Bye\r\n");
  EXPECT_TRUE(h.decisions.empty());
}

TEST(ServerSession, EnhancedStatusCodesOff) {
  ServerConfig c;
  c.enhanced_status_codes = false;
  Harness h(c);
  std::string ehlo = h.send("EHLO c\r\n");
  EXPECT_EQ(ehlo.find("ENHANCEDSTATUSCODES"), std::string::npos);
  EXPECT_EQ(h.send("MAIL FROM:<a@b.example>\r\n"), "250 Ok\r\n");
  EXPECT_EQ(h.send("FOO\r\n"), "500 Error: command not recognized\r\n");
}

TEST(ServerSession, EhloCapabilitySwitches) {
  ServerConfig c;
  c.pipelining = false;
  c.chunking = false;
  c.eightbitmime = false;
  c.smtputf8 = false;
  c.max_message = 0;
  c.dsn = true;
  Harness h(c);
  EXPECT_EQ(h.send("EHLO c\r\n"),
            "250-localhost\r\n250-SIZE\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n");
  EXPECT_EQ(h.send("BDAT 3\r\nabc"), "502 5.5.1 Error: BDAT not supported\r\n");
  ServerConfig no_size = c;
  no_size.advertise_size = false;
  no_size.max_message = 10;
  Harness quiet(no_size);
  EXPECT_EQ(quiet.send("EHLO c\r\n"), "250-localhost\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n");
  EXPECT_EQ(quiet.send("MAIL FROM:<a@b.example> SIZE=11\r\n"),
            "552 5.3.4 Error: message size exceeds fixed limit\r\n");
  h.decide = [](ServerSession& s) { s.respond(250, "mx.example greets you"); };
  EXPECT_EQ(h.send("HELO c\r\n"), "250 mx.example greets you\r\n");
  EXPECT_FALSE(h.s.ehlo());
}

TEST(ServerSession, OutputBackPressure) {
  ServerConfig c;
  c.max_output = 32;
  Harness h(c);
  h.send("EHLO c\r\n");
  std::string many;
  for (int i = 0; i < 20; ++i) {
    many += "RSET\r\n";
  }
  HeapBytes bytes(many);
  ServerSession::FeedResult r = h.s.feed(bytes.span());
  EXPECT_EQ(r.action, Action::kFlush);
  EXPECT_LT(r.consumed, many.size());
  EXPECT_GE(h.s.output().size(), 32u);
  EXPECT_LE(h.s.output().size(), 32u + 16u);
  // The harness flushes and continues: all 20 replies arrive.
  Harness full(c);
  full.send("EHLO c\r\n");
  std::string out = full.send(many);
  size_t count = 0;
  for (size_t pos = 0; (pos = out.find("250 2.0.0 Ok\r\n", pos)) != std::string::npos; ++pos) {
    ++count;
  }
  EXPECT_EQ(count, 20u);
}

}  // namespace
}  // namespace ringmail::proto
