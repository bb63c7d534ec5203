#include "proto/smtp_reply.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::all_splits;
using test::HeapBytes;

struct ReplyCase {
  const char* name;
  std::string input;
  uint16_t code;
  std::string enhanced;  // "" = absent
  bool from_peer;
  bool multiline;
  std::string text;
};

const std::vector<ReplyCase>& reply_cases() {
  static const std::vector<ReplyCase> cases = {
      {"simple", "250 ok\r\n", 250, "2.0.0", false, false, "ok"},
      {"enhanced", "550 5.1.1 no such user\r\n", 550, "5.1.1", true, false, "5.1.1 no such user"},
      {"enhanced_three_digits", "452 4.3.123 full\r\n", 452, "4.3.123", true, false,
       "4.3.123 full"},
      {"class_mismatch", "550 2.1.1 odd\r\n", 550, "5.0.0", false, false, "2.1.1 odd"},
      {"class_mismatch_4xx", "421 5.7.0 bye\r\n", 421, "4.0.0", false, false, "5.7.0 bye"},
      {"enhanced_3xx_none", "354 go ahead\r\n", 354, "", false, false, "go ahead"},
      {"enhanced_3xx_with_code", "354 2.0.0 go\r\n", 354, "", false, false, "2.0.0 go"},
      {"code_only", "250\r\n", 250, "2.0.0", false, false, ""},
      {"code_space_only", "220 \r\n", 220, "2.0.0", false, false, ""},
      {"multiline", "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n", 250, "2.0.0", false,
       true, "mx.example\nPIPELINING\nSIZE 100"},
      {"multiline_enhanced_first", "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
       550, "5.7.1", true, true, "5.7.1 first\n5.7.1 second\n5.7.1 third"},
      {"multiline_enhanced_later_only", "451-wait\r\n451 4.4.1 later\r\n", 451, "4.0.0", false,
       true, "wait\n4.4.1 later"},
      {"bare_lf", "250-a\n250 b\n", 250, "2.0.0", false, true, "a\nb"},
      {"mixed_endings", "250-a\r\n250 b\n", 250, "2.0.0", false, true, "a\nb"},
      {"nul_and_controls", std::string("250 a\0b\x01\x7f\xff\r\n", 12), 250, "2.0.0", false, false,
       "a?b???"},
      {"bare_cr_inside", "250 a\rb\r\n", 250, "2.0.0", false, false, "a?b"},
      {"continuation_code_only", "250-\r\n250 x\r\n", 250, "2.0.0", false, true, "\nx"},
      {"not_enhanced_suffix", "250 2.0.0x ok\r\n", 250, "2.0.0", false, false, "2.0.0x ok"},
  };
  return cases;
}

// Feeds `pieces` (each in an exact-size heap buffer) and returns the parse
// result of the reply, checking `consumed` at every step.
struct FeedOutcome {
  ParseStatus status = ParseStatus::kNeedMore;
  size_t consumed_total = 0;
};

FeedOutcome feed_pieces(ReplyParser& p, const std::vector<std::string>& pieces) {
  FeedOutcome out;
  for (const std::string& piece : pieces) {
    HeapBytes bytes(piece);
    ParseResult r = p.parse(bytes.span());
    if (r.status == ParseStatus::kNeedMore) {
      EXPECT_EQ(r.consumed, piece.size());
      out.consumed_total += r.consumed;
      continue;
    }
    EXPECT_LE(r.consumed, piece.size());
    out.consumed_total += r.consumed;
    out.status = r.status;
    return out;
  }
  return out;
}

TEST(ReplyParser, TableAtEverySplit) {
  for (const ReplyCase& c : reply_cases()) {
    for (const auto& pieces : all_splits(c.input)) {
      ReplyParser p;
      FeedOutcome o = feed_pieces(p, pieces);
      ASSERT_EQ(o.status, ParseStatus::kDone) << c.name << " pieces=" << pieces.size();
      EXPECT_EQ(o.consumed_total, c.input.size()) << c.name;
      const Reply& r = p.reply();
      EXPECT_EQ(r.code, c.code) << c.name;
      EXPECT_EQ(r.enhanced.str(), c.enhanced) << c.name;
      EXPECT_EQ(r.enhanced_from_peer, c.from_peer) << c.name;
      EXPECT_EQ(r.multiline, c.multiline) << c.name;
      EXPECT_EQ(r.text, c.text) << c.name;
    }
  }
}

TEST(ReplyParser, ErrorsAtEverySplit) {
  struct ErrorCase {
    const char* name;
    std::string input;
    Errc errc;
  };
  const std::vector<ErrorCase> cases = {
      {"mixed_codes", "250-ok\r\n550 no\r\n", Errc::kSyntax},
      {"mixed_codes_same_class", "250-ok\r\n251 no\r\n", Errc::kSyntax},
      {"four_digit_code", "2500 ok\r\n", Errc::kSyntax},
      {"non_digit", "2x0 ok\r\n", Errc::kSyntax},
      {"short", "25\r\n", Errc::kSyntax},
      {"empty_line", "\r\n", Errc::kSyntax},
      {"code_199", "199 ok\r\n", Errc::kSyntax},
      {"code_600", "600 ok\r\n", Errc::kSyntax},
      {"bad_separator", "250_ok\r\n", Errc::kSyntax},
      {"leading_space", " 250 ok\r\n", Errc::kSyntax},
  };
  for (const ErrorCase& c : cases) {
    for (const auto& pieces : all_splits(c.input)) {
      ReplyParser p;
      FeedOutcome o = feed_pieces(p, pieces);
      ASSERT_EQ(o.status, ParseStatus::kError) << c.name;
      EXPECT_EQ(p.error().code, c.errc) << c.name << ": " << p.error().message;
    }
  }
}

TEST(ReplyParser, ErrorIsStickyUntilReset) {
  ReplyParser p;
  HeapBytes bad("abc\r\n");
  EXPECT_EQ(p.parse(bad.span()).status, ParseStatus::kError);
  HeapBytes good("250 ok\r\n");
  ParseResult r = p.parse(good.span());
  EXPECT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(r.consumed, 0u);
  p.reset();
  r = p.parse(good.span());
  EXPECT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(p.reply().code, 250);
}

TEST(ReplyParser, PipelinedRepliesInOneBuffer) {
  std::string input =
      "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no\r\n550 5.1.1 user\r\n354 go\r\n";
  HeapBytes bytes(input);
  std::span<const char> rest = bytes.span();
  ReplyParser p;
  std::vector<uint16_t> codes;
  while (!rest.empty()) {
    ParseResult r = p.parse(rest);
    ASSERT_EQ(r.status, ParseStatus::kDone);
    codes.push_back(p.reply().code);
    rest = rest.subspan(r.consumed);
  }
  EXPECT_EQ(codes, (std::vector<uint16_t>{250, 250, 550, 354}));
  EXPECT_EQ(p.reply().text, "go");
}

TEST(ReplyParser, TwoThousandLineReplyIsLimitError) {
  std::string input;
  for (int i = 0; i < 2000; ++i) {
    input += "250-line\r\n";
  }
  input += "250 end\r\n";
  ReplyParser p;
  HeapBytes bytes(input);
  ParseResult r = p.parse(bytes.span());
  EXPECT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(p.error().code, Errc::kLimit);
  EXPECT_LE(p.reply().text.size(), ReplyParser::Limits{}.max_text);
}

TEST(ReplyParser, MaxLinesBoundaryIsInclusive) {
  ReplyParser::Limits limits;
  limits.max_lines = 3;
  ReplyParser ok(limits);
  HeapBytes three("250-a\r\n250-b\r\n250 c\r\n");
  EXPECT_EQ(ok.parse(three.span()).status, ParseStatus::kDone);
  ReplyParser bad(limits);
  HeapBytes four("250-a\r\n250-b\r\n250-c\r\n250 d\r\n");
  EXPECT_EQ(bad.parse(four.span()).status, ParseStatus::kError);
  EXPECT_EQ(bad.error().code, Errc::kLimit);
}

TEST(ReplyParser, TenMegabyteLineFailsEarlyWithBoundedMemory) {
  // Fed in 64 KiB pieces, the parser must fail on the first piece that
  // pushes the line past max_line, not after buffering 10 MB.
  const size_t kChunk = 64 * 1024;
  std::string chunk(kChunk, 'x');
  chunk.replace(0, 4, "250 ");
  ReplyParser p;
  size_t fed = 0;
  ParseResult r{ParseStatus::kNeedMore, 0};
  while (fed < (10u << 20)) {
    HeapBytes bytes(fed == 0 ? chunk : std::string(kChunk, 'y'));
    r = p.parse(bytes.span());
    fed += kChunk;
    if (r.status != ParseStatus::kNeedMore) {
      break;
    }
  }
  EXPECT_EQ(r.status, ParseStatus::kError);
  EXPECT_EQ(p.error().code, Errc::kLimit);
  EXPECT_EQ(fed, kChunk);
}

TEST(ReplyParser, LineLengthBoundary) {
  ReplyParser::Limits limits;
  limits.max_line = 10;
  std::string exact = "250 " + std::string(6, 'a');  // 10 bytes
  for (const auto& pieces : all_splits(exact + "\r\n")) {
    ReplyParser p(limits);
    EXPECT_EQ(feed_pieces(p, pieces).status, ParseStatus::kDone);
  }
  for (const auto& pieces : all_splits(exact + "a\r\n")) {
    ReplyParser p(limits);
    EXPECT_EQ(feed_pieces(p, pieces).status, ParseStatus::kError);
    EXPECT_EQ(p.error().code, Errc::kLimit);
  }
  // A bare-LF line of exactly max_line + 1 bytes is still too long.
  for (const auto& pieces : all_splits(exact + "a\n")) {
    ReplyParser p(limits);
    EXPECT_EQ(feed_pieces(p, pieces).status, ParseStatus::kError);
  }
}

TEST(ReplyParser, TextIsCappedAndExcessSkipped) {
  ReplyParser::Limits limits;
  limits.max_text = 8;
  ReplyParser p(limits);
  HeapBytes bytes("250-abcdef\r\n250 ghijkl\r\n");
  ParseResult r = p.parse(bytes.span());
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(r.consumed, bytes.span().size());
  EXPECT_EQ(p.reply().text, "abcdef\ng");
}

TEST(ReplyParser, NeedMoreOnEmptyInput) {
  ReplyParser p;
  HeapBytes empty("");
  ParseResult r = p.parse(empty.span());
  EXPECT_EQ(r.status, ParseStatus::kNeedMore);
  EXPECT_EQ(r.consumed, 0u);
}

TEST(ReplyParser, TakeReply) {
  ReplyParser p;
  HeapBytes bytes("221 2.0.0 bye\r\n");
  ASSERT_EQ(p.parse(bytes.span()).status, ParseStatus::kDone);
  Reply r = p.take_reply();
  EXPECT_EQ(r.code, 221);
  EXPECT_EQ(r.text, "2.0.0 bye");
}

TEST(EnhancedCode, ParseTable) {
  struct Case {
    std::string_view text;
    std::string expect;
    size_t consumed;
  };
  const Case cases[] = {
      {"5.1.1 user unknown", "5.1.1", 6},
      {"2.0.0", "2.0.0", 5},
      {"4.7.123 x", "4.7.123", 8},
      {"5.123.456 x", "5.123.456", 10},
      {"5.1234.1 x", "", 0},
      {"5.1.1234", "", 0},
      {"3.1.1 x", "", 0},
      {"1.1.1 x", "", 0},
      {"5..1 x", "", 0},
      {"5.1. x", "", 0},
      {"5.1", "", 0},
      {"", "", 0},
      {"x5.1.1", "", 0},
      {"5.1.1x", "", 0},
  };
  for (const Case& c : cases) {
    size_t consumed = 99;
    EnhancedCode e = parse_enhanced_code(c.text, &consumed);
    EXPECT_EQ(e.str(), c.expect) << c.text;
    EXPECT_EQ(consumed, c.consumed) << c.text;
  }
}

TEST(Reply, Predicates) {
  EXPECT_TRUE(make_reply(250, "ok").is_positive());
  EXPECT_TRUE(make_reply(354, "go").is_intermediate());
  EXPECT_TRUE(make_reply(451, "later").is_transient());
  EXPECT_TRUE(make_reply(550, "no").is_permanent());
  EXPECT_FALSE(make_reply(550, "no").is_transient());
}

TEST(Reply, MakeReplyParsesEnhancedAndSanitises) {
  Reply r = make_reply(451, "4.4.2 timeout\nsecond\x01line");
  EXPECT_EQ(r.enhanced.str(), "4.4.2");
  EXPECT_TRUE(r.enhanced_from_peer);
  EXPECT_TRUE(r.multiline);
  EXPECT_EQ(r.text, "4.4.2 timeout\nsecond?line");
  Reply d = make_reply(421, "connection lost");
  EXPECT_EQ(d.enhanced.str(), "4.0.0");
  EXPECT_FALSE(d.enhanced_from_peer);
  Reply m = make_reply(550, "4.1.1 wrong class");
  EXPECT_EQ(m.enhanced.str(), "5.0.0");
}

TEST(Reply, Summary) {
  EXPECT_EQ(make_reply(550, "5.1.1 no\nsuch user").summary(), "550 5.1.1 no / such user");
  EXPECT_EQ(make_reply(250, "").summary(), "250");
}

}  // namespace
}  // namespace ringmail::proto
