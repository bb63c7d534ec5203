// The spool: restarts keep queued mail (with attempts and retry times),
// delivered mail is not sent again, disk faults refuse batches without
// losing acknowledged ones, simulated power losses are recovered, disk full
// stops and resumes acceptance, and segments retire.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <random>

#include "engine/clock.h"
#include "engine/spool.h"
#include "proto/spool_format.h"
#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

std::string spool_cfg(const std::string& dir, uint16_t port, const std::string& extra = "") {
  return "[spool]\nmode = \"sync\"\ndir = \"" + dir + "\"\n" + extra +
         "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

Batch make_batch(const std::string& id, int n, const std::string& domain = "q.test") {
  Batch b;
  b.batch_id = id;
  b.sender = "s@example.test";
  b.message = message_of(800, id);
  for (int i = 0; i < n; ++i) {
    b.recipients.push_back(id + "-" + std::to_string(i) + "@" + domain);
  }
  return b;
}

std::vector<std::string> segment_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const char* sub : {"/shard-0", "/shard-1", "/shard-2", "/shard-3"}) {
    std::string d = dir + sub;
    DIR* h = ::opendir(d.c_str());
    if (h == nullptr) {
      continue;
    }
    while (dirent* e = ::readdir(h)) {
      std::string n = e->d_name;
      if (n.ends_with(".seg")) {
        out.push_back(d + "/" + n);
      }
    }
    ::closedir(h);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void copy_tree(const std::string& from, const std::string& to) {
  std::string cmd = "rm -rf '" + to + "' && cp -a '" + from + "' '" + to + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
}

TEST(Spool, RestartKeepsQueuedMailWithAttemptsAndDeliversItOnce) {
  TempDir dir;
  uint16_t port = free_port();  // nothing listens: everything is deferred
  engine::ManualClock clock;
  const std::string cfg = spool_cfg(dir.file("spool"), port,
                                    "[delivery]\nbackoff = \"0s\"\n"
                                    "[retry]\nschedule = [\"1m\"]\njitter_percent = 0\n");
  {
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(cfg, &clock).ok());
    for (int b = 0; b < 5; ++b) {
      Ack ack = e.engine->submit(make_batch("r" + std::to_string(b), 20));
      ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
    }
    ASSERT_TRUE(e.events.wait_deferred(100));
    e.engine->shutdown(milliseconds(0));
  }
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--listen", "127.0.0.1:" + std::to_string(port)})) << sink.error();
  EmbeddedEngine e2;
  ASSERT_TRUE(e2.start(cfg, &clock).ok());
  EXPECT_EQ(e2.engine->stats().unfinished, 100u);
  EXPECT_EQ(e2.engine->stats().spool_damage, 0u);
  // They wait for their recorded retry time, then go — as attempt 2.
  clock.advance(std::chrono::seconds(61));
  engine::wake_for_test(*e2.engine);
  ASSERT_TRUE(e2.events.wait_finals(100));
  for (const auto& [rcpt, evs] : e2.events.all()) {
    ASSERT_EQ(evs.size(), 1u) << rcpt;
    EXPECT_EQ(evs[0].type, EventType::kDelivered);
    EXPECT_EQ(evs[0].attempt, 2u) << rcpt;
  }
  EXPECT_TRUE(sink.wait_stat("recipients", 100));
  e2.engine->shutdown(milliseconds(0));
  // A third start finds nothing left to do, and sends nothing again.
  EmbeddedEngine e3;
  ASSERT_TRUE(e3.start(cfg, &clock).ok());
  EXPECT_EQ(e3.engine->stats().unfinished, 0u);
  e3.engine->shutdown(milliseconds(0));
  EXPECT_EQ(sink.stat("recipients"), 100);
}

TEST(Spool, DiskErrorsRefuseBatchesAndAcceptanceResumes) {
  TempDir dir;
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(spool_cfg(dir.file("spool"), sink.port())).ok());
  engine::SpoolFaults& f = engine::spool_faults_for_test();
  ASSERT_EQ(e.engine->submit(make_batch("ok1", 3)).status, AckStatus::kAccepted);

  // EIO on write: refused with a clear, typed answer; nothing is taken.
  f.write_errno = EIO;
  Ack ack = e.engine->submit(make_batch("eio", 3));
  EXPECT_EQ(ack.status, AckStatus::kSpoolUnavailable);
  EXPECT_EQ(ack.accepted, 0u);
  EXPECT_NE(ack.reason.find("spool"), std::string::npos) << ack.reason;
  f.write_errno = 0;
  // Accepted again once a probe write and fsync work (about a second).
  bool back = eventually(
      [&] { return e.engine->submit(make_batch("after-eio", 1)).status == AckStatus::kAccepted; },
      milliseconds(10'000));
  EXPECT_TRUE(back);

  // A failed fsync: the batch waiting for it is refused, never acked.
  f.fsync_fail_once = EIO;
  EXPECT_EQ(e.engine->submit(make_batch("fsync", 2)).status, AckStatus::kSpoolUnavailable);
  EXPECT_TRUE(eventually(
      [&] { return e.engine->submit(make_batch("after-fsync", 1)).status == AckStatus::kAccepted; },
      milliseconds(10'000)));
  // Short writes are completed, not mistaken for success.
  f.short_write_every = 2;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(e.engine->submit(make_batch("short" + std::to_string(i), 2)).status,
              AckStatus::kAccepted);
  }
  f.short_write_every = 0;
  EXPECT_GE(e.engine->stats().spool_errors, 2u);
  ASSERT_TRUE(e.engine->drain(milliseconds(20'000)));
  // Refused batches were not delivered; every accepted one was.
  EXPECT_TRUE(e.events.events("eio-0@q.test").empty());
  EXPECT_TRUE(e.events.events("fsync-0@q.test").empty());
  EXPECT_EQ(e.events.events("short4-1@q.test").size(), 1u);
  EXPECT_TRUE(sink.wait_stat("recipients", static_cast<double>(e.engine->stats().delivered)));
}

/// A batch whose recipients are spread over many domains (so over every
/// shard).
Batch spread_batch(const std::string& id, int n) {
  Batch b = make_batch(id, 0);
  for (int i = 0; i < n; ++i) {
    b.recipients.push_back(id + "-" + std::to_string(i) + "@d" + std::to_string(i) + ".test");
  }
  return b;
}

/// The recipients a sink logged (--rcpt-log), sorted, each as often as it
/// arrived.
std::vector<std::string> logged_rcpts(const std::string& file) {
  std::vector<std::string> out;
  std::string text = read_file(file).value_or("");
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      nl = text.size();
    }
    if (nl > pos) {
      out.push_back(text.substr(pos, nl - pos));
    }
    pos = nl + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> sorted_rcpts(const std::vector<Batch>& batches) {
  std::vector<std::string> out;
  for (const Batch& b : batches) {
    out.insert(out.end(), b.recipients.begin(), b.recipients.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A batch answered "spool unavailable" was never accepted: nothing of it
// may come back at the next start — neither the part whose fsync failed
// (its bytes are in the file) nor the part another shard had already made
// durable. The spool directory is copied the moment the refusal arrives,
// as a power loss would leave it.
TEST(Spool, RefusedBatchesLeaveNothingBehind) {
  TempDir dir;
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  const std::string base = dir.file("spool");
  const std::string img = dir.file("image");
  const std::string shards = "[engine]\nshards = 2\n[delivery]\nbackoff = \"0s\"\n";
  Batch ok = spread_batch("kept", 8);
  Batch refused = spread_batch("refused", 8);
  {
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(spool_cfg(base, sink.port(), shards)).ok());
    ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
    ASSERT_EQ(e.engine->submit(ok).status, AckStatus::kAccepted);
    // One shard's fsync fails: its part is in the file but not durable;
    // the other shard's part is durable.
    engine::spool_faults_for_test().fsync_fail_once = EIO;
    Ack ack = e.engine->submit(refused);
    ASSERT_EQ(ack.status, AckStatus::kSpoolUnavailable) << ack.reason;
    EXPECT_EQ(ack.accepted, 0u);
    copy_tree(base, img);
    e.engine->shutdown(milliseconds(0));
  }
  // Restarted on each, exactly the accepted batch is delivered, once.
  for (const std::string& spool : {img, base}) {
    const std::string log = spool + "-delivered.txt";
    SinkProcess after;
    ASSERT_TRUE(after.start({"--rcpt-log", log})) << after.error();
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(spool_cfg(spool, after.port(), shards)).ok()) << spool;
    ASSERT_TRUE(e.engine->drain(milliseconds(20'000))) << spool;
    ASSERT_TRUE(after.wait_stat("recipients", static_cast<double>(ok.recipients.size())));
    e.engine->shutdown(milliseconds(0));
    EXPECT_EQ(logged_rcpts(log), sorted_rcpts({ok})) << spool;
  }
}

TEST(Spool, SecondEngineOnTheSameSpoolRefusesToStart) {
  TempDir dir;
  uint16_t port = free_port();  // nothing listens: mail stays queued
  const std::string cfg = spool_cfg(dir.file("spool"), port,
                                    "[delivery]\nbackoff = \"1h\"\n"
                                    "[retry]\nschedule = [\"1h\"]\n");
  auto first = std::make_unique<EmbeddedEngine>();
  ASSERT_TRUE(first->start(cfg).ok());
  ASSERT_EQ(first->engine->submit(make_batch("mine", 20)).accepted, 20u);
  EmbeddedEngine second;
  Result<void> r = second.start(cfg);
  ASSERT_FALSE(r.ok()) << "a second engine started on a spool in use";
  EXPECT_NE(r.error().message.find("in use by another ringmail engine"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("pid " + std::to_string(::getpid())), std::string::npos)
      << r.error().message;
  // The first engine's mail is untouched: all 20 come back at its next start.
  first->engine->shutdown(milliseconds(0));
  first.reset();
  EmbeddedEngine third;
  ASSERT_TRUE(third.start(cfg).ok());
  EXPECT_EQ(third.engine->stats().unfinished, 20u);
  third.engine->shutdown(milliseconds(0));
}

TEST(Spool, UnsafeSpoolDirectoriesAreRefused) {
  TempDir dir;
  uint16_t port = free_port();
  const std::string spool = dir.file("spool");
  ASSERT_EQ(::mkdir(spool.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(spool.c_str(), 0777), 0);
  {
    EmbeddedEngine e;
    Result<void> r = e.start(spool_cfg(spool, port));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("writable by other users"), std::string::npos)
        << r.error().message;
  }
  ASSERT_EQ(::chmod(spool.c_str(), 0700), 0);
  // A shard directory that is a symbolic link (to somewhere else entirely).
  const std::string elsewhere = dir.file("elsewhere");
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), (spool + "/shard-0").c_str()), 0);
  {
    EmbeddedEngine e;
    Result<void> r = e.start(spool_cfg(spool, port));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("symbolic link"), std::string::npos) << r.error().message;
  }
  ASSERT_EQ(::unlink((spool + "/shard-0").c_str()), 0);
  EmbeddedEngine e;
  EXPECT_TRUE(e.start(spool_cfg(spool, port)).ok());
}

TEST(Spool, SimulatedPowerLossKeepsAcknowledgedDataAndReportsCorruption) {
  TempDir dir;
  uint16_t port = free_port();
  const std::string base = dir.file("base");
  const int batches = 12, per = 5;
  {
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(spool_cfg(base, port, "[delivery]\nbackoff = \"1h\"\n")).ok());
    ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
    for (int b = 0; b < batches; ++b) {
      ASSERT_EQ(e.engine->submit(make_batch("p" + std::to_string(b), per)).status,
                AckStatus::kAccepted);
    }
    // Every ack came after its fsync: the whole spool is durable now. The
    // engine is dropped without a clean close (a crash at this point).
    e.engine->shutdown(milliseconds(0));
  }
  std::vector<std::string> segs = segment_files(base);
  ASSERT_FALSE(segs.empty());
  std::mt19937_64 rng(20261126);
  const int seeds = 60;
  int flips = 0, detected = 0;
  for (int seed = 0; seed < seeds; ++seed) {
    std::string img = dir.file("img");
    copy_tree(base, img);
    // The segment that holds the jobs (another shard's may be empty).
    std::string victim;
    std::string bytes;
    for (const std::string& f : segment_files(img)) {
      std::string b = read_file(f).value_or("");
      if (b.size() > bytes.size()) {
        bytes = std::move(b);
        victim = f;
      }
    }
    ASSERT_GT(bytes.size(), 64u);
    // What a power loss can leave after the durable prefix: a torn sector
    // of a record that was never acknowledged, zeros, or half a record.
    std::string tail;
    switch (rng() % 3) {
      case 0:
        tail = std::string(512, '\0');
        break;
      case 1:
        tail = bytes.substr(proto::spool::kSegmentHeaderSize,
                            1 + rng() % std::min<size_t>(400, bytes.size() - 40));
        break;
      case 2:
        for (int i = 0; i < 300; ++i) {
          tail.push_back(static_cast<char>(rng()));
        }
        break;
    }
    bool flip = seed % 3 == 0;
    if (flip) {
      // Corrupt acknowledged data in the first half of the segment.
      size_t pos = proto::spool::kSegmentHeaderSize + rng() % (bytes.size() / 2);
      bytes[pos] = static_cast<char>(bytes[pos] ^ 0x10);
      ++flips;
    }
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes << tail;
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(spool_cfg(img, port, "[delivery]\nbackoff = \"1h\"\n")).ok())
        << "seed " << seed;
    Stats st = e.engine->stats();
    if (!flip) {
      EXPECT_EQ(st.unfinished, static_cast<uint64_t>(batches * per)) << "seed " << seed;
      EXPECT_EQ(st.spool_damage, 0u) << "a torn tail is not damage; seed " << seed;
    } else {
      EXPECT_GE(st.spool_damage, 1u) << "corruption must be reported; seed " << seed;
      // At most the damaged record's recipients are missing.
      EXPECT_GE(st.unfinished, static_cast<uint64_t>(batches * per - per)) << "seed " << seed;
      detected += st.spool_damage >= 1 ? 1 : 0;
    }
    e.engine->shutdown(milliseconds(0));
  }
  EXPECT_EQ(detected, flips);
}

TEST(Spool, DiskFullStopsAcceptanceAndItResumes) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  TempDir dir;
  std::string mnt = dir.file("tmpfs");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0700), 0);
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  // A filler to free later.
  {
    std::ofstream filler(mnt + "/filler", std::ios::binary);
    filler << std::string(1u << 20, 'x');
  }
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--delay-ms", "0"})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(spool_cfg(mnt + "/spool", sink.port(), "segment_size = \"256KiB\"\n") +
                      "[delivery]\nbackoff = \"0s\"\n")
                  .ok());
  ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
  // Fill the disk: batches are accepted until ENOSPC, then refused.
  int accepted = 0, refused = 0;
  for (int b = 0; b < 400 && refused == 0; ++b) {
    Batch big = make_batch("f" + std::to_string(b), 4);
    big.message = message_of(16 * 1024, big.batch_id);
    Ack ack = e.engine->submit(big);
    if (ack.status == AckStatus::kAccepted) {
      ++accepted;
    } else {
      EXPECT_EQ(ack.status, AckStatus::kSpoolUnavailable);
      ++refused;
    }
  }
  ASSERT_GT(accepted, 0);
  ASSERT_EQ(refused, 1);
  // Space comes back: acceptance resumes within seconds, without a restart.
  ASSERT_EQ(::unlink((mnt + "/filler").c_str()), 0);
  auto t0 = Clock::now();
  EXPECT_TRUE(eventually(
      [&] { return e.engine->submit(make_batch("back", 1)).status == AckStatus::kAccepted; },
      milliseconds(10'000)));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  // Nothing acknowledged was lost.
  EXPECT_NE(e.engine->control("resume *").find("\"ok\":true"), std::string::npos);
  ASSERT_TRUE(e.engine->drain(milliseconds(30'000)));
  EXPECT_EQ(e.engine->stats().delivered, static_cast<uint64_t>(accepted * 4 + 1));
  EXPECT_TRUE(sink.wait_stat("recipients", accepted * 4 + 1));
}

// ENOSPC for real (a small tmpfs): refused batches leave nothing in the
// spool, a disk that stays full does not collect a segment file per probe,
// and a restart after space comes back delivers exactly what was accepted.
TEST(Spool, DiskFullLeavesNoRefusedMailAndNoPileOfSegments) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  TempDir dir;
  std::string mnt = dir.file("tmpfs");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0700), 0);
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  {
    std::ofstream filler(mnt + "/filler", std::ios::binary);
    filler << std::string(1u << 20, 'x');
  }
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  const std::string cfg = spool_cfg(mnt + "/spool", sink.port(), "segment_size = \"256KiB\"\n") +
                          "[engine]\nshards = 2\n[delivery]\nbackoff = \"0s\"\n";
  std::vector<Batch> accepted, refused;
  {
    EmbeddedEngine e;
    ASSERT_TRUE(e.start(cfg).ok());
    ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
    for (int b = 0; b < 400 && refused.size() < 5; ++b) {
      Batch big = spread_batch("f" + std::to_string(b), 6);
      big.message = message_of(16 * 1024, big.batch_id);
      Ack ack = e.engine->submit(big);
      if (ack.status == AckStatus::kAccepted) {
        accepted.push_back(big);
      } else {
        ASSERT_EQ(ack.status, AckStatus::kSpoolUnavailable) << ack.reason;
        refused.push_back(big);
      }
    }
    ASSERT_FALSE(accepted.empty());
    ASSERT_EQ(refused.size(), 5u);
    // Take the rest of the space (the refused groups' bytes were given
    // back): the disk stays full while probes fail, one a second per shard.
    {
      int fd = ::open((mnt + "/filler2").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ASSERT_GE(fd, 0);
      std::string block(4096, 'y');
      while (::write(fd, block.data(), block.size()) > 0) {
      }
      ::close(fd);
    }
    size_t segs = segment_files(mnt + "/spool").size();
    uint64_t errors = e.engine->stats().spool_errors;
    ASSERT_TRUE(eventually([&] { return e.engine->stats().spool_errors >= errors + 4; },
                           milliseconds(15'000)));
    EXPECT_LE(segment_files(mnt + "/spool").size(), segs);
    e.engine->shutdown(milliseconds(0));
  }
  ASSERT_EQ(::unlink((mnt + "/filler").c_str()), 0);
  ASSERT_EQ(::unlink((mnt + "/filler2").c_str()), 0);
  // Restarted: every accepted recipient is delivered once, no refused one.
  const std::string log = dir.file("delivered.txt");
  SinkProcess after;
  ASSERT_TRUE(after.start({"--rcpt-log", log})) << after.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(spool_cfg(mnt + "/spool", after.port(), "segment_size = \"256KiB\"\n") +
                      "[engine]\nshards = 2\n[delivery]\nbackoff = \"0s\"\n")
                  .ok());
  const std::vector<std::string> want = sorted_rcpts(accepted);
  ASSERT_TRUE(e.engine->drain(milliseconds(30'000)));
  ASSERT_TRUE(after.wait_stat("recipients", static_cast<double>(want.size())));
  e.engine->shutdown(milliseconds(0));
  EXPECT_EQ(logged_rcpts(log), want);
}

TEST(Spool, SegmentsRetireAndLongLivedJobsAreCompacted) {
  TempDir dir;
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(spool_cfg(dir.file("spool"), sink.port(), "segment_size = \"64KiB\"\n") +
                      "[engine]\nshards = 1\n[delivery]\nbackoff = \"0s\"\n")
                  .ok());
  // One job that stays: its domain is paused. Everything else is delivered.
  ASSERT_NE(e.engine->control("pause held.test").find("\"ok\":true"), std::string::npos);
  ASSERT_EQ(e.engine->submit(make_batch("held", 3, "held.test")).status, AckStatus::kAccepted);
  for (int b = 0; b < 300; ++b) {
    ASSERT_EQ(e.engine->submit(make_batch("churn" + std::to_string(b), 2)).status,
              AckStatus::kAccepted);
  }
  ASSERT_TRUE(e.events.wait_finals(600, milliseconds(30'000)));
  // 300 batches of ~1 KB with journal records span several 64 KiB
  // segments; only the current one and what the held job pins may remain,
  // and compaction moves the held job forward so even that goes.
  for (int b = 0; b < 60; ++b) {
    ASSERT_EQ(e.engine->submit(make_batch("tail" + std::to_string(b), 1)).status,
              AckStatus::kAccepted);
  }
  ASSERT_TRUE(e.events.wait_finals(660, milliseconds(30'000)));
  EXPECT_TRUE(eventually([&] { return segment_files(dir.file("spool")).size() <= 2; }))
      << segment_files(dir.file("spool")).size() << " segment files";
  e.engine->shutdown(milliseconds(0));
  // The held job survived compaction and retirement.
  SinkProcess unused;
  EmbeddedEngine e2;
  ASSERT_TRUE(e2.start(spool_cfg(dir.file("spool"), sink.port(), "segment_size = \"64KiB\"\n") +
                       "[engine]\nshards = 1\n")
                  .ok());
  EXPECT_EQ(e2.engine->stats().unfinished, 3u);
  ASSERT_TRUE(e2.events.wait_finals(3));
  EXPECT_EQ(e2.events.events("held-2@held.test").back().type, EventType::kDelivered);
}

}  // namespace
}  // namespace ringmail::testing
