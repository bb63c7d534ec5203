#include "proto/spool_format.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ringmail::proto::spool {
namespace {

// --- CRC-32C (Castagnoli), hardware when the CPU has SSE4.2 ---------------

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) {
      c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

uint32_t crc_soft(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  }
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc_hw(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return c32;
}

bool have_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

// --- little-endian writing and bounded reading -----------------------------

void put(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

void put_str(std::string& out, std::string_view s) {
  put(out, s.size(), 4);
  out.append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u(uint64_t* v, int bytes) {
    if (in_.size() < static_cast<size_t>(bytes)) {
      return false;
    }
    uint64_t x = 0;
    for (int i = 0; i < bytes; ++i) {
      x |= uint64_t{static_cast<uint8_t>(in_[static_cast<size_t>(i)])} << (8 * i);
    }
    in_.remove_prefix(static_cast<size_t>(bytes));
    *v = x;
    return true;
  }
  bool str(std::string_view* s) {
    uint64_t n = 0;
    if (!u(&n, 4) || n > in_.size()) {
      return false;
    }
    *s = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  bool empty() const { return in_.empty(); }
  size_t left() const { return in_.size(); }

 private:
  std::string_view in_;
};

// Bits of a JOB record's flags word.
constexpr uint64_t kFlagSenderUtf8 = 1;
constexpr uint64_t kFlagPersonalised = 2;

Error truncated(const char* what) {
  return make_error(Errc::kSyntax, std::string("spool record truncated: ") + what);
}

/// Wraps a payload built in `payload` as a record appended to `out`.
void finish_record(std::string& out, RecordType type, std::string_view payload) {
  char hdr[4] = {static_cast<char>(type), 0, 0, 0};
  uint32_t crc = crc32c(0, {reinterpret_cast<const uint8_t*>(hdr), 4});
  crc = crc32c(crc, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
  put(out, payload.size(), 4);
  out.append(hdr, 4);
  put(out, crc, 4);
  out.append(payload);
}

}  // namespace

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> bytes) {
  crc = ~crc;
#if defined(__x86_64__)
  if (have_sse42()) {
    return ~crc_hw(crc, bytes.data(), bytes.size());
  }
#endif
  return ~crc_soft(crc, bytes.data(), bytes.size());
}

void append_segment_header(std::string& out, uint32_t shard, uint64_t segment, int64_t now_ms) {
  out.append(kMagic, sizeof kMagic);
  put(out, kVersion, 4);
  put(out, shard, 4);
  put(out, segment, 8);
  put(out, static_cast<uint64_t>(now_ms), 8);
}

Result<SegmentHeader> decode_segment_header(std::string_view bytes) {
  if (bytes.size() < kSegmentHeaderSize || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    return make_error(Errc::kSyntax, "not a ringmail spool segment (bad magic)");
  }
  Reader r(bytes.substr(8, kSegmentHeaderSize - 8));
  uint64_t version = 0, shard = 0, seg = 0, created = 0;
  r.u(&version, 4);
  r.u(&shard, 4);
  r.u(&seg, 8);
  r.u(&created, 8);
  if (version != kVersion) {
    return make_error(Errc::kUnsupported,
                      "spool segment version " + std::to_string(version) + " is not supported");
  }
  return SegmentHeader{static_cast<uint32_t>(shard), seg, static_cast<int64_t>(created)};
}

void append_job(std::string& out, const JobRecord& job) {
  std::string p;
  size_t est = 64 + job.batch_id.size() + job.sender.size() + job.body_prefix.size() +
               job.body.size() + job.rcpts.size() * 48;
  if (job.personalised) {
    for (const RcptRecord& r : job.rcpts) {
      est += 4 + r.vars.size();
    }
  }
  p.reserve(est);
  put(p, job.job_id, 8);
  put(p, (job.sender_utf8 ? kFlagSenderUtf8 : 0) | (job.personalised ? kFlagPersonalised : 0), 4);
  put(p, job.pool, 4);
  put(p, static_cast<uint64_t>(job.accepted_ms), 8);
  put_str(p, job.batch_id);
  put_str(p, job.sender);
  put_str(p, job.auth_user);
  put(p, job.body_prefix.size() + job.body.size(), 4);
  p.append(job.body_prefix);
  p.append(job.body);
  put(p, job.rcpts.size(), 4);
  for (const RcptRecord& r : job.rcpts) {
    put_str(p, r.address);
    put(p, r.domain_off, 2);
    put(p, r.attempts, 2);
    put(p, static_cast<uint8_t>(r.state), 1);
    put(p, static_cast<uint64_t>(r.next_retry_ms), 8);
  }
  if (job.personalised) {
    put_str(p, job.dkim_domain);
    put(p, static_cast<uint64_t>(job.dkim_time_s), 8);
    for (const RcptRecord& r : job.rcpts) {
      put_str(p, r.vars);
    }
  }
  finish_record(out, RecordType::kJob, p);
}

Result<JobRecord> decode_job(std::string_view payload) {
  Reader r(payload);
  JobRecord j;
  uint64_t flags = 0, pool = 0, accepted = 0, n = 0;
  if (!r.u(&j.job_id, 8) || !r.u(&flags, 4) || !r.u(&pool, 4) || !r.u(&accepted, 8)) {
    return truncated("job header");
  }
  j.sender_utf8 = (flags & kFlagSenderUtf8) != 0;
  j.personalised = (flags & kFlagPersonalised) != 0;
  j.pool = static_cast<uint32_t>(pool);
  j.accepted_ms = static_cast<int64_t>(accepted);
  if (!r.str(&j.batch_id) || !r.str(&j.sender) || !r.str(&j.auth_user) || !r.str(&j.body) ||
      !r.u(&n, 4)) {
    return truncated("job envelope");
  }
  // Each recipient takes at least 17 bytes: a count beyond what is left is
  // a lie, not an allocation size.
  if (n > r.left() / 17) {
    return make_error(Errc::kSyntax, "spool job claims more recipients than it holds");
  }
  j.rcpts.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    RcptRecord rc;
    uint64_t doff = 0, attempts = 0, state = 0, next = 0;
    if (!r.str(&rc.address) || !r.u(&doff, 2) || !r.u(&attempts, 2) || !r.u(&state, 1) ||
        !r.u(&next, 8)) {
      return truncated("recipient");
    }
    if (doff == 0 || doff >= rc.address.size() || state > 1) {
      return make_error(Errc::kSyntax, "spool recipient is malformed");
    }
    rc.domain_off = static_cast<uint16_t>(doff);
    rc.attempts = static_cast<uint16_t>(attempts);
    rc.state = static_cast<RcptState>(state);
    rc.next_retry_ms = static_cast<int64_t>(next);
    j.rcpts.push_back(rc);
  }
  if (j.personalised) {
    uint64_t t = 0;
    if (!r.str(&j.dkim_domain) || !r.u(&t, 8)) {
      return truncated("personalised job");
    }
    j.dkim_time_s = static_cast<int64_t>(t);
    for (RcptRecord& rc : j.rcpts) {
      if (!r.str(&rc.vars)) {
        return truncated("recipient variables");
      }
    }
  }
  if (!r.empty()) {
    return make_error(Errc::kSyntax, "spool job has trailing bytes");
  }
  return j;
}

void append_state(std::string& out, const StateRecord& st) {
  std::string p;
  p.reserve(24 + st.rcpts.size() * 4);
  put(p, st.job_id, 8);
  put(p, static_cast<uint8_t>(st.kind), 1);
  put(p, st.attempts, 2);
  put(p, static_cast<uint64_t>(st.next_retry_ms), 8);
  put(p, st.rcpts.size(), 4);
  for (uint32_t i : st.rcpts) {
    put(p, i, 4);
  }
  finish_record(out, RecordType::kState, p);
}

Result<StateRecord> decode_state(std::string_view payload) {
  Reader r(payload);
  StateRecord s;
  uint64_t kind = 0, attempts = 0, next = 0, n = 0;
  if (!r.u(&s.job_id, 8) || !r.u(&kind, 1) || !r.u(&attempts, 2) || !r.u(&next, 8) || !r.u(&n, 4)) {
    return truncated("state header");
  }
  if (kind != 1 && kind != 2) {
    return make_error(Errc::kSyntax, "spool state record has an unknown kind");
  }
  if (n != r.left() / 4 || r.left() % 4 != 0) {
    return make_error(Errc::kSyntax, "spool state record count does not match its size");
  }
  s.kind = static_cast<StateKind>(kind);
  s.attempts = static_cast<uint16_t>(attempts);
  s.next_retry_ms = static_cast<int64_t>(next);
  s.rcpts.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t idx = 0;
    r.u(&idx, 4);
    s.rcpts.push_back(static_cast<uint32_t>(idx));
  }
  return s;
}

void append_commit(std::string& out, uint64_t offset) {
  std::string p;
  put(p, offset, 8);
  finish_record(out, RecordType::kCommit, p);
}

void append_retire(std::string& out, uint64_t job_id) {
  std::string p;
  put(p, job_id, 8);
  finish_record(out, RecordType::kRetire, p);
}

namespace {

/// Checks one record at `off`; on success sets its type, payload and end.
bool record_at(std::string_view seg, size_t off, RecordType* type, std::string_view* payload,
               size_t* end, std::string* why) {
  if (seg.size() - off < kRecordHeaderSize) {
    *why = "truncated record header";
    return false;
  }
  Reader r(seg.substr(off, kRecordHeaderSize));
  uint64_t len = 0, t = 0, flags = 0, reserved = 0, crc = 0;
  r.u(&len, 4);
  r.u(&t, 1);
  r.u(&flags, 1);
  r.u(&reserved, 2);
  r.u(&crc, 4);
  if (t < 1 || t > 4 || flags != 0 || reserved != 0) {
    *why = "bad record header";
    return false;
  }
  if (len > kMaxRecord || len > seg.size() - off - kRecordHeaderSize) {
    *why = "record length beyond the segment";
    return false;
  }
  std::string_view p = seg.substr(off + kRecordHeaderSize, len);
  uint32_t c = crc32c(0, {reinterpret_cast<const uint8_t*>(seg.data() + off + 4), 4});
  c = crc32c(c, {reinterpret_cast<const uint8_t*>(p.data()), p.size()});
  if (c != crc) {
    *why = "checksum mismatch";
    return false;
  }
  *type = static_cast<RecordType>(t);
  *payload = p;
  *end = off + kRecordHeaderSize + len;
  return true;
}

}  // namespace

ScanResult scan_segment(
    std::string_view seg,
    const std::function<bool(RecordType, std::string_view, size_t)>& on_record) {
  ScanResult res;
  size_t off = kSegmentHeaderSize;
  res.good_end = off;
  while (off < seg.size()) {
    RecordType type{};
    std::string_view payload;
    size_t end = 0;
    std::string why;
    if (!record_at(seg, off, &type, &payload, &end, &why)) {
      if (!res.damaged) {
        res.damaged = true;
        res.damage_offset = off;
        res.damage = why;
      }
      // Look for the next well-formed record; only a CRC-checked record
      // counts, so a false resynchronisation is vanishingly unlikely.
      size_t next = off + 1;
      bool found = false;
      for (; next + kRecordHeaderSize <= seg.size(); ++next) {
        std::string ignored;
        if (record_at(seg, next, &type, &payload, &end, &ignored)) {
          found = true;
          break;
        }
      }
      if (!found) {
        return res;
      }
      res.resynced = true;
      res.skipped += next - off;
      off = next;
    }
    if (type == RecordType::kCommit && payload.size() == 8) {
      Reader r(payload);
      uint64_t c = 0;
      r.u(&c, 8);
      res.commit = std::max<uint64_t>(res.commit, c);
    }
    ++res.records;
    res.good_end = end;
    if (!on_record(type, payload, off)) {
      return res;
    }
    off = end;
  }
  return res;
}

}  // namespace ringmail::proto::spool
