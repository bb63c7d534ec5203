// LineFramer, parse_command_line and CommandParser.
#include <gtest/gtest.h>

#include "proto/smtp_server.h"
#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::all_splits;
using test::HeapBytes;

// Runs a framer over pieces; returns one entry per line: the line, or
// "!limit" / "!protocol" for errors. Checks `consumed` at every step.
std::vector<std::string> frame(LineFramer& f, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  std::string carry;
  for (const std::string& piece : pieces) {
    carry += piece;
    while (!carry.empty()) {
      HeapBytes bytes(carry);
      ParseResult r = f.feed(bytes.span());
      if (r.status == ParseStatus::kNeedMore) {
        EXPECT_EQ(r.consumed, carry.size());
        carry.clear();
        break;
      }
      EXPECT_GT(r.consumed, 0u);
      EXPECT_LE(r.consumed, carry.size());
      EXPECT_EQ(carry[r.consumed - 1], '\n');
      if (r.status == ParseStatus::kDone) {
        out.emplace_back(f.line());
      } else {
        out.push_back(f.error().code == Errc::kLimit ? "!limit" : "!protocol");
      }
      carry.erase(0, r.consumed);
    }
  }
  return out;
}

TEST(LineFramer, SplitsAtEveryBoundary) {
  const std::string input = "EHLO x\r\nMAIL FROM:<a@b>\r\n\r\nQUIT\r\n";
  const std::vector<std::string> expect = {"EHLO x", "MAIL FROM:<a@b>", "", "QUIT"};
  for (const auto& pieces : all_splits(input)) {
    LineFramer f;
    EXPECT_EQ(frame(f, pieces), expect);
    EXPECT_FALSE(f.has_partial());
  }
}

TEST(LineFramer, BareLfRefusedByDefault) {
  const std::string input = "NOOP\nNOOP\r\nx\r\r\n";
  for (const auto& pieces : all_splits(input)) {
    LineFramer f;
    EXPECT_EQ(frame(f, pieces), (std::vector<std::string>{"!protocol", "NOOP", "x\r"}));
  }
  LineFramer::Limits lax;
  lax.allow_bare_lf = true;
  for (const auto& pieces : all_splits(input)) {
    LineFramer f(lax);
    EXPECT_EQ(frame(f, pieces), (std::vector<std::string>{"NOOP", "NOOP", "x\r"}));
  }
}

TEST(LineFramer, OverlongLineIsSkippedToItsLf) {
  LineFramer::Limits limits;
  limits.max_line = 8;
  const std::string input = "12345678\r\n123456789\r\nNOOP\r\n1234567890123\nQUIT\r\n";
  for (const auto& pieces : all_splits(input)) {
    LineFramer f(limits);
    EXPECT_EQ(frame(f, pieces),
              (std::vector<std::string>{"12345678", "!limit", "NOOP", "!limit", "QUIT"}));
  }
}

TEST(LineFramer, TenMegabyteLineKeepsMemoryBounded) {
  LineFramer f;
  const std::string chunk(1 << 16, 'x');
  HeapBytes bytes(chunk);
  for (int i = 0; i < 160; ++i) {
    ParseResult r = f.feed(bytes.span());
    ASSERT_EQ(r.status, ParseStatus::kNeedMore);
    ASSERT_EQ(r.consumed, chunk.size());
    EXPECT_TRUE(f.has_partial());
  }
  HeapBytes end("xx\r\nNOOP\r\n");
  ParseResult r = f.feed(end.span());
  EXPECT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(f.error().code, Errc::kLimit);
  EXPECT_EQ(r.consumed, 4u);
  r = f.feed(end.span().subspan(4));
  EXPECT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(f.line(), "NOOP");
}

TEST(LineFramer, SetMaxLine) {
  LineFramer f;
  f.set_max_line(3);
  HeapBytes bytes("abcd\r\nabc\r\n");
  EXPECT_EQ(f.feed(bytes.span()).status, ParseStatus::kError);
  f.set_max_line(2048);
  HeapBytes again("abcd\r\n");
  EXPECT_EQ(f.feed(again.span()).status, ParseStatus::kDone);
}

struct ValidCase {
  std::string line;
  SmtpVerb verb;
  std::string arg;
  std::string path;  // local@domain, "" for none
};

TEST(ParseCommandLine, ValidTable) {
  const ValidCase cases[] = {
      {"EHLO client.example", SmtpVerb::kEhlo, "client.example", ""},
      {"ehlo [192.0.2.1]", SmtpVerb::kEhlo, "[192.0.2.1]", ""},
      {"HELO x", SmtpVerb::kHelo, "x", ""},
      {"EHLO x extra words", SmtpVerb::kEhlo, "x", ""},
      {"MAIL FROM:<a@b.example>", SmtpVerb::kMail, "", "a@b.example"},
      {"mail from:<a@b.example>", SmtpVerb::kMail, "", "a@b.example"},
      {"MAIL FROM: <a@b.example>", SmtpVerb::kMail, "", "a@b.example"},
      {"MAIL FROM:<@relay.example,@r2.example:a@b.example>", SmtpVerb::kMail, "", "a@b.example"},
      {"RCPT TO:<c@d.example>", SmtpVerb::kRcpt, "", "c@d.example"},
      {"RCPT TO:<Postmaster>", SmtpVerb::kRcpt, "", "Postmaster@"},
      {"RCPT TO:<\"x y\"@d.example>", SmtpVerb::kRcpt, "", "\"x y\"@d.example"},
      {"DATA", SmtpVerb::kData, "", ""},
      {"DATA  ", SmtpVerb::kData, "", ""},
      {"RSET", SmtpVerb::kRset, "", ""},
      {"NOOP", SmtpVerb::kNoop, "", ""},
      {"NOOP anything goes", SmtpVerb::kNoop, "anything goes", ""},
      {"QUIT", SmtpVerb::kQuit, "", ""},
      {"VRFY user", SmtpVerb::kVrfy, "user", ""},
      {"HELP", SmtpVerb::kHelp, "", ""},
      {"HELP mail", SmtpVerb::kHelp, "mail", ""},
      {"STARTTLS", SmtpVerb::kStartTls, "", ""},
      {"starttls", SmtpVerb::kStartTls, "", ""},
      {"AUTH plain", SmtpVerb::kAuth, "PLAIN", ""},
      {"XFOO bar", SmtpVerb::kUnknown, "XFOO", ""},
      {"", SmtpVerb::kUnknown, "", ""},
      {"MAILX FROM:<a@b>", SmtpVerb::kUnknown, "MAILX", ""},
  };
  for (const ValidCase& c : cases) {
    Command cmd;
    CommandError err;
    ASSERT_TRUE(parse_command_line(c.line, &cmd, &err)) << c.line << ": " << err.text;
    EXPECT_EQ(cmd.verb, c.verb) << c.line;
    EXPECT_EQ(cmd.arg, c.arg) << c.line;
    std::string path = cmd.path.local.empty() ? "" : cmd.path.str();
    EXPECT_EQ(path, c.path) << c.line;
  }
}

TEST(ParseCommandLine, MailParameters) {
  Command cmd;
  CommandError err;
  ASSERT_TRUE(parse_command_line(
      "MAIL FROM:<> SIZE=12345 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=QQ314159", &cmd, &err))
      << err.text;
  EXPECT_TRUE(cmd.null_path);
  EXPECT_TRUE(cmd.mail.has_size);
  EXPECT_EQ(cmd.mail.size, 12345u);
  EXPECT_EQ(cmd.mail.body, BodyParam::k8BitMime);
  EXPECT_TRUE(cmd.mail.smtputf8);
  EXPECT_EQ(cmd.mail.auth, "<>");
  EXPECT_EQ(cmd.mail.ret, RetParam::kHdrs);
  EXPECT_EQ(cmd.mail.envid, "QQ314159");

  ASSERT_TRUE(parse_command_line("MAIL FROM:<a@b.example>  body=binarymime   size=0", &cmd, &err));
  EXPECT_EQ(cmd.mail.body, BodyParam::kBinaryMime);
  EXPECT_EQ(cmd.mail.size, 0u);
  EXPECT_FALSE(cmd.null_path);

  ASSERT_TRUE(
      parse_command_line("MAIL FROM:<a@b.example> SIZE=99999999999999999999999", &cmd, &err));
  EXPECT_EQ(cmd.mail.size, UINT64_MAX);  // saturated: surely too big

  ASSERT_TRUE(parse_command_line("MAIL FROM:<a@b.example> AUTH=user+2Bname@x RET=FULL BODY=7BIT",
                                 &cmd, &err));
  EXPECT_EQ(cmd.mail.auth, "user+2Bname@x");
  EXPECT_EQ(cmd.mail.ret, RetParam::kFull);
  EXPECT_EQ(cmd.mail.body, BodyParam::k7Bit);
}

TEST(ParseCommandLine, RcptParameters) {
  Command cmd;
  CommandError err;
  ASSERT_TRUE(parse_command_line(
      "RCPT TO:<c@d.example> NOTIFY=SUCCESS,failure,DELAY ORCPT=rfc822;c+40d.example", &cmd, &err))
      << err.text;
  EXPECT_EQ(cmd.rcpt.notify, kNotifySuccess | kNotifyFailure | kNotifyDelay);
  EXPECT_EQ(cmd.rcpt.orcpt, "rfc822;c+40d.example");
  ASSERT_TRUE(parse_command_line("RCPT TO:<c@d.example> NOTIFY=NEVER", &cmd, &err));
  EXPECT_EQ(cmd.rcpt.notify, kNotifyNever);
}

TEST(ParseCommandLine, BdatAndAuth) {
  Command cmd;
  CommandError err;
  ASSERT_TRUE(parse_command_line("BDAT 1000", &cmd, &err));
  EXPECT_EQ(cmd.bdat_size, 1000u);
  EXPECT_FALSE(cmd.bdat_last);
  ASSERT_TRUE(parse_command_line("bdat 0 last", &cmd, &err));
  EXPECT_EQ(cmd.bdat_size, 0u);
  EXPECT_TRUE(cmd.bdat_last);
  ASSERT_TRUE(parse_command_line("BDAT 18446744073709551615 LAST", &cmd, &err));
  EXPECT_EQ(cmd.bdat_size, UINT64_MAX);
  ASSERT_TRUE(parse_command_line("AUTH PLAIN AHVzZXIAcGFzcw==", &cmd, &err));
  EXPECT_EQ(cmd.arg, "PLAIN");
  EXPECT_TRUE(cmd.has_auth_initial);
  EXPECT_EQ(cmd.auth_initial, "AHVzZXIAcGFzcw==");
  ASSERT_TRUE(parse_command_line("AUTH LOGIN =", &cmd, &err));
  EXPECT_EQ(cmd.auth_initial, "=");
}

struct ErrorCase {
  std::string line;
  SmtpVerb verb;
  uint16_t code;
  std::string text_prefix;
};

TEST(ParseCommandLine, ErrorTable) {
  const std::string many_params = [] {
    std::string s = "MAIL FROM:<a@b.example>";
    for (size_t i = 0; i <= kMaxParams; ++i) {
      s += " X" + std::to_string(i) + "=1";
    }
    return s;
  }();
  const ErrorCase cases[] = {
      {"EHLO", SmtpVerb::kEhlo, 501, "5.5.4 Syntax: EHLO"},
      {"HELO ", SmtpVerb::kHelo, 501, "5.5.4 Syntax: HELO"},
      {"EHLO " + std::string(256, 'a'), SmtpVerb::kEhlo, 501, "5.5.4 Hostname too long"},
      {"EHLO a\x01", SmtpVerb::kEhlo, 501, "5.5.4 Invalid hostname"},
      {"MAIL", SmtpVerb::kMail, 501, "5.5.4 Syntax: MAIL FROM:<address>"},
      {"MAIL TO:<a@b>", SmtpVerb::kMail, 501, "5.5.4 Syntax"},
      {"MAIL FROM:a@b.example", SmtpVerb::kMail, 501, "5.5.4 Syntax"},
      {"MAIL FROM:<a@b.example", SmtpVerb::kMail, 501, "5.5.4 Syntax"},
      {"MAIL FROM:<a@b.example>SIZE=1", SmtpVerb::kMail, 501, "5.5.4 Syntax"},
      {"MAIL FROM:<a@@b.example>", SmtpVerb::kMail, 501, "5.1.7 Bad sender address syntax"},
      {"MAIL FROM:<a b@c.example>", SmtpVerb::kMail, 501, "5.1.7"},
      {"MAIL FROM:<@:a@b.example>", SmtpVerb::kMail, 501,
       "5.1.7 Bad sender address syntax: "
       "malformed source route"},
      {"MAIL FROM:<@bad_host:a@b.example>", SmtpVerb::kMail, 501, "5.1.7"},
      {"MAIL FROM:<" + std::string(65, 'a') + "@b.example>", SmtpVerb::kMail, 501,
       "5.1.7 Bad sender address syntax: local part longer than 64 octets"},
      {"RCPT TO:<>", SmtpVerb::kRcpt, 501, "5.1.3 Bad recipient address syntax"},
      {"RCPT TO:<x>", SmtpVerb::kRcpt, 501, "5.1.3 Bad recipient address syntax: missing @"},
      {"RCPT FROM:<x@y>", SmtpVerb::kRcpt, 501, "5.5.4 Syntax: RCPT TO:<address>"},
      {"MAIL FROM:<a@b.example> SIZE=", SmtpVerb::kMail, 501, "5.5.4 Syntax error in parameters"},
      {"MAIL FROM:<a@b.example> SIZE=12x", SmtpVerb::kMail, 501, "5.5.4 Bad SIZE"},
      {"MAIL FROM:<a@b.example> SIZE", SmtpVerb::kMail, 501, "5.5.4 Bad SIZE"},
      {"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", SmtpVerb::kMail, 501, "5.5.4 Duplicate SIZE"},
      {"MAIL FROM:<a@b.example> BODY=9BIT", SmtpVerb::kMail, 501, "5.5.4 Bad BODY"},
      {"MAIL FROM:<a@b.example> SMTPUTF8=yes", SmtpVerb::kMail, 501, "5.5.4 SMTPUTF8 takes"},
      {"MAIL FROM:<a@b.example> RET=ALL", SmtpVerb::kMail, 501, "5.5.4 Bad RET"},
      {"MAIL FROM:<a@b.example> ENVID=" + std::string(101, 'a'), SmtpVerb::kMail, 501,
       "5.5.4 Bad ENVID"},
      {"MAIL FROM:<a@b.example> AUTH=a+zz", SmtpVerb::kMail, 501, "5.5.4 Bad AUTH"},
      {"MAIL FROM:<a@b.example> XFOO=1", SmtpVerb::kMail, 555, "5.5.4 Unsupported parameter"},
      {"MAIL FROM:<a@b.example> -X", SmtpVerb::kMail, 501, "5.5.4 Syntax error in parameters"},
      {many_params, SmtpVerb::kMail, 501, "5.5.4 Too many parameters"},
      {"RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS", SmtpVerb::kRcpt, 501, "5.5.4 Bad NOTIFY"},
      {"RCPT TO:<a@b.example> NOTIFY=SOMETIMES", SmtpVerb::kRcpt, 501, "5.5.4 Bad NOTIFY"},
      {"RCPT TO:<a@b.example> ORCPT=nosemicolon", SmtpVerb::kRcpt, 501, "5.5.4 Bad ORCPT"},
      {"RCPT TO:<a@b.example> SIZE=1", SmtpVerb::kRcpt, 555, "5.5.4 Unsupported parameter"},
      {"DATA x", SmtpVerb::kData, 501, "5.5.4 Syntax: DATA"},
      {"RSET now", SmtpVerb::kRset, 501, "5.5.4 Syntax: RSET"},
      {"QUIT x", SmtpVerb::kQuit, 501, "5.5.4 Syntax: QUIT"},
      {"STARTTLS x", SmtpVerb::kStartTls, 501, "5.5.4 Syntax: STARTTLS"},
      {"VRFY", SmtpVerb::kVrfy, 501, "5.5.4 Syntax: VRFY"},
      {"BDAT", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT x", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT -1", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT 18446744073709551616", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT 99999999999999999999999999", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT 10 NOTLAST", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"BDAT 10 LAST x", SmtpVerb::kBdat, 501, "5.5.4 Syntax: BDAT"},
      {"AUTH", SmtpVerb::kAuth, 501, "5.5.4 Syntax: AUTH"},
      {"AUTH PL@IN", SmtpVerb::kAuth, 501, "5.5.4 Syntax: AUTH"},
      {"AUTH PLAIN a b", SmtpVerb::kAuth, 501, "5.5.4 Syntax: AUTH"},
      {"NOOP\rRSET", SmtpVerb::kUnknown, 500, "5.5.2 Error: bare <CR>"},
      {std::string("NOOP\0", 5), SmtpVerb::kUnknown, 500, "5.5.2 Error: bare <CR> or NUL"},
  };
  for (const ErrorCase& c : cases) {
    Command cmd;
    CommandError err;
    ASSERT_FALSE(parse_command_line(c.line, &cmd, &err)) << c.line;
    EXPECT_EQ(cmd.verb, c.verb) << c.line;
    EXPECT_EQ(err.code, c.code) << c.line << " -> " << err.text;
    EXPECT_EQ(err.text.substr(0, c.text_prefix.size()), c.text_prefix)
        << c.line << " -> " << err.text;
  }
}

TEST(CommandParser, PipelinedStreamAtEverySplit) {
  const std::string input =
      "EHLO c.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\nRCPT TO:<x@y.example>\r\n"
      "RCPT TO:<bad>\r\nDATA\r\n";
  const std::vector<std::pair<SmtpVerb, bool>> expect = {{SmtpVerb::kEhlo, true},
                                                         {SmtpVerb::kMail, true},
                                                         {SmtpVerb::kRcpt, true},
                                                         {SmtpVerb::kRcpt, false},
                                                         {SmtpVerb::kData, true}};
  for (const auto& pieces : all_splits(input)) {
    CommandParser p;
    std::vector<std::pair<SmtpVerb, bool>> got;
    std::string carry;
    for (const std::string& piece : pieces) {
      carry += piece;
      while (!carry.empty()) {
        HeapBytes bytes(carry);
        ParseResult r = p.parse(bytes.span());
        if (r.status == ParseStatus::kNeedMore) {
          ASSERT_EQ(r.consumed, carry.size());
          carry.clear();
          break;
        }
        got.emplace_back(r.status == ParseStatus::kDone ? p.command().verb : SmtpVerb::kRcpt,
                         r.status == ParseStatus::kDone);
        if (r.status == ParseStatus::kError) {
          EXPECT_EQ(p.error().code, 501);
        }
        carry.erase(0, r.consumed);
      }
    }
    EXPECT_EQ(got, expect);
  }
}

TEST(CommandParser, LineErrors) {
  CommandParser::Limits limits;
  limits.max_line = 16;
  CommandParser p(limits);
  HeapBytes bytes("NOOP 0123456789abcdef\r\nNOOP\nQUIT\r\n");
  std::span<const char> rest = bytes.span();
  ParseResult r = p.parse(rest);
  ASSERT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(p.error().errc, Errc::kLimit);
  EXPECT_EQ(p.error().code, 500);
  EXPECT_EQ(p.error().text, "5.5.2 Error: line too long");
  rest = rest.subspan(r.consumed);
  r = p.parse(rest);
  ASSERT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(p.error().errc, Errc::kProtocol);
  EXPECT_EQ(p.error().text, "5.5.2 Error: bare <LF> received");
  rest = rest.subspan(r.consumed);
  r = p.parse(rest);
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(p.command().verb, SmtpVerb::kQuit);
  EXPECT_EQ(r.consumed, rest.size());
}

TEST(VerbName, AllVerbs) {
  EXPECT_EQ(verb_name(SmtpVerb::kEhlo), "EHLO");
  EXPECT_EQ(verb_name(SmtpVerb::kStartTls), "STARTTLS");
  EXPECT_EQ(verb_name(SmtpVerb::kAuth), "AUTH");
  EXPECT_EQ(verb_name(SmtpVerb::kUnknown), "UNKNOWN");
}

}  // namespace
}  // namespace ringmail::proto
