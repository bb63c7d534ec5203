#include "proto/message_body.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::all_splits;
using test::HeapBytes;

struct NormalizeCase {
  std::string raw;
  std::string normalized;
  bool bare;
  size_t lines;
  bool stuffing;
  bool eight_bit;
};

TEST(NormalizeBody, Table) {
  const NormalizeCase cases[] = {
      {"", "", false, 0, false, false},
      {"a", "a\r\n", false, 1, false, false},
      {"a\r\n", "a\r\n", false, 1, false, false},
      {"a\nb\n", "a\r\nb\r\n", true, 2, false, false},
      {"a\rb\r", "a\r\nb\r\n", true, 2, false, false},
      {"a\r\r\nb", "a\r\n\r\nb\r\n", true, 3, false, false},
      {"a\n\rb", "a\r\n\r\nb\r\n", true, 3, false, false},
      {"\r\n", "\r\n", false, 1, false, false},
      {"\n", "\r\n", true, 1, false, false},
      {"\r", "\r\n", true, 1, false, false},
      {".", ".\r\n", false, 1, true, false},
      {"a\r\n.b", "a\r\n.b\r\n", false, 2, true, false},
      {"a\n.\nb", "a\r\n.\r\nb\r\n", true, 3, true, false},
      {"x.y\r\n", "x.y\r\n", false, 1, false, false},
      {"caf\xc3\xa9\r\n", "caf\xc3\xa9\r\n", false, 1, false, true},
  };
  for (const NormalizeCase& c : cases) {
    std::string out = "pre";
    BodyInfo info = normalize_body(c.raw, out);
    EXPECT_EQ(out, "pre" + c.normalized) << c.raw;
    EXPECT_EQ(info.had_bare_line_end, c.bare) << c.raw;
    EXPECT_EQ(info.lines, c.lines) << c.raw;
    EXPECT_EQ(info.needs_stuffing, c.stuffing) << c.raw;
    EXPECT_EQ(info.eight_bit, c.eight_bit) << c.raw;
    BodyInfo scanned = scan_body(c.raw);
    EXPECT_EQ(scanned.had_bare_line_end, info.had_bare_line_end);
    EXPECT_EQ(scanned.lines, info.lines);
    EXPECT_EQ(scanned.needs_stuffing, info.needs_stuffing);
    EXPECT_EQ(scanned.eight_bit, info.eight_bit);
    // The normalised form is a fixed point.
    std::string again;
    BodyInfo second = normalize_body(out.substr(3), again);
    EXPECT_EQ(again, c.normalized);
    EXPECT_FALSE(second.had_bare_line_end);
  }
}

TEST(NormalizeBody, LongLines) {
  std::string raw =
      std::string(998, 'a') + "\r\n" + std::string(999, 'b') + "\r\n" + std::string(5000, 'c');
  std::string out;
  BodyInfo info = normalize_body(raw, out);
  EXPECT_EQ(info.lines, 3u);
  EXPECT_EQ(info.long_lines, 2u);
}

TEST(DotStuffing, Table) {
  const std::pair<std::string, std::string> cases[] = {
      {"", ""},
      {".\r\n", "..\r\n"},
      {"..\r\n", "...\r\n"},
      {"a\r\n.\r\n", "a\r\n..\r\n"},
      {".a\r\n.b\r\n", "..a\r\n..b\r\n"},
      {"a.b\r\n", "a.b\r\n"},
      {"a\r\n\r\n.\r\n\r\n", "a\r\n\r\n..\r\n\r\n"},
      {"x\r\n.", "x\r\n.."},
  };
  for (const auto& [in, expect] : cases) {
    std::string out = "keep";
    EXPECT_EQ(append_dot_stuffed(in, out), expect.size()) << in;
    EXPECT_EQ(out, "keep" + expect);
    EXPECT_EQ(dot_unstuff(expect), in);
  }
}

// Property from reliability.md c1 #2: after normalisation and stuffing, the
// wire form never contains CRLF.CRLF, and unstuffing restores the input.
TEST(DotStuffing, RandomRoundTripNeverContainsTerminator) {
  std::mt19937 rng(12345);
  const char alphabet[] = {'.', '\r', '\n', 'a', ' '};
  for (int iter = 0; iter < 20000; ++iter) {
    std::string raw;
    size_t len = rng() % 24;
    for (size_t i = 0; i < len; ++i) {
      raw.push_back(alphabet[rng() % sizeof(alphabet)]);
    }
    std::string normalized;
    normalize_body(raw, normalized);
    std::string stuffed;
    append_dot_stuffed(normalized, stuffed);
    EXPECT_EQ(dot_unstuff(stuffed), normalized) << raw;
    std::string wire = "\r\n" + stuffed;
    EXPECT_EQ(wire.find("\r\n.\r\n"), std::string::npos) << raw;
    // What a DataReader receives is exactly the normalised body.
    DataReader reader;
    std::string sink;
    std::string stream = stuffed + ".\r\n";
    HeapBytes bytes(stream);
    ParseResult r = reader.feed(bytes.span(), &sink);
    ASSERT_EQ(r.status, ParseStatus::kDone) << raw;
    EXPECT_EQ(r.consumed, stream.size());
    EXPECT_EQ(sink, normalized);
    EXPECT_FALSE(reader.bare_line_seen());
  }
}

// A slow, obviously correct reference for the DATA stream: the message ends
// at the first CRLF.CRLF of ("\r\n" + stream); lines are split at CRLF, a
// leading dot is dropped, and any other CR or LF becomes CRLF.
struct Reference {
  bool done = false;
  size_t consumed = 0;
  std::string content;
  bool bare = false;
};

Reference reference_read(std::string_view stream) {
  Reference ref;
  std::string framed = "\r\n" + std::string(stream);
  size_t term = framed.find("\r\n.\r\n");
  if (term == std::string::npos) {
    return ref;
  }
  ref.done = true;
  ref.consumed = term + 5 - 2;
  std::string_view body = std::string_view(framed).substr(2, term);  // includes the last CRLF
  size_t start = 0;
  while (start < body.size()) {
    size_t crlf = body.find("\r\n", start);
    std::string_view line = body.substr(start, crlf - start);
    if (!line.empty() && line.front() == '.') {
      line.remove_prefix(1);
    }
    for (char c : line) {
      if (c == '\r' || c == '\n') {
        ref.bare = true;
        ref.content += "\r\n";
      } else {
        ref.content.push_back(c);
      }
    }
    ref.content += "\r\n";
    start = crlf + 2;
  }
  return ref;
}

struct ReadOutcome {
  bool done = false;
  size_t consumed = 0;
  std::string content;
  bool bare = false;
};

// The reference stores everything, so comparisons use kNormalize (kReject
// stops storing at the first bare line end).
DataReader::Limits normalizing() {
  DataReader::Limits l;
  l.bare_line = BareLinePolicy::kNormalize;
  return l;
}

ReadOutcome read_pieces(const std::vector<std::string>& pieces,
                        DataReader::Limits limits = normalizing()) {
  DataReader reader(limits);
  ReadOutcome out;
  for (const std::string& piece : pieces) {
    HeapBytes bytes(piece);
    ParseResult r = reader.feed(bytes.span(), &out.content);
    EXPECT_NE(r.status, ParseStatus::kError);
    out.consumed += r.consumed;
    if (r.status == ParseStatus::kDone) {
      out.done = true;
      break;
    }
    EXPECT_EQ(r.consumed, piece.size());
  }
  out.bare = reader.bare_line_seen();
  return out;
}

const std::vector<std::string>& data_streams() {
  static const std::vector<std::string> streams = {
      ".\r\n",
      "a\r\n.\r\n",
      "a\r\n.\r\nMAIL FROM:<x@y>\r\n",
      "..\r\n.\r\n",
      "..a\r\n...\r\n.\r\n",
      ".a\r\n.\r\n",
      "a\r\n\r\n.\r\n",
      "\r\n.\r\n",
      "a\nb\r\n.\r\n",
      "a\rb\r\n.\r\n",
      "a\r\r\n.\r\n",
      ".\n.\r\n",
      ".\r.\r\n",
      ".\r\r\n.\r\n",
      ".x\r\n.\r\n",
      "a\r\n.\r",
      "a\r\n.",
      "a\r\n",
      "",
      "\n.\r\n",
      "a\n.\r\nb\r\n.\r\n",
      "a\r.\r\nb\r\n.\r\n",
      "a\r\n.\nb\r\n.\r\n",
      "a\r\n.\r.\r\n.\r\n",
      std::string("a\0b\r\n.\r\n", 8),
  };
  return streams;
}

TEST(DataReader, MatchesReferenceAtEverySplit) {
  for (const std::string& s : data_streams()) {
    Reference ref = reference_read(s);
    for (const auto& pieces : all_splits(s)) {
      ReadOutcome got = read_pieces(pieces);
      ASSERT_EQ(got.done, ref.done) << ::testing::PrintToString(s);
      if (ref.done) {
        EXPECT_EQ(got.consumed, ref.consumed) << ::testing::PrintToString(s);
        EXPECT_EQ(got.content, ref.content) << ::testing::PrintToString(s);
        EXPECT_EQ(got.bare, ref.bare) << ::testing::PrintToString(s);
      } else {
        EXPECT_EQ(got.consumed, s.size());
      }
    }
  }
}

// hannob/smtpsmug endings and variants: none of them may end DATA; the
// "injected" command after them stays message content; the real terminator
// that follows ends the message with a bare line end reported.
TEST(DataReader, SmugglingEndingsNeverEndData) {
  const std::string endings[] = {
      "\n.\n",      "\n.\r\n",    "\r.\r\n",     "\r\n.\r",     "\r\n.\n",   "\r.\r",
      "\n.\r",      "\r.\n",      "\r\n.\r\r\n", "\r\n.\n\r\n", "\n\n.\n\n", "\r\r.\r\r",
      "\r\n .\r\n", "\r\n..\r\n", "\n\r.\r\n",   "\r\n.\r\r",
  };
  for (const std::string& ending : endings) {
    const std::string injected = "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<v@victim>\r\n";
    std::string stream = "Subject: hi\r\n\r\nbody" + ending + injected;
    for (const auto& pieces : all_splits(stream)) {
      ReadOutcome got = read_pieces(pieces);
      EXPECT_FALSE(got.done) << ::testing::PrintToString(ending);
    }
    std::string full = stream + ".\r\n";
    ReadOutcome got = read_pieces({full});
    ASSERT_TRUE(got.done) << ::testing::PrintToString(ending);
    EXPECT_EQ(got.consumed, full.size());
    EXPECT_NE(got.content.find("MAIL FROM:<evil"), std::string::npos);
    bool has_bare = reference_read(full).bare;
    EXPECT_EQ(got.bare, has_bare) << ::testing::PrintToString(ending);
    EXPECT_EQ(has_bare, ending != "\r\n .\r\n" && ending != "\r\n..\r\n");
  }
}

TEST(DataReader, NulEndingsAreExplicit) {
  // String literals above cannot hold NUL in the middle; check them here.
  const std::string nul_endings[] = {std::string("\r\n\0.\r\n", 6), std::string("\r\n.\0\r\n", 6)};
  for (const std::string& e : nul_endings) {
    std::string stream = "a" + e + "MAIL FROM:<x@y>\r\n";
    for (const auto& pieces : all_splits(stream)) {
      EXPECT_FALSE(read_pieces(pieces).done);
    }
  }
}

TEST(DataReader, BareLineEndsAreReportedAndNormalised) {
  ReadOutcome got = read_pieces({"a\nb\rc\r\n.\r\n"});
  ASSERT_TRUE(got.done);
  EXPECT_TRUE(got.bare);
  EXPECT_EQ(got.content, "a\r\nb\r\nc\r\n");
  // Under kReject nothing after the first bare line end is stored.
  ReadOutcome rejected = read_pieces({"a\nbbbbbbbb\r\n.\r\n"}, DataReader::Limits{});
  ASSERT_TRUE(rejected.done);
  EXPECT_TRUE(rejected.bare);
  EXPECT_EQ(rejected.content, "a");
}

TEST(DataReader, SizeLimitStopsStoringButReadsToTheEnd) {
  DataReader::Limits limits;
  limits.max_message = 10;
  std::string stream = std::string(25, 'x') + "\r\n" + std::string(40, 'y') + "\r\n.\r\nNEXT";
  for (const auto& pieces : all_splits(stream)) {
    DataReader reader(limits);
    std::string sink;
    size_t consumed = 0;
    bool done = false;
    for (const std::string& piece : pieces) {
      HeapBytes bytes(piece);
      ParseResult r = reader.feed(bytes.span(), &sink);
      consumed += r.consumed;
      if (r.status == ParseStatus::kDone) {
        done = true;
        break;
      }
    }
    ASSERT_TRUE(done);
    EXPECT_EQ(consumed, stream.size() - 4);
    EXPECT_TRUE(reader.too_big());
    EXPECT_EQ(reader.size(), 69u);
    EXPECT_EQ(sink, std::string(10, 'x'));
  }
}

TEST(DataReader, ExactLimitIsNotTooBig) {
  DataReader::Limits limits;
  limits.max_message = 5;
  DataReader reader(limits);
  std::string sink;
  HeapBytes bytes("abc\r\n.\r\n");
  ParseResult r = reader.feed(bytes.span(), &sink);
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_FALSE(reader.too_big());
  EXPECT_EQ(sink, "abc\r\n");
}

TEST(DataReader, NullSinkCountsOnly) {
  DataReader reader;
  HeapBytes bytes("hello\r\n..x\r\n.\r\n");
  ParseResult r = reader.feed(bytes.span(), nullptr);
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(reader.size(), 11u);  // "hello\r\n" + ".x\r\n"
}

TEST(DataReader, DoneIsStickyUntilReset) {
  DataReader reader;
  std::string sink;
  HeapBytes end(".\r\n");
  ASSERT_EQ(reader.feed(end.span(), &sink).status, ParseStatus::kDone);
  HeapBytes more("abc");
  ParseResult r = reader.feed(more.span(), &sink);
  EXPECT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(r.consumed, 0u);
  reader.reset();
  r = reader.feed(more.span(), &sink);
  EXPECT_EQ(r.status, ParseStatus::kNeedMore);
  EXPECT_EQ(r.consumed, 3u);
  EXPECT_EQ(sink, "abc");
}

TEST(DataReader, RandomStreamsMatchReference) {
  std::mt19937 rng(777);
  const char alphabet[] = {'.', '\r', '\n', 'a'};
  for (int iter = 0; iter < 5000; ++iter) {
    std::string s;
    size_t len = rng() % 16;
    for (size_t i = 0; i < len; ++i) {
      s.push_back(alphabet[rng() % sizeof(alphabet)]);
    }
    Reference ref = reference_read(s);
    size_t cut_at = len == 0 ? 0 : rng() % (len + 1);
    ReadOutcome got = read_pieces(test::cut(s, {cut_at}));
    ASSERT_EQ(got.done, ref.done) << ::testing::PrintToString(s);
    if (ref.done) {
      EXPECT_EQ(got.consumed, ref.consumed) << ::testing::PrintToString(s);
      EXPECT_EQ(got.content, ref.content) << ::testing::PrintToString(s);
      EXPECT_EQ(got.bare, ref.bare) << ::testing::PrintToString(s);
    }
  }
}

}  // namespace
}  // namespace ringmail::proto
