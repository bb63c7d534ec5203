// HTTP request parser: any bytes, fed whole and in pieces, must give the
// same verdict and the same request; `consumed` never passes the input; a
// parsed request respects every limit. Input: byte 0 picks the split
// (0 = whole), the rest is the stream.
#include <string>

#include "proto/http_request.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;
using ringmail::fuzz::Splitter;

namespace {

struct Verdict {
  ParseStatus status = ParseStatus::kNeedMore;
  size_t consumed = 0;
  int error_status = 0;
  std::string method, target, body;
  size_t headers = 0;
  bool keep_alive = false;
};

Verdict run(std::string_view in, uint32_t seed, const HttpLimits& limits) {
  HttpRequestParser p(limits);
  Splitter split(seed);
  Verdict v;
  size_t off = 0;
  while (off < in.size()) {
    size_t n = split.next(in.size() - off);
    ParseResult r = p.feed(std::span<const char>(in.data() + off, n));
    FUZZ_CHECK(r.consumed <= n);
    v.consumed += r.consumed;
    v.status = r.status;
    if (r.status == ParseStatus::kNeedMore) {
      FUZZ_CHECK(r.consumed == n);
      off += n;
      continue;
    }
    if (r.status == ParseStatus::kError) {
      v.error_status = p.error_status();
      FUZZ_CHECK(v.error_status >= 400 && v.error_status < 600);
      v.consumed = 0;
    } else {
      const HttpRequest& q = p.request();
      FUZZ_CHECK(q.body.size() <= limits.max_body);
      FUZZ_CHECK(q.headers.size() <= limits.max_headers);
      FUZZ_CHECK(!q.target.empty() && q.target.front() == '/');
      v.method = q.method;
      v.target = q.target;
      v.body = q.body;
      v.headers = q.headers.size();
      v.keep_alive = q.keep_alive;
    }
    return v;
  }
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  HttpLimits limits;
  limits.max_request_line = 256;
  limits.max_head_bytes = 1024;
  limits.max_headers = 8;
  limits.max_body = 512;
  Verdict whole = run(in, 0, limits);
  Verdict parts = run(in, data[0], limits);
  FUZZ_CHECK(whole.status == parts.status);
  FUZZ_CHECK(whole.error_status == parts.error_status);
  FUZZ_CHECK(whole.method == parts.method && whole.target == parts.target);
  FUZZ_CHECK(whole.body == parts.body && whole.headers == parts.headers);
  FUZZ_CHECK(whole.keep_alive == parts.keep_alive);
  if (whole.status == ParseStatus::kDone) {
    FUZZ_CHECK(whole.consumed == parts.consumed);
  }
  return 0;
}
