// Reply parser: the fuzz bytes are a server's reply stream.
// Properties: the same replies come out whether the stream arrives whole or
// in pieces; every reply is sane (code range, enhanced class, bounded
// printable text); and a naive line-by-line reference agrees on codes,
// line structure and where errors happen.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "proto/smtp_reply.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;

namespace {

struct Outcome {
  std::vector<Reply> replies;
  bool error = false;
  Errc errc = Errc::kInternal;
};

bool same(const Reply& a, const Reply& b) {
  return a.code == b.code && a.enhanced == b.enhanced &&
         a.enhanced_from_peer == b.enhanced_from_peer && a.multiline == b.multiline &&
         a.text == b.text;
}

void check_reply(const Reply& r, const ReplyParser::Limits& limits) {
  FUZZ_CHECK(r.code >= 200 && r.code <= 599);
  FUZZ_CHECK(r.text.size() <= limits.max_text);
  for (char c : r.text) {
    FUZZ_CHECK(c == '\n' || (c >= 0x20 && c < 0x7f));
  }
  if (r.code / 100 == 3) {
    FUZZ_CHECK(!r.enhanced.present());
  } else {
    FUZZ_CHECK(r.enhanced.cls == r.code / 100);
  }
}

Outcome run(std::string_view stream, uint32_t seed, const ReplyParser::Limits& limits) {
  Outcome out;
  ReplyParser p(limits);
  fuzz::Splitter split(seed);
  std::string pending;
  size_t pos = 0;
  while (pos < stream.size() || !pending.empty()) {
    size_t n = split.next(stream.size() - pos);
    pending.append(stream.substr(pos, n));
    pos += n;
    while (true) {
      std::unique_ptr<char[]> buf(new char[pending.size()]);  // exact size: ASan sees over-reads
      std::memcpy(buf.get(), pending.data(), pending.size());
      ParseResult r = p.parse(std::span<const char>(buf.get(), pending.size()));
      if (r.status == ParseStatus::kNeedMore) {
        FUZZ_CHECK(r.consumed == pending.size());
        pending.clear();
        break;
      }
      if (r.status == ParseStatus::kError) {
        FUZZ_CHECK(r.consumed == 0);
        out.error = true;
        out.errc = p.error().code;
        return out;
      }
      FUZZ_CHECK(r.consumed > 0 && r.consumed <= pending.size());
      FUZZ_CHECK(pending[r.consumed - 1] == '\n');
      check_reply(p.reply(), limits);
      out.replies.push_back(p.reply());
      pending.erase(0, r.consumed);
      if (pending.empty()) {
        break;
      }
    }
    if (pos >= stream.size()) {
      break;
    }
  }
  return out;
}

// Naive reference: codes and line counts only, whole stream at once.
struct NaiveReply {
  uint16_t code;
  size_t lines;
};

bool naive(std::string_view s, const ReplyParser::Limits& limits, std::vector<NaiveReply>* out) {
  size_t lines = 0;
  uint16_t code = 0;
  while (true) {
    size_t lf = s.find('\n');
    if (lf == std::string_view::npos) {
      return s.size() <= limits.max_line + 1;  // incomplete tail is fine if short enough
    }
    std::string_view line = s.substr(0, lf);
    s.remove_prefix(lf + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.size() > limits.max_line || line.size() < 3) {
      return false;
    }
    int c = 0;
    for (int i = 0; i < 3; ++i) {
      if (line[i] < '0' || line[i] > '9') {
        return false;
      }
      c = c * 10 + (line[i] - '0');
    }
    if (c < 200 || c > 599 || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      return false;
    }
    if (lines > 0 && c != code) {
      return false;
    }
    code = static_cast<uint16_t>(c);
    if (++lines > limits.max_lines) {
      return false;
    }
    if (line.size() == 3 || line[3] == ' ') {
      out->push_back(NaiveReply{code, lines});
      lines = 0;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint32_t seed = in.byte();
  ReplyParser::Limits limits;
  if ((seed & 1) != 0) {  // small limits reach the limit paths quickly
    limits.max_line = 64;
    limits.max_lines = 8;
    limits.max_text = 100;
  }
  std::string_view stream = in.rest();
  Outcome whole = run(stream, 0, limits);
  Outcome parts = run(stream, seed | 1u << 8, limits);
  FUZZ_CHECK(whole.error == parts.error);
  FUZZ_CHECK(whole.replies.size() == parts.replies.size());
  for (size_t i = 0; i < whole.replies.size(); ++i) {
    FUZZ_CHECK(same(whole.replies[i], parts.replies[i]));
  }
  if (whole.error) {
    FUZZ_CHECK(whole.errc == parts.errc);
  }
  std::vector<NaiveReply> ref;
  bool ref_ok = naive(stream, limits, &ref);
  if (!whole.error) {
    // The parser stops at its first error; without one, the reference agrees everywhere.
    FUZZ_CHECK(ref_ok);
    FUZZ_CHECK(ref.size() == whole.replies.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      FUZZ_CHECK(ref[i].code == whole.replies[i].code);
      FUZZ_CHECK((ref[i].lines > 1) == whole.replies[i].multiline);
    }
  } else {
    FUZZ_CHECK(!ref_ok);
    FUZZ_CHECK(ref.size() == whole.replies.size());
  }
  return 0;
}
