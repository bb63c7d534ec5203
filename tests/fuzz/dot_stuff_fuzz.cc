// Normalise + dot-stuff round trip (the outbound anti-smuggling property,
// reliability.md c1 #2 and G12).
// Properties: unstuff(stuff(normalize(x))) == normalize(x); the stuffed
// form never contains CRLF.CRLF (counting the start as a line start);
// normalize is idempotent and leaves no bare CR or LF; scan_body agrees
// with normalize_body; a DataReader fed stuff(...) + ".\r\n" ends exactly
// at the end and yields normalize(x).
#include <string>

#include "proto/message_body.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string raw(reinterpret_cast<const char*>(data), size);
  std::string norm;
  BodyInfo info = normalize_body(raw, norm);
  BodyInfo scanned = scan_body(raw);
  FUZZ_CHECK(scanned.lines == info.lines && scanned.had_bare_line_end == info.had_bare_line_end &&
             scanned.needs_stuffing == info.needs_stuffing && scanned.eight_bit == info.eight_bit &&
             scanned.long_lines == info.long_lines);
  FUZZ_CHECK(raw.empty() == norm.empty());
  if (!norm.empty()) {
    FUZZ_CHECK(norm.size() >= 2 && norm.compare(norm.size() - 2, 2, "\r\n") == 0);
  }
  for (size_t i = 0; i < norm.size(); ++i) {
    if (norm[i] == '\r') {
      FUZZ_CHECK(i + 1 < norm.size() && norm[i + 1] == '\n');
    }
    if (norm[i] == '\n') {
      FUZZ_CHECK(i > 0 && norm[i - 1] == '\r');
    }
  }
  std::string again;
  BodyInfo second = normalize_body(norm, again);
  FUZZ_CHECK(again == norm && !second.had_bare_line_end);

  std::string stuffed;
  size_t n = append_dot_stuffed(norm, stuffed);
  FUZZ_CHECK(n == stuffed.size());
  FUZZ_CHECK(dot_unstuff(stuffed) == norm);
  FUZZ_CHECK(("\r\n" + stuffed).find("\r\n.\r\n") == std::string::npos);

  std::string wire = stuffed + ".\r\n";
  DataReader reader;
  std::string content;
  ParseResult r = reader.feed(std::span<const char>(wire.data(), wire.size()), &content);
  FUZZ_CHECK(r.status == ParseStatus::kDone && r.consumed == wire.size());
  FUZZ_CHECK(content == norm && !reader.bare_line_seen());

  // Stuffing then unstuffing arbitrary (not normalised) bytes is lossless too.
  std::string raw_stuffed;
  append_dot_stuffed(raw, raw_stuffed);
  FUZZ_CHECK(dot_unstuff(raw_stuffed) == raw);
  return 0;
}
