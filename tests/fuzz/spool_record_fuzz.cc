// Spool segments and records: the fuzz bytes are what recovery reads back
// after a crash, a torn write or a disk that returns garbage. The first
// byte picks what they are:
//   0: the records of a segment (a valid segment header is prepended);
//   1: a JOB payload;  2: a STATE payload;  3: a segment header;
//   4: one record of the type in the next byte, framed with a correct CRC
//      (so the payload decoders are reached through the scanner), with
//      garbage before it and a cut after it chosen by the input.
// Properties:
//   - the scanner never reports a record outside the segment, reports them
//     in increasing order, each with a CRC a slow bitwise reference agrees
//     with; without damage it consumes the whole segment;
//   - crc32c (hardware when the CPU has SSE4.2) equals the bitwise
//     reference, and continues across a split;
//   - round trip: append_job(decode_job(x)) decodes to the same job, and
//     the same for STATE records.
#include <cstring>
#include <memory>
#include <string>

#include "proto/spool_format.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto::spool;

namespace {

uint32_t crc_reference(uint32_t crc, std::string_view bytes) {
  crc = ~crc;
  for (char ch : bytes) {
    crc ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) {
      crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
  }
  return ~crc;
}

uint32_t crc(uint32_t c, std::string_view s) {
  return crc32c(c, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

uint32_t le32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  }
  return v;
}

bool same_job(const JobRecord& a, const JobRecord& b) {
  if (a.job_id != b.job_id || a.sender_utf8 != b.sender_utf8 || a.pool != b.pool ||
      a.accepted_ms != b.accepted_ms || a.batch_id != b.batch_id || a.sender != b.sender ||
      a.auth_user != b.auth_user || a.body != b.body || a.rcpts.size() != b.rcpts.size()) {
    return false;
  }
  for (size_t i = 0; i < a.rcpts.size(); ++i) {
    const RcptRecord& x = a.rcpts[i];
    const RcptRecord& y = b.rcpts[i];
    if (x.address != y.address || x.domain_off != y.domain_off || x.attempts != y.attempts ||
        x.state != y.state || x.next_retry_ms != y.next_retry_ms) {
      return false;
    }
  }
  return true;
}

/// The payload of the single record in `framed` (a record as append_* made it).
std::string_view only_payload(const std::string& framed) {
  FUZZ_CHECK(framed.size() >= kRecordHeaderSize);
  FUZZ_CHECK(le32(framed.data()) == framed.size() - kRecordHeaderSize);
  std::string_view p(framed.data() + kRecordHeaderSize, framed.size() - kRecordHeaderSize);
  uint32_t c = crc(0, std::string_view(framed.data() + 4, 4));
  FUZZ_CHECK(crc(c, p) == le32(framed.data() + 8));
  return p;
}

void job(std::string_view payload) {
  Result<JobRecord> j = decode_job(payload);
  if (!j.ok()) {
    FUZZ_CHECK(!j.error().message.empty());
    return;
  }
  for (const RcptRecord& r : j->rcpts) {
    FUZZ_CHECK(r.domain_off > 0 && r.domain_off < r.address.size());
    FUZZ_CHECK(r.state == RcptState::kQueued || r.state == RcptState::kFinal);
    FUZZ_CHECK(r.address.data() >= payload.data() &&
               r.address.data() + r.address.size() <= payload.data() + payload.size());
  }
  FUZZ_CHECK(j->body.empty() ||
             (j->body.data() >= payload.data() &&
              j->body.data() + j->body.size() <= payload.data() + payload.size()));
  std::string again;
  append_job(again, *j);
  Result<JobRecord> j2 = decode_job(only_payload(again));
  FUZZ_CHECK(j2.ok());
  FUZZ_CHECK(same_job(*j, *j2));
}

void state(std::string_view payload) {
  Result<StateRecord> s = decode_state(payload);
  if (!s.ok()) {
    FUZZ_CHECK(!s.error().message.empty());
    return;
  }
  FUZZ_CHECK(s->kind == StateKind::kFinal || s->kind == StateKind::kDeferred);
  std::string again;
  append_state(again, *s);
  Result<StateRecord> s2 = decode_state(only_payload(again));
  FUZZ_CHECK(s2.ok());
  FUZZ_CHECK(s2->job_id == s->job_id && s2->kind == s->kind && s2->attempts == s->attempts &&
             s2->next_retry_ms == s->next_retry_ms && s2->rcpts == s->rcpts);
}

void scan(std::string_view seg) {
  size_t last_end = kSegmentHeaderSize;
  size_t seen = 0;
  ScanResult res = scan_segment(seg, [&](RecordType type, std::string_view payload, size_t off) {
    FUZZ_CHECK(off >= last_end);
    FUZZ_CHECK(off + kRecordHeaderSize + payload.size() <= seg.size());
    FUZZ_CHECK(payload.data() == seg.data() + off + kRecordHeaderSize);
    FUZZ_CHECK(static_cast<uint8_t>(type) >= 1 && static_cast<uint8_t>(type) <= 4);
    FUZZ_CHECK(le32(seg.data() + off) == payload.size());
    // The record's CRC, by the slow reference.
    uint32_t c = crc_reference(0, seg.substr(off + 4, 4));
    FUZZ_CHECK(crc_reference(c, payload) == le32(seg.data() + off + 8));
    last_end = off + kRecordHeaderSize + payload.size();
    ++seen;
    if (type == RecordType::kJob) {
      job(payload);
    } else if (type == RecordType::kState) {
      state(payload);
    }
    return true;
  });
  FUZZ_CHECK(res.records == seen);
  FUZZ_CHECK(res.good_end <= seg.size() && res.good_end >= kSegmentHeaderSize);
  if (seen > 0) {
    FUZZ_CHECK(res.good_end == last_end);
  }
  if (!res.damaged) {
    FUZZ_CHECK(res.good_end == seg.size() || seg.size() <= kSegmentHeaderSize);
    FUZZ_CHECK(!res.resynced && res.skipped == 0);
  } else {
    FUZZ_CHECK(res.damage_offset >= kSegmentHeaderSize && res.damage_offset < seg.size());
    FUZZ_CHECK(!res.damage.empty());
    FUZZ_CHECK(res.skipped <= seg.size());
  }
}

std::string segment_with(std::string_view records) {
  std::string seg;
  append_segment_header(seg, 3, 42, 1700000000000);
  seg.append(records);
  return seg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.byte();
  std::string_view rest = in.rest();

  // CRC: hardware against the reference, whole and split.
  const uint32_t whole = crc(0, rest);
  FUZZ_CHECK(whole == crc_reference(0, rest));
  const size_t cut = rest.empty() ? 0 : mode % (rest.size() + 1);
  FUZZ_CHECK(crc(crc(0, rest.substr(0, cut)), rest.substr(cut)) == whole);

  // Exact-size copies: ASan sees any read past the end.
  auto exact = [](std::string_view s) {
    std::unique_ptr<char[]> b(new char[s.size()]);
    std::memcpy(b.get(), s.data(), s.size());
    return b;
  };
  switch (mode % 5) {
    case 0: {
      std::string seg = segment_with(rest);
      auto b = exact(seg);
      scan(std::string_view(b.get(), seg.size()));
      break;
    }
    case 1: {
      auto b = exact(rest);
      job(std::string_view(b.get(), rest.size()));
      break;
    }
    case 2: {
      auto b = exact(rest);
      state(std::string_view(b.get(), rest.size()));
      break;
    }
    case 3: {
      auto b = exact(rest);
      Result<SegmentHeader> h = decode_segment_header(std::string_view(b.get(), rest.size()));
      if (h.ok()) {
        std::string again;
        append_segment_header(again, h->shard, h->segment, h->created_ms);
        FUZZ_CHECK(again == rest.substr(0, kSegmentHeaderSize));
      }
      break;
    }
    case 4: {
      fuzz::FuzzInput f(reinterpret_cast<const uint8_t*>(rest.data()), rest.size());
      const uint8_t type = static_cast<uint8_t>(1 + f.byte() % 4);
      std::string_view garbage = f.slice(32);
      const uint8_t tail_cut = f.byte();
      std::string_view payload = f.rest();
      std::string rec;
      char hdr[4] = {static_cast<char>(type), 0, 0, 0};
      uint32_t c = crc(crc(0, std::string_view(hdr, 4)), payload);
      for (int i = 0; i < 4; ++i) {
        rec.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xff));
      }
      rec.append(hdr, 4);
      for (int i = 0; i < 4; ++i) {
        rec.push_back(static_cast<char>((c >> (8 * i)) & 0xff));
      }
      rec.append(payload);
      std::string records = std::string(garbage) + rec;
      // A torn tail: cut off up to 255 bytes of the end now and then.
      if ((tail_cut & 0x80) != 0) {
        records.resize(records.size() - std::min<size_t>(tail_cut & 0x7f, records.size()));
      }
      std::string seg = segment_with(records);
      auto b = exact(seg);
      scan(std::string_view(b.get(), seg.size()));
      break;
    }
  }
  return 0;
}
