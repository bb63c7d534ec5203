// Spool segment format: round trips, and what a crash or a bad disk can do
// to a segment — torn tails at every byte, bit flips, garbage.
#include "proto/spool_format.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace ringmail::proto::spool {
namespace {

JobRecord sample_job(uint64_t id, int rcpts) {
  static std::vector<std::string> addrs;
  JobRecord j;
  j.job_id = id;
  j.pool = 2;
  j.accepted_ms = 1'767'225'600'123;
  j.batch_id = "batch-1";
  j.sender = "news@example.com";
  j.body = "Subject: hi\r\n\r\nline\r\n";
  for (int i = 0; i < rcpts; ++i) {
    addrs.push_back("user" + std::to_string(id) + "-" + std::to_string(i) + "@example.org");
  }
  for (int i = 0; i < rcpts; ++i) {
    RcptRecord r;
    r.address = addrs[addrs.size() - static_cast<size_t>(rcpts) + static_cast<size_t>(i)];
    r.domain_off = static_cast<uint16_t>(r.address.find('@') + 1);
    r.attempts = static_cast<uint16_t>(i % 3);
    r.state = i % 4 == 0 ? RcptState::kFinal : RcptState::kQueued;
    r.next_retry_ms = i % 2 == 0 ? 0 : 1'767'225'700'000;
    j.rcpts.push_back(r);
  }
  return j;
}

/// A segment with `jobs` jobs, a state record and a commit after each job.
std::string build_segment(int jobs, std::vector<size_t>* record_ends = nullptr) {
  std::string seg;
  append_segment_header(seg, 3, 7, 1'767'225'600'000);
  for (int i = 0; i < jobs; ++i) {
    append_job(seg, sample_job(static_cast<uint64_t>(i + 1), 3 + i));
    if (record_ends != nullptr) {
      record_ends->push_back(seg.size());
    }
    StateRecord st;
    st.job_id = static_cast<uint64_t>(i + 1);
    st.kind = StateKind::kDeferred;
    st.attempts = 2;
    st.next_retry_ms = 1'767'225'900'000;
    st.rcpts = {0, 2};
    append_state(seg, st);
    append_commit(seg, seg.size());
    if (record_ends != nullptr) {
      record_ends->push_back(seg.size());
    }
  }
  return seg;
}

std::vector<uint64_t> job_ids(std::string_view seg, ScanResult* res) {
  std::vector<uint64_t> ids;
  *res = scan_segment(seg, [&](RecordType t, std::string_view payload, size_t) {
    if (t == RecordType::kJob) {
      auto j = decode_job(payload);
      EXPECT_TRUE(j.ok());
      if (j.ok()) {
        ids.push_back(j->job_id);
      }
    }
    return true;
  });
  return ids;
}

TEST(SpoolFormat, RoundTrips) {
  std::string seg = build_segment(3);
  auto hdr = decode_segment_header(seg);
  ASSERT_TRUE(hdr.ok());
  EXPECT_EQ(hdr->shard, 3u);
  EXPECT_EQ(hdr->segment, 7u);
  int jobs = 0, states = 0;
  ScanResult res = scan_segment(seg, [&](RecordType t, std::string_view payload, size_t) -> bool {
    if (t == RecordType::kJob) {
      auto j = decode_job(payload);
      EXPECT_TRUE(j.ok());
      if (!j.ok()) {
        return false;
      }
      JobRecord want = sample_job(j->job_id, 3 + jobs);
      EXPECT_EQ(j->batch_id, want.batch_id);
      EXPECT_EQ(j->sender, want.sender);
      EXPECT_EQ(j->body, want.body);
      EXPECT_EQ(j->pool, 2u);
      EXPECT_EQ(j->accepted_ms, want.accepted_ms);
      EXPECT_EQ(j->rcpts.size(), want.rcpts.size());
      for (size_t i = 0; i < j->rcpts.size(); ++i) {
        EXPECT_EQ(j->rcpts[i].address, want.rcpts[i].address);
        EXPECT_EQ(j->rcpts[i].state, want.rcpts[i].state);
        EXPECT_EQ(j->rcpts[i].next_retry_ms, want.rcpts[i].next_retry_ms);
      }
      ++jobs;
    } else if (t == RecordType::kState) {
      auto s = decode_state(payload);
      EXPECT_TRUE(s.ok());
      if (s.ok()) {
        EXPECT_EQ(s->rcpts, (std::vector<uint32_t>{0, 2}));
      }
      ++states;
    }
    return true;
  });
  EXPECT_EQ(jobs, 3);
  EXPECT_EQ(states, 3);
  EXPECT_FALSE(res.damaged);
  EXPECT_EQ(res.good_end, seg.size());
  EXPECT_GT(res.commit, 0u);
}

TEST(SpoolFormat, TornTailAtEveryByteNeverLosesCompleteRecords) {
  std::vector<size_t> ends;
  std::string seg = build_segment(4, &ends);
  for (size_t cut = kSegmentHeaderSize; cut <= seg.size(); ++cut) {
    // Exact-size copy: ASan catches any read past the cut.
    std::vector<char> buf(seg.begin(), seg.begin() + static_cast<long>(cut));
    ScanResult res;
    auto ids = job_ids(std::string_view(buf.data(), buf.size()), &res);
    size_t complete_jobs = 0;
    for (size_t k = 0; k < ends.size(); k += 2) {
      complete_jobs += ends[k] <= cut ? 1 : 0;
    }
    ASSERT_EQ(ids.size(), complete_jobs) << "cut at " << cut;
    ASSERT_LE(res.good_end, cut);
    // A cut inside a record is damage after the last commit: a torn tail.
    if (res.damaged) {
      ASSERT_GE(res.damage_offset, res.commit) << "cut at " << cut;
      ASSERT_FALSE(res.resynced);
    }
  }
}

TEST(SpoolFormat, BitFlipInsideCommittedDataIsDetectedAndTheRestRecovered) {
  std::vector<size_t> ends;
  std::string seg = build_segment(6, &ends);
  std::mt19937 rng(7);
  int detected = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::string bad = seg;
    // Flip a bit inside the second job record (committed: later commits cover it).
    size_t lo = ends[1], hi = ends[2];
    size_t pos = lo + rng() % (hi - lo);
    bad[pos] = static_cast<char>(bad[pos] ^ (1 << (rng() % 8)));
    ScanResult res;
    auto ids = job_ids(bad, &res);
    ASSERT_TRUE(res.damaged) << "flip at " << pos;
    EXPECT_LT(res.damage_offset, res.commit) << "must read as damage to acknowledged data";
    EXPECT_TRUE(res.resynced);
    // Job 2 is lost to the flip; every other job is recovered.
    EXPECT_EQ(ids, (std::vector<uint64_t>{1, 3, 4, 5, 6})) << "flip at " << pos;
    ++detected;
  }
  EXPECT_EQ(detected, 500);
}

TEST(SpoolFormat, GarbageNeverCrashesAndLengthsAreChecked) {
  std::mt19937 rng(11);
  std::string seg = build_segment(2);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string g = seg.substr(0, kSegmentHeaderSize);
    size_t n = rng() % 300;
    for (size_t i = 0; i < n; ++i) {
      g.push_back(static_cast<char>(rng()));
    }
    ScanResult res = scan_segment(g, [](RecordType, std::string_view, size_t) { return true; });
    ASSERT_LE(res.good_end, g.size());
  }
  // A record that claims 1 GiB in a small file.
  std::string huge =
      seg.substr(0, kSegmentHeaderSize) + std::string("\xff\xff\xff\x3f\x01\0\0\0\0\0\0\0", 12);
  ScanResult res = scan_segment(huge, [](RecordType, std::string_view, size_t) { return true; });
  EXPECT_TRUE(res.damaged);
  EXPECT_EQ(res.records, 0u);
}

TEST(SpoolFormat, DecodersRefuseLies) {
  std::string seg;
  append_job(seg, sample_job(5, 2));
  std::string_view payload = std::string_view(seg).substr(kRecordHeaderSize);
  // Every truncation of a job payload is an error, never an over-read.
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    std::vector<char> buf(payload.begin(), payload.begin() + static_cast<long>(cut));
    EXPECT_FALSE(decode_job(std::string_view(buf.data(), buf.size())).ok()) << cut;
  }
  EXPECT_FALSE(decode_state("").ok());
  EXPECT_FALSE(decode_segment_header("RMSPOOL").ok());
  std::string wrong = seg;
  EXPECT_FALSE(decode_segment_header(std::string(32, 'x')).ok());
}

TEST(SpoolFormat, SignatureAndPersonalisationRoundTrip) {
  // A signature made once at acceptance is stored as the start of the body.
  JobRecord signed_job = sample_job(9, 2);
  signed_job.body_prefix = "DKIM-Signature: v=1; a=ed25519-sha256; b=AAAA\r\n";
  std::string seg;
  append_job(seg, signed_job);
  auto d = decode_job(std::string_view(seg).substr(kRecordHeaderSize));
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->body, std::string(signed_job.body_prefix) + std::string(signed_job.body));
  EXPECT_FALSE(d->personalised);

  // A personalised job keeps its signing domain, t= and every recipient's
  // variables (empty ones too).
  JobRecord p = sample_job(10, 3);
  p.personalised = true;
  p.body = "Subject: {{s}}\r\n\r\nHi {{n}}\r\n";
  p.dkim_domain = "example.com";
  p.dkim_time_s = 1'767'225'600;
  const std::string v0(
      "\x01n\x00\x00\x00\x03"
      "Ann",
      9);
  p.rcpts[0].vars = v0;
  p.rcpts[2].vars = "x";
  std::string seg2;
  append_job(seg2, p);
  std::string_view payload = std::string_view(seg2).substr(kRecordHeaderSize);
  auto e = decode_job(payload);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_TRUE(e->personalised);
  EXPECT_EQ(e->body, p.body);
  EXPECT_EQ(e->dkim_domain, "example.com");
  EXPECT_EQ(e->dkim_time_s, p.dkim_time_s);
  ASSERT_EQ(e->rcpts.size(), 3u);
  EXPECT_EQ(e->rcpts[0].vars, v0);
  EXPECT_EQ(e->rcpts[1].vars, "");
  EXPECT_EQ(e->rcpts[2].vars, "x");
  EXPECT_EQ(e->rcpts[2].address, p.rcpts[2].address);
  // Every truncation is an error, never an over-read or a silently
  // unpersonalised job.
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    std::vector<char> buf(payload.begin(), payload.begin() + static_cast<long>(cut));
    EXPECT_FALSE(decode_job(std::string_view(buf.data(), buf.size())).ok()) << cut;
  }
}

TEST(SpoolFormat, Crc32cKnownValue) {
  // RFC 3720 B.4: 32 bytes of zeros.
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c(0, zeros), 0x8A9136AAu);
  std::string s = "123456789";
  EXPECT_EQ(crc32c(0, {reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xE3069283u);
}

}  // namespace
}  // namespace ringmail::proto::spool
