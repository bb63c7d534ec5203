// DNS answer reading: the fuzz bytes are a response from an untrusted
// resolver (or anyone who can spoof one), read for a question chosen by the
// first byte.
// Properties:
//   - no over-read (the message sits in an exact-size heap buffer), no hang
//     (pointer loops and CNAME loops end);
//   - every name read back is at most 255 octets, lower-case, without a
//     trailing dot; records only of the asked type, at most max_records;
//     TTLs never have the high bit set (RFC 2181 8);
//   - round trip: an answer that parses is written out again, uncompressed,
//     by a reference writer in this file (one CNAME from the question to the
//     final name, the records, the SOA of the negative TTL), and reading that
//     gives the same answer.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "proto/dns_answer.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto::dns;

namespace {

constexpr uint16_t kQtypes[] = {kTypeMx, kTypeA, kTypeAaaa, kTypeCname, kTypeTxt, kTypeSoa};
constexpr const char* kQnames[] = {"example.com", "Example.COM.", "mx.example.net", "a.b.c.d.e",
                                   "x"};

void check_name(const std::string& n) {
  FUZZ_CHECK(n.size() <= 255);
  for (char c : n) {
    FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
  }
}

// --- reference writer (uncompressed names) ---------------------------------

void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v & 0xffff));
}

/// Wire form of a dotted name; false when it has an empty label (a label
/// holding a '.' byte reads back as a name that no label split reproduces)
/// or a label over 63 octets.
bool put_name(std::string& out, const std::string& name) {
  size_t pos = 0;
  while (pos < name.size()) {
    size_t dot = name.find('.', pos);
    size_t end = dot == std::string::npos ? name.size() : dot;
    if (end == pos || end - pos > 63) {
      return false;
    }
    out.push_back(static_cast<char>(end - pos));
    out.append(name, pos, end - pos);
    if (dot == std::string::npos) {
      break;
    }
    pos = dot + 1;
    if (pos == name.size()) {
      return false;  // trailing empty label
    }
  }
  out.push_back('\0');
  return true;
}

bool put_rr(std::string& out, const std::string& owner, uint16_t type, uint32_t ttl,
            const std::string& rdata) {
  if (!put_name(out, owner)) {
    return false;
  }
  put16(out, type);
  put16(out, 1);
  put32(out, ttl);
  put16(out, static_cast<uint16_t>(rdata.size()));
  out += rdata;
  return true;
}

/// Writes `a` as a response to (qname, qtype). False when a name cannot be
/// written back (see put_name).
bool write_answer(const Answer& a, const std::string& qname, uint16_t qtype, std::string* out) {
  std::string answers;
  uint16_t an = 0;
  const uint32_t ttl = a.min_ttl;
  if (a.final_name != qname) {
    std::string target;
    if (!put_name(target, a.final_name) || !put_rr(answers, qname, kTypeCname, ttl, target)) {
      return false;
    }
    ++an;
  }
  for (const MxRecord& m : a.mx) {
    std::string rd;
    put16(rd, m.preference);
    if (!put_name(rd, m.exchange) || !put_rr(answers, a.final_name, kTypeMx, ttl, rd)) {
      return false;
    }
    ++an;
  }
  for (const auto& v : a.a) {
    if (!put_rr(answers, a.final_name, kTypeA, ttl, std::string(v.begin(), v.end()))) {
      return false;
    }
    ++an;
  }
  for (const auto& v : a.aaaa) {
    if (!put_rr(answers, a.final_name, kTypeAaaa, ttl, std::string(v.begin(), v.end()))) {
      return false;
    }
    ++an;
  }
  std::string authority;
  uint16_t ns = 0;
  if (a.has_negative_ttl) {
    std::string rd;
    put_name(rd, "ns.example");
    put_name(rd, "hostmaster.example");
    for (int i = 0; i < 4; ++i) {
      put32(rd, 1);
    }
    put32(rd, a.negative_ttl);  // MINIMUM
    if (!put_rr(authority, qname, kTypeSoa, a.negative_ttl, rd)) {
      return false;
    }
    ++ns;
  }
  out->clear();
  put16(*out, 0x1234);
  put16(*out, static_cast<uint16_t>(0x8000 | (a.truncated ? 0x0200 : 0) | (a.rcode & 0x0f)));
  put16(*out, 1);
  put16(*out, an);
  put16(*out, ns);
  put16(*out, 0);
  if (!put_name(*out, qname)) {
    return false;
  }
  put16(*out, qtype);
  put16(*out, 1);
  *out += answers;
  *out += authority;
  return true;
}

void check_answer(const Answer& a, uint16_t qtype, const Limits& limits) {
  check_name(a.final_name);
  FUZZ_CHECK(a.mx.empty() || qtype == kTypeMx);
  FUZZ_CHECK(a.a.empty() || qtype == kTypeA);
  FUZZ_CHECK(a.aaaa.empty() || qtype == kTypeAaaa);
  FUZZ_CHECK(a.mx.size() + a.a.size() + a.aaaa.size() <= limits.max_records);
  FUZZ_CHECK(a.has_records == (!a.mx.empty() || !a.a.empty() || !a.aaaa.empty()));
  FUZZ_CHECK((a.min_ttl & 0x80000000u) == 0);
  FUZZ_CHECK(!a.has_negative_ttl || (a.negative_ttl & 0x80000000u) == 0);
  for (const MxRecord& m : a.mx) {
    check_name(m.exchange);
  }
}

bool same(const Answer& x, const Answer& y) {
  if (x.rcode != y.rcode || x.truncated != y.truncated || x.final_name != y.final_name ||
      x.a != y.a || x.aaaa != y.aaaa || x.has_records != y.has_records ||
      x.has_negative_ttl != y.has_negative_ttl || x.mx.size() != y.mx.size()) {
    return false;
  }
  if (x.has_negative_ttl && x.negative_ttl != y.negative_ttl) {
    return false;
  }
  if ((x.has_records || x.final_name != y.final_name) && x.min_ttl != y.min_ttl) {
    return false;
  }
  for (size_t i = 0; i < x.mx.size(); ++i) {
    if (x.mx[i].preference != y.mx[i].preference || x.mx[i].exchange != y.mx[i].exchange) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint8_t sel = in.byte();
  const uint16_t qtype = kQtypes[(sel & 0x0f) % std::size(kQtypes)];
  const std::string qname = kQnames[(sel >> 4) % std::size(kQnames)];
  Limits limits;
  if ((sel & 0x80) != 0) {  // small limits reach the limit paths
    limits.max_records = 3;
    limits.max_cname_hops = 2;
  }
  std::string_view rest = in.rest();
  std::unique_ptr<uint8_t[]> buf(new uint8_t[rest.size()]);  // exact size: ASan sees over-reads
  std::memcpy(buf.get(), rest.data(), rest.size());
  std::span<const uint8_t> msg(buf.get(), rest.size());

  Result<Answer> a = parse_answer(msg, qname, qtype, limits);
  if (!a.ok()) {
    FUZZ_CHECK(!a.error().message.empty());
    return 0;
  }
  check_answer(*a, qtype, limits);
  FUZZ_CHECK(a->rcode == (rest[3] & 0x0f));

  // The question name's spelling does not matter.
  Result<Answer> again = parse_answer(msg, canonical_name(qname), qtype, limits);
  FUZZ_CHECK(again.ok() && same(*a, *again));

  // Round trip through the reference writer.
  std::string wire;
  const std::string cq = canonical_name(qname);
  if (!write_answer(*a, cq, qtype, &wire)) {
    return 0;
  }
  Limits roomy;
  roomy.max_records = limits.max_records + 1;  // the CNAME written counts as a record
  Result<Answer> b = parse_answer(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(wire.data()), wire.size()), cq,
      qtype, roomy);
  FUZZ_CHECK(b.ok());
  FUZZ_CHECK(same(*a, *b));
  return 0;
}
