#include "proto/dns_answer.h"

#include <algorithm>

namespace ringmail::proto::dns {
namespace {

constexpr size_t kHeader = 12;
constexpr size_t kMaxName = 255;

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> m) : m_(m) {}

  bool has(size_t off, size_t n) const { return off <= m_.size() && n <= m_.size() - off; }
  uint16_t u16(size_t off) const { return static_cast<uint16_t>((m_[off] << 8) | m_[off + 1]); }
  uint32_t u32(size_t off) const {
    return (uint32_t{m_[off]} << 24) | (uint32_t{m_[off + 1]} << 16) |
           (uint32_t{m_[off + 2]} << 8) | uint32_t{m_[off + 3]};
  }

  /// Reads a (possibly compressed) name at *off; *off moves past it.
  Result<std::string> name(size_t* off) const {
    std::string out;
    size_t pos = *off;
    bool jumped = false;
    int jumps = 0;
    for (;;) {
      if (!has(pos, 1)) {
        return make_error(Errc::kSyntax, "DNS answer truncated inside a name");
      }
      uint8_t len = m_[pos];
      if ((len & 0xC0) == 0xC0) {
        if (!has(pos, 2)) {
          return make_error(Errc::kSyntax, "DNS answer truncated inside a name pointer");
        }
        size_t target = (size_t{len & 0x3Fu} << 8) | m_[pos + 1];
        if (target >= pos || ++jumps > kMaxPointerJumps) {
          return make_error(Errc::kSyntax, "DNS answer has a compression pointer loop");
        }
        if (!jumped) {
          *off = pos + 2;
          jumped = true;
        }
        pos = target;
        continue;
      }
      if ((len & 0xC0) != 0) {
        return make_error(Errc::kSyntax, "DNS answer uses an unknown label type");
      }
      if (len == 0) {
        if (!jumped) {
          *off = pos + 1;
        }
        return out;
      }
      if (!has(pos + 1, len)) {
        return make_error(Errc::kSyntax, "DNS answer truncated inside a label");
      }
      if (!out.empty()) {
        out.push_back('.');
      }
      for (size_t i = 0; i < len; ++i) {
        out.push_back(lower(static_cast<char>(m_[pos + 1 + i])));
      }
      if (out.size() > kMaxName) {
        return make_error(Errc::kSyntax, "DNS answer has a name longer than 255 octets");
      }
      pos += 1 + len;
    }
  }

 private:
  std::span<const uint8_t> m_;
};

struct Rr {
  std::string owner;
  uint16_t type;
  uint32_t ttl;
  size_t rdata;
  uint16_t rdlen;
};

uint32_t sane_ttl(uint32_t ttl) {
  return (ttl & 0x80000000u) != 0 ? 0 : ttl;
}

Result<void> read_rrs(const Reader& r, size_t* off, size_t count, size_t max, std::vector<Rr>* out,
                      size_t* ignored) {
  for (size_t i = 0; i < count; ++i) {
    auto owner = r.name(off);
    if (!owner.ok()) {
      return std::move(owner).take_error();
    }
    if (!r.has(*off, 10)) {
      return make_error(Errc::kSyntax, "DNS answer truncated inside a record header");
    }
    Rr rr;
    rr.owner = std::move(*owner);
    rr.type = r.u16(*off);
    rr.ttl = sane_ttl(r.u32(*off + 4));
    rr.rdlen = r.u16(*off + 8);
    rr.rdata = *off + 10;
    if (!r.has(rr.rdata, rr.rdlen)) {
      return make_error(Errc::kSyntax, "DNS answer truncated inside record data");
    }
    *off = rr.rdata + rr.rdlen;
    if (out->size() < max) {
      out->push_back(std::move(rr));
    } else {
      ++*ignored;
    }
  }
  return ok_result();
}

}  // namespace

std::string canonical_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    out.push_back(lower(c));
  }
  if (!out.empty() && out.back() == '.') {
    out.pop_back();
  }
  return out;
}

Result<Answer> parse_answer(std::span<const uint8_t> message, std::string_view qname,
                            uint16_t qtype, const Limits& limits) {
  Reader r(message);
  if (!r.has(0, kHeader)) {
    return make_error(Errc::kSyntax, "DNS answer shorter than its header");
  }
  uint16_t flags = r.u16(2);
  if ((flags & 0x8000) == 0) {
    return make_error(Errc::kSyntax, "DNS message is not a response");
  }
  Answer a;
  a.rcode = static_cast<uint8_t>(flags & 0x000F);
  a.truncated = (flags & 0x0200) != 0;
  size_t qd = r.u16(4), an = r.u16(6), ns = r.u16(8);
  size_t off = kHeader;
  for (size_t i = 0; i < qd; ++i) {
    auto n = r.name(&off);
    if (!n.ok()) {
      return std::move(n).take_error();
    }
    if (!r.has(off, 4)) {
      return make_error(Errc::kSyntax, "DNS answer truncated inside the question");
    }
    off += 4;
  }
  std::vector<Rr> answers, authority;
  RM_TRY(read_rrs(r, &off, an, limits.max_records, &answers, &a.ignored_records));
  // The authority section matters only for the SOA of negative answers; a
  // damaged authority section after good answers is not worth failing for.
  size_t ignored_ns = 0;
  if (!read_rrs(r, &off, ns, limits.max_records, &authority, &ignored_ns).ok()) {
    authority.clear();
  }
  for (const Rr& rr : authority) {
    if (rr.type != kTypeSoa) {
      continue;
    }
    size_t p = rr.rdata;
    auto mname = r.name(&p);
    auto rname = mname.ok() ? r.name(&p) : std::move(mname);
    if (rname.ok() && p + 20 <= rr.rdata + rr.rdlen) {
      uint32_t minimum = sane_ttl(r.u32(p + 16));
      a.has_negative_ttl = true;
      a.negative_ttl = std::min(rr.ttl, minimum);
      break;
    }
  }
  std::string cur = canonical_name(qname);
  uint32_t min_ttl = UINT32_MAX;
  std::vector<std::string> seen{cur};
  for (size_t hops = 0;; ++hops) {
    const Rr* cname = nullptr;
    if (qtype != kTypeCname) {
      for (const Rr& rr : answers) {
        if (rr.type == kTypeCname && rr.owner == cur) {
          cname = &rr;
          break;
        }
      }
    }
    if (cname == nullptr) {
      break;
    }
    if (hops >= limits.max_cname_hops) {
      return make_error(Errc::kSyntax, "DNS answer has a CNAME chain longer than " +
                                           std::to_string(limits.max_cname_hops));
    }
    size_t p = cname->rdata;
    auto target = r.name(&p);
    if (!target.ok()) {
      return std::move(target).take_error();
    }
    if (std::find(seen.begin(), seen.end(), *target) != seen.end()) {
      return make_error(Errc::kSyntax, "DNS answer has a CNAME loop at " + *target);
    }
    min_ttl = std::min(min_ttl, cname->ttl);
    seen.push_back(*target);
    cur = std::move(*target);
  }
  a.final_name = cur;
  for (const Rr& rr : answers) {
    if (rr.owner != cur || rr.type != qtype) {
      if (rr.type != kTypeCname) {
        ++a.ignored_records;
      }
      continue;
    }
    if (rr.type == kTypeMx) {
      if (rr.rdlen < 3) {
        return make_error(Errc::kSyntax, "DNS answer has a short MX record");
      }
      size_t p = rr.rdata + 2;
      auto ex = r.name(&p);
      if (!ex.ok()) {
        return std::move(ex).take_error();
      }
      if (p > rr.rdata + rr.rdlen) {
        return make_error(Errc::kSyntax, "DNS answer has an MX name beyond its record");
      }
      a.mx.push_back(MxRecord{r.u16(rr.rdata), std::move(*ex)});
    } else if (rr.type == kTypeA) {
      if (rr.rdlen != 4) {
        return make_error(Errc::kSyntax, "DNS answer has an A record of the wrong size");
      }
      std::array<uint8_t, 4> v;
      std::copy_n(message.begin() + static_cast<long>(rr.rdata), 4, v.begin());
      a.a.push_back(v);
    } else if (rr.type == kTypeAaaa) {
      if (rr.rdlen != 16) {
        return make_error(Errc::kSyntax, "DNS answer has an AAAA record of the wrong size");
      }
      std::array<uint8_t, 16> v;
      std::copy_n(message.begin() + static_cast<long>(rr.rdata), 16, v.begin());
      a.aaaa.push_back(v);
    } else {
      continue;
    }
    a.has_records = true;
    min_ttl = std::min(min_ttl, rr.ttl);
  }
  a.min_ttl = min_ttl == UINT32_MAX ? 0 : min_ttl;
  return a;
}

Result<void> build_query(std::string& out, uint16_t id, std::string_view qname, uint16_t qtype) {
  auto put16 = [&out](uint16_t v) {
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v & 0xff));
  };
  std::string name = canonical_name(qname);
  if (name.size() > 253) {
    return make_error(Errc::kInvalidArgument, "name too long for a DNS query");
  }
  size_t start = out.size();
  put16(id);
  put16(0x0100);  // RD
  put16(1);
  put16(0);
  put16(0);
  put16(0);
  size_t pos = 0;
  while (pos < name.size()) {
    size_t dot = name.find('.', pos);
    size_t end = dot == std::string::npos ? name.size() : dot;
    size_t len = end - pos;
    if (len == 0 || len > 63) {
      out.resize(start);
      return make_error(Errc::kInvalidArgument, "bad label in DNS name " + name);
    }
    out.push_back(static_cast<char>(len));
    out.append(name, pos, len);
    pos = end + 1;
    if (dot == std::string::npos) {
      break;
    }
  }
  out.push_back('\0');
  put16(qtype);
  put16(1);  // IN
  return ok_result();
}

}  // namespace ringmail::proto::dns
