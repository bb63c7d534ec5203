#include "proto/dkim.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/proto/dkim_reference.h"
#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::HeapBytes;

// A "hash" that records what it is fed, so tests see the canonical bytes.
class Recorder final : public Sha256 {
 public:
  void update(std::string_view b) override {
    bytes += b;
    ++calls;
  }
  Digest finish() override { return Digest{}; }
  std::string bytes;
  size_t calls = 0;
};

std::string canon_body(std::string_view body, Canon c) {
  Recorder r;
  BodyCanonicalizer bc(c, &r);
  HeapBytes heap(body);
  bc.update(heap.view());
  bc.finish();
  EXPECT_EQ(bc.length(), r.bytes.size());
  return r.bytes;
}

std::string canon_body_pieces(const std::vector<std::string>& pieces, Canon c) {
  Recorder r;
  BodyCanonicalizer bc(c, &r);
  for (const std::string& p : pieces) {
    HeapBytes heap(p);
    bc.update(heap.view());
  }
  bc.finish();
  return r.bytes;
}

std::string canon_header(std::string_view raw, Canon c) {
  std::string out;
  append_canonical_header(c, raw, out);
  return out;
}

// ---------------------------------------------------------------------------
// The RFC 6376 3.4.5 example, verbatim.

TEST(DkimCanon, Rfc6376Example) {
  EXPECT_EQ(canon_header("A: X\r\n", Canon::kRelaxed), "a:X\r\n");
  EXPECT_EQ(canon_header("B : Y\t\r\n\tZ  \r\n", Canon::kRelaxed), "b:Y Z\r\n");
  EXPECT_EQ(canon_header("B : Y\t\r\n\tZ  \r\n", Canon::kSimple), "B : Y\t\r\n\tZ  \r\n");
  const std::string body = " C \r\nD \t E\r\n\r\n\r\n";
  EXPECT_EQ(canon_body(body, Canon::kRelaxed), " C\r\nD E\r\n");
  EXPECT_EQ(canon_body(body, Canon::kSimple), " C \r\nD \t E\r\n");
}

struct BodyCase {
  const char* name;
  std::string body;
  std::string simple;
  std::string relaxed;
};

std::vector<BodyCase> body_cases() {
  return {
      {"empty", "", "\r\n", ""},
      {"one_crlf", "\r\n", "\r\n", ""},
      {"only_empty_lines", "\r\n\r\n\r\n", "\r\n", ""},
      {"no_final_crlf", "abc", "abc\r\n", "abc\r\n"},
      {"no_final_crlf_trailing_wsp", "abc \t", "abc \t\r\n", "abc\r\n"},
      {"only_wsp", "  \t ", "  \t \r\n", ""},
      {"wsp_lines_at_end", "a\r\n \r\n\t\r\n", "a\r\n \r\n\t\r\n", "a\r\n"},
      {"leading_wsp_kept_as_one_sp", "\t\t x\r\n", "\t\t x\r\n", " x\r\n"},
      {"inner_runs", "a  \t b\t\tc\r\n", "a  \t b\t\tc\r\n", "a b c\r\n"},
      {"empty_lines_inside_kept", "a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n",
       "a\r\n\r\n\r\nb\r\n"},
      {"bare_lf_is_content", "a\nb \n\r\n", "a\nb \n\r\n", "a\nb \n\r\n"},
      {"bare_cr_is_content", "a\r b\r", "a\r b\r\r\n", "a\r b\r\r\n"},
      {"cr_then_wsp_before_crlf", "a\r \r\n", "a\r \r\n", "a\r\r\n"},
      {"eight_bit", "caf\xc3\xa9 \xff\r\n", "caf\xc3\xa9 \xff\r\n", "caf\xc3\xa9 \xff\r\n"},
      {"dot_lines", ".\r\n..\r\n", ".\r\n..\r\n", ".\r\n..\r\n"},
  };
}

TEST(DkimCanon, BodyTable) {
  for (const BodyCase& c : body_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(canon_body(c.body, Canon::kSimple), c.simple);
    EXPECT_EQ(canon_body(c.body, Canon::kRelaxed), c.relaxed);
    EXPECT_EQ(reference::body(c.body, false), c.simple);
    EXPECT_EQ(reference::body(c.body, true), c.relaxed);
  }
}

// Streaming: every cut point and byte by byte give the one-shot result.
TEST(DkimCanon, BodySplitsEverywhere) {
  std::vector<std::string> bodies;
  for (const BodyCase& c : body_cases()) {
    bodies.push_back(c.body);
  }
  bodies.push_back(" x \t \r\n\r\ny\r \r\n \r\n\r\n");
  for (const std::string& body : bodies) {
    for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
      const std::string whole = canon_body(body, c);
      for (const auto& pieces : test::all_splits(body)) {
        ASSERT_EQ(canon_body_pieces(pieces, c), whole) << "body " << testing::PrintToString(body);
      }
    }
  }
}

TEST(DkimCanon, LongBodyIsBufferedAndLengthCounted) {
  std::string line(998, 'x');
  std::string body;
  for (int i = 0; i < 300; ++i) {
    body += line + "  \r\n";
  }
  body += "\r\n\r\n";
  Recorder r;
  BodyCanonicalizer bc(Canon::kRelaxed, &r);
  bc.update(body);
  bc.finish();
  EXPECT_EQ(r.bytes, reference::body(body, true));
  EXPECT_EQ(bc.length(), 300u * 1000u);
  EXPECT_LT(r.calls, 700u);  // runs go out in bulk, not byte by byte
}

TEST(DkimCanon, HeaderRelaxed) {
  struct Case {
    const char* raw;
    const char* want;
  } cases[] = {
      {"Subject: hello\r\n", "subject:hello\r\n"},
      {"SUBJECT:hello  world \t\r\n", "subject:hello world\r\n"},
      {"Subject \t:\t hello\r\n", "subject:hello\r\n"},
      {"Subject: a\r\n b\r\n\tc\r\n", "subject:a b c\r\n"},
      {"Subject:\r\n folded only\r\n", "subject:folded only\r\n"},
      {"Subject:\r\n", "subject:\r\n"},
      {"Subject:   \r\n", "subject:\r\n"},
      {"X-8bit: caf\xc3\xa9  ok\r\n", "x-8bit:caf\xc3\xa9 ok\r\n"},
      {"To: a@b,\r\n    c@d \r\n", "to:a@b, c@d\r\n"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(canon_header(c.raw, Canon::kRelaxed), c.want) << c.raw;
    EXPECT_EQ(reference::header(c.raw, true), c.want) << c.raw;
    EXPECT_EQ(canon_header(c.raw, Canon::kSimple), c.raw);
  }
}

// ---------------------------------------------------------------------------
// Header section

TEST(DkimHeader, SplitsFieldsWithFolding) {
  const std::string msg =
      "From: A <a@example.com>\r\n"
      "Subject: one\r\n"
      " two\r\n"
      "\tthree\r\n"
      "X-Empty:\r\n"
      "X-Trailing  : v\r\n"
      "\r\n"
      "body\r\n";
  HeapBytes heap(msg);
  auto s = split_header(heap.view());
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->fields.size(), 4u);
  EXPECT_EQ(s->fields[0].name, "From");
  EXPECT_EQ(s->fields[1].name, "Subject");
  EXPECT_EQ(s->fields[1].raw, "Subject: one\r\n two\r\n\tthree\r\n");
  EXPECT_EQ(s->fields[2].raw, "X-Empty:\r\n");
  EXPECT_EQ(s->fields[3].name, "X-Trailing");
  EXPECT_EQ(s->body_offset, msg.find("body"));
  // "Name With Trailing" has spaces: not a valid field name.
  auto bad = split_header("From: a@b\r\nName With: v\r\n\r\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("line 2"), std::string::npos);
}

TEST(DkimHeader, WspBeforeColonIsNotPartOfTheName) {
  auto s = split_header("Subject \t: hi\r\n\r\n");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->fields[0].name, "Subject");
}

TEST(DkimHeader, NoBodyAndEmptyHeader) {
  auto s = split_header("From: a@b\r\nSubject: x\r\n");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->fields.size(), 2u);
  EXPECT_EQ(s->body_offset, std::string("From: a@b\r\nSubject: x\r\n").size());
  auto e = split_header("\r\nbody only\r\n");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->fields.empty());
  EXPECT_EQ(e->body_offset, 2u);
  auto empty = split_header("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->body_offset, 0u);
}

TEST(DkimHeader, Errors) {
  EXPECT_FALSE(split_header(" leading continuation\r\n\r\n").ok());
  EXPECT_FALSE(split_header("no colon here\r\n\r\n").ok());
  EXPECT_FALSE(split_header(": empty name\r\n\r\n").ok());
  EXPECT_FALSE(split_header("From: a@b").ok());  // unterminated header line
  EXPECT_FALSE(split_header("Caf\xc3\xa9: x\r\n\r\n").ok());
  HeaderLimits lim;
  lim.max_fields = 3;
  EXPECT_FALSE(split_header("A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", lim).ok());
  EXPECT_TRUE(split_header("A: 1\r\nB: 2\r\nC: 3\r\n\r\n", lim).ok());
  lim = HeaderLimits{};
  lim.max_section = 16;
  auto big = split_header("Subject: 0123456789012345678901234567890\r\nA: b\r\n\r\n", lim);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::kLimit);
}

TEST(DkimHeader, FromDomain) {
  struct Case {
    const char* from;
    const char* domain;  // nullptr: error
  } cases[] = {
      {"a@Example.COM", "example.com"},
      {"Alice <alice@Mail.Example.org>", "mail.example.org"},
      {"\"Doe, John\" <j@x.test>", "x.test"},
      {"\"a@wrong.test\" <b@right.test>", "right.test"},
      {"(comment @evil.test) bob@good.test (trailing)", "good.test"},
      {"bob@good.test, eve@other.test", "good.test"},
      {"\"q@uoted\"@quoted.test", "quoted.test"},
      {"Name\r\n <folded@fold.test>", "fold.test"},
      {"undisclosed-recipients:;", nullptr},
      {"no address", nullptr},
      {"trailing@", nullptr},
  };
  for (const Case& c : cases) {
    std::string msg = std::string("From: ") + c.from + "\r\nSubject: s\r\n\r\n";
    auto s = split_header(msg);
    ASSERT_TRUE(s.ok()) << c.from;
    auto d = from_domain(*s);
    if (c.domain == nullptr) {
      EXPECT_FALSE(d.ok()) << c.from;
    } else {
      ASSERT_TRUE(d.ok()) << c.from << ": " << d.error().message;
      EXPECT_EQ(*d, c.domain);
    }
  }
  auto two = split_header("From: a@x.test\r\nFrom: b@y.test\r\n\r\n");
  ASSERT_TRUE(two.ok());
  EXPECT_FALSE(from_domain(*two).ok());
  auto none = split_header("Subject: x\r\n\r\n");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(from_domain(*none).ok());
}

// ---------------------------------------------------------------------------
// Signed header selection

TEST(DkimSelect, BottomUpInstancesAndOversigning) {
  const std::string msg =
      "Received: r1\r\n"
      "From: a@x.test\r\n"
      "To: first@y.test\r\n"
      "Subject: s\r\n"
      "to: second@y.test\r\n"
      "\r\n";
  auto s = split_header(msg);
  ASSERT_TRUE(s.ok());
  std::vector<std::string> names = {"From", "To", "Date", "Subject", "to"};
  std::vector<std::string> over = {"from"};
  SignedHeaders h = select_signed_headers(*s, names, over, Canon::kRelaxed);
  // Date is absent and not oversigned: left out; "to" repeats "To": ignored.
  EXPECT_EQ(h.h, "From:From:To:To:Subject");
  EXPECT_EQ(h.canonical, "from:a@x.test\r\nto:second@y.test\r\nto:first@y.test\r\nsubject:s\r\n");
  SignedHeaders simple = select_signed_headers(*s, names, over, Canon::kSimple);
  EXPECT_EQ(simple.canonical,
            "From: a@x.test\r\nto: second@y.test\r\nTo: first@y.test\r\nSubject: s\r\n");
}

TEST(DkimSelect, OversignedAbsentFieldIsListedOnce) {
  auto s = split_header("From: a@x.test\r\n\r\n");
  ASSERT_TRUE(s.ok());
  std::vector<std::string> names = {"From", "Reply-To"};
  std::vector<std::string> over = {"From", "Reply-To"};
  SignedHeaders h = select_signed_headers(*s, names, over, Canon::kRelaxed);
  EXPECT_EQ(h.h, "From:From:Reply-To");
  EXPECT_EQ(h.canonical, "from:a@x.test\r\n");
}

// ---------------------------------------------------------------------------
// The DKIM-Signature field

// The views must outlive the SignatureHeader built from the result.
SignatureParams params(std::string_view h, std::string_view bh) {
  SignatureParams p;
  p.algorithm = "rsa-sha256";
  p.canon = {Canon::kRelaxed, Canon::kSimple};
  p.domain = "example.com";
  p.selector = "sel2026";
  p.timestamp = 1767225600;
  p.expiration = 1767312000;
  p.headers = h;
  p.body_hash = bh;
  return p;
}

// Undoes what a verifier undoes: removes the b= value and the FWS in it.
std::string strip_b_value(std::string field) {
  size_t b = field.rfind("b=");
  std::string prefix = field.substr(0, b + 2);
  for (size_t i = b + 2; i < field.size(); ++i) {
    char c = field[i];
    bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '+' || c == '/' || c == '=';
    EXPECT_TRUE(b64 || c == '\r' || c == '\n' || c == '\t' || c == ' ') << int(c);
  }
  return prefix;
}

TEST(DkimSignatureHeader, TagsFoldingAndPrefix) {
  const std::string h =
      "From:From:Subject:Date:To:Message-ID:MIME-Version:Content-Type:List-Unsubscribe:"
      "List-Unsubscribe-Post:Feedback-ID";
  const std::string bh = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
  SignatureHeader sh(params(h, bh));
  std::string sig(344, 'A');  // RSA-2048 signature length in base64
  sig.back() = '=';
  std::string field = sh.finish(sig);
  EXPECT_TRUE(
      field.starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com;"));
  EXPECT_TRUE(field.ends_with("=\r\n"));
  // Every line within the fold column; folding is CRLF TAB.
  size_t start = 0;
  while (start < field.size()) {
    size_t end = field.find("\r\n", start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_LE(end - start, SignatureHeader::kFoldColumn) << field.substr(start, end - start);
    if (start > 0) {
      EXPECT_EQ(field[start], '\t');
    }
    start = end + 2;
  }
  // The unsigned text is exactly the field with the b= value removed.
  EXPECT_EQ(strip_b_value(field), sh.unsigned_text());
  // Unfolded, the tags read back as given.
  std::string relaxed = sh.canonical_unsigned(Canon::kRelaxed);
  EXPECT_TRUE(relaxed.starts_with("dkim-signature:v=1; a=rsa-sha256; c=relaxed/simple;"));
  EXPECT_NE(relaxed.find(" t=1767225600; x=1767312000; "), std::string::npos);
  EXPECT_TRUE(relaxed.ends_with(" b="));
  std::string unfolded;
  for (char c : relaxed) {
    if (c != ' ') {
      unfolded.push_back(c);
    }
  }
  EXPECT_NE(unfolded.find("h=" + h + ";"), std::string::npos);
  EXPECT_NE(unfolded.find("bh=" + bh + ";"), std::string::npos);
  EXPECT_EQ(sh.canonical_unsigned(Canon::kSimple), sh.unsigned_text());
  EXPECT_EQ(
      relaxed,
      reference::header(std::string(sh.unsigned_text()) + "\r\n", true).substr(0, relaxed.size()));
}

TEST(DkimSignatureHeader, OptionalTags) {
  SignatureParams p = params("From", "AAAA");
  p.timestamp = -1;
  p.expiration = -1;
  SignatureHeader none(p);
  EXPECT_EQ(none.unsigned_text(),
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=sel2026;\r\n"
            "\th=From; bh=AAAA; b=");
  p.body_length = 1234;
  SignatureHeader with_l(p);
  EXPECT_NE(with_l.unsigned_text().find("\tl=1234;"), std::string::npos);
}

TEST(DkimSignatureHeader, NoLineOverflowsWithLongValues) {
  std::string h;
  for (int i = 0; i < 40; ++i) {
    h += (i ? ":" : "") + std::string("X-Header-") + std::to_string(i);
  }
  const std::string bh(44, 'B');
  for (size_t dlen : {1u, 30u, 60u}) {
    std::string domain(dlen, 'd');
    SignatureParams p = params(h, bh);
    p.domain = domain;
    SignatureHeader sh(p);
    std::string field = sh.finish(std::string(88, 'C'));
    size_t start = 0;
    while (start < field.size()) {
      size_t end = field.find("\r\n", start);
      EXPECT_LE(end - start, SignatureHeader::kFoldColumn);
      start = end + 2;
    }
    EXPECT_EQ(strip_b_value(field), sh.unsigned_text());
  }
}

TEST(DkimCanonicalization, Parse) {
  EXPECT_EQ(*parse_canonicalization("relaxed/relaxed"),
            (CanonPair{Canon::kRelaxed, Canon::kRelaxed}));
  EXPECT_EQ(*parse_canonicalization("simple/relaxed"),
            (CanonPair{Canon::kSimple, Canon::kRelaxed}));
  EXPECT_EQ(*parse_canonicalization("relaxed"), (CanonPair{Canon::kRelaxed, Canon::kSimple}));
  EXPECT_FALSE(parse_canonicalization("relaxed/").ok());
  EXPECT_FALSE(parse_canonicalization("nofws").ok());
}

// ---------------------------------------------------------------------------
// Base64

TEST(DkimBase64, Rfc4648Vectors) {
  struct Case {
    const char* plain;
    const char* b64;
  } cases[] = {{"", ""},
               {"f", "Zg=="},
               {"fo", "Zm8="},
               {"foo", "Zm9v"},
               {"foob", "Zm9vYg=="},
               {"fooba", "Zm9vYmE="},
               {"foobar", "Zm9vYmFy"}};
  for (const Case& c : cases) {
    std::string_view p = c.plain;
    EXPECT_EQ(base64({reinterpret_cast<const uint8_t*>(p.data()), p.size()}), c.b64);
    auto d = base64_decode(c.b64);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, c.plain);
  }
  auto folded = base64_decode("Zm9v\r\n\tYmFy");
  ASSERT_TRUE(folded.ok());
  EXPECT_EQ(*folded, "foobar");
  EXPECT_FALSE(base64_decode("Zm9").ok());
  EXPECT_FALSE(base64_decode("Zm9v!").ok());
  EXPECT_FALSE(base64_decode("Zg==Zg==").ok());
  EXPECT_FALSE(base64_decode("Z===").ok());
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all.push_back(static_cast<char>(i));
  }
  auto rt = base64_decode(base64({reinterpret_cast<const uint8_t*>(all.data()), all.size()}));
  ASSERT_TRUE(rt.ok());
  EXPECT_EQ(*rt, all);
}

}  // namespace
}  // namespace ringmail::proto
