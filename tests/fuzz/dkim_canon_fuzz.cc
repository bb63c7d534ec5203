// Differential: proto/dkim.cc's streaming canonicalisation against the slow
// reference in tests/proto/dkim_reference.h, on arbitrary bytes.
// Input: 1 byte of flags, 4 bytes of split seed, then the bytes.
// Properties:
//   - body (simple and relaxed), fed in pieces cut by the seed, equals the
//     reference on the whole input, and length() is the output size;
//   - one header field (the input, made to end with CRLF) canonicalises
//     like the reference;
//   - split_header(): fields tile the header section exactly, each ends
//     with CRLF and has a printable name; select_signed_headers() equals
//     the reference applied bottom-up; from_domain() does not crash;
//   - the DKIM-Signature text: removing the b= value gives back the
//     unsigned text; lines stay within the fold column;
//   - base64 round-trips.
#include <algorithm>
#include <string>
#include <vector>

#include "proto/dkim.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/proto/dkim_reference.h"

using namespace ringmail::proto;

namespace {

class Recorder final : public Sha256 {
 public:
  void update(std::string_view b) override { bytes.append(b); }
  Digest finish() override { return Digest{}; }
  std::string bytes;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

void check_body(std::string_view in, uint32_t seed) {
  for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
    Recorder r;
    BodyCanonicalizer bc(c, &r);
    ringmail::fuzz::Splitter split(seed);
    std::string_view rest = in;
    while (!rest.empty()) {
      size_t n = split.next(rest.size());
      bc.update(rest.substr(0, n));
      rest.remove_prefix(n);
    }
    bc.finish();
    FUZZ_CHECK(r.bytes == reference::body(in, c == Canon::kRelaxed));
    FUZZ_CHECK(bc.length() == r.bytes.size());
  }
}

void check_header_field(std::string_view in) {
  std::string field(in);
  field.append("\r\n");
  for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
    std::string out;
    append_canonical_header(c, field, out);
    FUZZ_CHECK(out == reference::header(field, c == Canon::kRelaxed));
  }
}

void check_split(std::string_view msg) {
  auto s = split_header(msg);
  if (!s.ok()) {
    return;
  }
  size_t pos = 0;
  for (const HeaderField& f : s->fields) {
    FUZZ_CHECK(f.raw.data() == msg.data() + pos);
    FUZZ_CHECK(f.raw.size() >= 3 && f.raw.ends_with("\r\n"));
    FUZZ_CHECK(!f.name.empty() && f.raw.starts_with(f.name));
    for (char ch : f.name) {
      FUZZ_CHECK(static_cast<unsigned char>(ch) > 32 && static_cast<unsigned char>(ch) < 127 &&
                 ch != ':');
    }
    pos += f.raw.size();
  }
  FUZZ_CHECK(s->body_offset == pos || s->body_offset == pos + 2);
  if (s->body_offset == pos + 2) {
    FUZZ_CHECK(msg.substr(pos, 2) == "\r\n");
  } else {
    FUZZ_CHECK(pos == msg.size());
  }
  (void)from_domain(*s);
  // Signed header selection against the reference, bottom-up per name.
  std::vector<std::string> names = {"From", "Subject", "to", "X-A", "Received"};
  std::vector<std::string> over = {"from"};
  for (Canon c : {Canon::kSimple, Canon::kRelaxed}) {
    SignedHeaders sh = select_signed_headers(*s, names, over, c);
    std::string want;
    std::string want_h;
    for (const std::string& n : names) {
      size_t count = 0;
      for (size_t i = s->fields.size(); i-- > 0;) {
        if (lower(s->fields[i].name) == lower(n)) {
          want += reference::header(s->fields[i].raw, c == Canon::kRelaxed);
          want_h += (want_h.empty() ? "" : ":") + n;
          ++count;
        }
      }
      if (lower(n) == "from") {
        want_h += (want_h.empty() ? "" : ":") + n;
      }
    }
    FUZZ_CHECK(sh.canonical == want);
    FUZZ_CHECK(sh.h == want_h);
  }
}

void check_signature_header(ringmail::fuzz::FuzzInput& in) {
  std::string domain(in.slice(80));
  std::string selector(in.slice(40));
  std::string h(in.slice(200));
  for (std::string* s : {&domain, &selector, &h}) {
    for (char& ch : *s) {  // tag values: no ';', no WSP, no CR/LF (as signers produce them)
      auto u = static_cast<unsigned char>(ch);
      if (u <= 32 || u >= 127 || ch == ';' || ch == '=') {
        ch = 'x';
      }
    }
  }
  std::string bh =
      base64(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(h.data()), h.size() % 33));
  SignatureParams p;
  p.algorithm = "ed25519-sha256";
  p.domain = domain;
  p.selector = selector;
  p.headers = h;
  p.body_hash = bh;
  p.timestamp = static_cast<int64_t>(in.u64() >> 2);
  SignatureHeader sh(p);
  std::string sig =
      base64(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(h.data()), h.size()));
  std::string field = sh.finish(sig);
  FUZZ_CHECK(field.starts_with(sh.unsigned_text()));
  // What follows "b=" is the signature with FWS only.
  std::string rest;
  for (char ch : field.substr(sh.unsigned_text().size())) {
    if (ch != '\r' && ch != '\n' && ch != '\t') {
      rest.push_back(ch);
    }
  }
  FUZZ_CHECK(rest == sig);
  FUZZ_CHECK(sh.unsigned_text().ends_with("b="));
  // Lines are within the fold column unless one token is longer than it.
  size_t longest_item = 0;
  for (size_t a = 0, b = 0; a <= h.size(); a = b + 1) {
    b = h.find(':', a);
    b = b == std::string::npos ? h.size() : b;
    longest_item = std::max(longest_item, b - a);
  }
  if (domain.size() < 60 && selector.size() < 60 && longest_item < 60) {
    size_t start = 0;
    while (start < field.size()) {
      size_t end = field.find("\r\n", start);
      FUZZ_CHECK(end != std::string::npos);
      FUZZ_CHECK(end - start <= SignatureHeader::kFoldColumn);
      start = end + 2;
    }
  }
  auto back = base64_decode(sig);
  FUZZ_CHECK(back.ok() && *back == h);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ringmail::fuzz::FuzzInput in(data, size);
  uint8_t flags = in.byte();
  uint32_t seed = 0;
  for (int i = 0; i < 4; ++i) {
    seed = (seed << 8) | in.byte();
  }
  if (flags & 1) {
    check_signature_header(in);
    return 0;
  }
  std::string bytes(in.rest());  // exact-size copy: ASan sees over-reads
  check_body(bytes, seed);
  check_header_field(bytes);
  check_split(bytes);
  return 0;
}
