// DataReader (the server's DATA phase), differential against a slow
// reference written here, fed in fuzz-chosen pieces.
// Properties: DATA ends exactly where the reference says (the first CRLF.CRLF
// counting the start as a line start, so no smtpsmug ending ever ends it);
// content, bare-line detection and sizes match; under a small limit the
// stored content is a prefix and too_big() is right.
#include <cstring>
#include <memory>
#include <string>

#include "proto/message_body.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;

namespace {

struct Outcome {
  bool done = false;
  size_t consumed = 0;
  std::string content;
  bool bare = false;
  uint64_t size = 0;
  bool too_big = false;
};

// Reference: split at CRLF; drop one leading dot per line; any other CR or
// LF is a bare line end stored as CRLF.
Outcome reference(std::string_view stream) {
  Outcome ref;
  std::string framed = "\r\n" + std::string(stream);
  size_t term = framed.find("\r\n.\r\n");
  if (term == std::string::npos) {
    return ref;
  }
  ref.done = true;
  ref.consumed = term + 3;
  std::string_view body = std::string_view(framed).substr(2, term);
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
  ref.size = ref.content.size();
  return ref;
}

Outcome run(std::string_view stream, uint32_t seed, DataReader::Limits limits) {
  Outcome out;
  DataReader reader(limits);
  fuzz::Splitter split(seed);
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t n = split.next(stream.size() - pos);
    std::unique_ptr<char[]> buf(new char[n]);
    std::memcpy(buf.get(), stream.data() + pos, n);
    ParseResult r = reader.feed(std::span<const char>(buf.get(), n), &out.content);
    FUZZ_CHECK(r.status != ParseStatus::kError);
    FUZZ_CHECK(r.consumed <= n);
    out.consumed += r.consumed;
    pos += n;
    if (r.status == ParseStatus::kDone) {
      out.done = true;
      break;
    }
    FUZZ_CHECK(r.consumed == n);
  }
  out.bare = reader.bare_line_seen();
  out.size = reader.size();
  out.too_big = reader.too_big();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint32_t seed = in.byte();
  uint32_t limit = in.byte();
  std::string_view stream = in.rest();
  Outcome ref = reference(stream);

  DataReader::Limits normalize;
  normalize.bare_line = BareLinePolicy::kNormalize;
  Outcome got = run(stream, seed, normalize);
  FUZZ_CHECK(got.done == ref.done);
  if (ref.done) {
    FUZZ_CHECK(got.consumed == ref.consumed);
    FUZZ_CHECK(got.content == ref.content);
    FUZZ_CHECK(got.bare == ref.bare);
    FUZZ_CHECK(got.size == ref.size);
    FUZZ_CHECK(!got.too_big);
  } else {
    FUZZ_CHECK(got.consumed == stream.size());
  }

  // kReject: same framing; storage stops at the first bare line end.
  Outcome rej = run(stream, seed ^ 0x55, DataReader::Limits{});
  FUZZ_CHECK(rej.done == ref.done);
  if (ref.done) {
    FUZZ_CHECK(rej.consumed == ref.consumed && rej.bare == ref.bare);
    FUZZ_CHECK(ref.content.compare(0, rej.content.size(), rej.content) == 0);
    if (!ref.bare) {
      FUZZ_CHECK(rej.content == ref.content);
    }
  }

  // A small size limit: same framing, stored content is a bounded prefix.
  DataReader::Limits small = normalize;
  small.max_message = limit;
  Outcome lim = run(stream, seed + 1, small);
  FUZZ_CHECK(lim.done == ref.done);
  FUZZ_CHECK(lim.content.size() <= limit);
  if (ref.done) {
    FUZZ_CHECK(lim.consumed == ref.consumed);
    FUZZ_CHECK(lim.size == ref.size);
    FUZZ_CHECK(lim.too_big == (ref.size > limit));
    FUZZ_CHECK(ref.content.compare(0, lim.content.size(), lim.content) == 0);
    FUZZ_CHECK(lim.content.size() == (ref.size > limit ? limit : ref.size));
  }
  return 0;
}
