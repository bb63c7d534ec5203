#include "engine/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <unordered_map>

#include "engine/failpoint.h"
#include "engine/log.h"
#include "engine/message.h"
#include "engine/runtime.h"
#include "engine/scheduler.h"
#include "engine/shard.h"
#include "proto/spool_format.h"
#include "proto/template.h"

namespace ringmail::engine {
namespace sp = proto::spool;
namespace {

constexpr size_t kCompactBytesPerFlush = 1u << 20;

std::string seg_name(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx.seg", static_cast<unsigned long long>(n));
  return buf;
}

bool read_whole(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return false;
  }
  in.seekg(0, std::ios::end);
  out->resize(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(out->data(), static_cast<std::streamsize>(out->size()));
  return static_cast<bool>(in);
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return names;
  }
  while (dirent* e = ::readdir(d)) {
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

Result<int> lock_spool_dir(const SpoolConfig& cfg) {
  const std::string& dir = cfg.dir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error(Errc::kIo, "spool.dir: cannot create " + dir + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return make_error(Errc::kIo, "spool.dir: cannot read " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return make_error(Errc::kIo, "spool.dir: " + dir + " is not a directory");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return make_error(Errc::kIo,
                      "spool.dir: " + dir +
                          " is writable by other users (group or world); queued mail there "
                          "could be altered or removed: chmod go-w it (0700 is best)");
  }
  if (st.st_uid != ::geteuid()) {
    return make_error(
        Errc::kIo, "spool.dir: " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                       ", not to the uid ringmail runs as (" + std::to_string(::geteuid()) + ")");
  }
  for (const std::string& name : list_dir(dir)) {
    if (name.rfind("shard-", 0) != 0) {
      continue;
    }
    std::string path = dir + "/" + name;
    struct stat ss {};
    if (::lstat(path.c_str(), &ss) != 0) {
      continue;  // vanished: nothing to check
    }
    if (S_ISLNK(ss.st_mode)) {
      return make_error(Errc::kIo, "spool.dir: " + path +
                                       " is a symbolic link; shard directories must be real "
                                       "directories inside spool.dir");
    }
    if (!S_ISDIR(ss.st_mode)) {
      return make_error(Errc::kIo, "spool.dir: " + path + " is not a directory");
    }
    if ((ss.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      return make_error(Errc::kIo, "spool.dir: " + path +
                                       " is writable by other users; chmod go-w it (0700 is best)");
    }
  }
  std::string lock = dir + "/lock";
  int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return make_error(Errc::kIo, "spool.dir: cannot open " + lock + ": " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char pid[32] = {};
    ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) {
      holder.pop_back();
    }
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return make_error(Errc::kIo,
                        "spool.dir: " + dir + " is in use by another ringmail engine" +
                            (holder.empty() ? std::string() : " (pid " + holder + ")") +
                            "; two engines on one spool would deliver and delete each other's "
                            "mail: stop the other one or give this one its own spool.dir");
    }
    return make_error(Errc::kIo, "spool.dir: cannot lock " + lock + ": " + std::strerror(err));
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    RM_LOG_WARN("spool: cannot record the pid in %s: %s", lock.c_str(), std::strerror(errno));
  }
  return fd;
}

SpoolFaults& SpoolFaults::instance() {
  static SpoolFaults f;
  return f;
}

Spool::Spool(Shard& shard)
    : shard_(shard),
      cfg_(shard.config().spool),
      probe_timer_(&Spool::on_probe, this),
      async_timer_(&Spool::on_async, this) {
  dir_ = dir_for(shard.id());
  write_op_.spool = this;
  write_op_.fn = &Spool::on_write;
  fsync_op_.spool = this;
  fsync_op_.fn = &Spool::on_fsync;
  dir_op_.spool = this;
  dir_op_.fn = &Spool::on_dir_fsync;
  // Job ids are unique across shards and restarts: the shard number in
  // the high bits, a counter (continued after recovery) below.
  next_job_id_ = (uint64_t{shard.id()} << 48) | 1;
}

Spool::~Spool() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  if (dir_fd_ >= 0) {
    ::close(dir_fd_);
  }
}

std::string Spool::dir_for(uint32_t shard) const {
  return cfg_.dir + "/shard-" + std::to_string(shard);
}

// ---------------------------------------------------------------------------
// Recovery

namespace {

struct Loaded {
  std::string buffer;  // the segment's bytes (records point into it)
  std::string path;
};

struct JobState {
  sp::JobRecord rec;
  std::vector<sp::RcptState> state;
  std::vector<uint16_t> attempts;
  std::vector<int64_t> next;
  bool retired = false;
};

}  // namespace

Result<std::vector<RecoveredJob>> Spool::recover() {
  auto t0 = std::chrono::steady_clock::now();
  const uint32_t n = shard_.runtime().shard_count();
  std::vector<std::string> dirs;
  for (const std::string& name : list_dir(cfg_.dir)) {
    if (name.rfind("shard-", 0) != 0) {
      continue;
    }
    uint32_t k = static_cast<uint32_t>(std::strtoul(name.c_str() + 6, nullptr, 10));
    if (k % n == shard_.id() && k != shard_.id()) {
      dirs.push_back(cfg_.dir + "/" + name);  // a shard that no longer exists: ours now
    }
  }
  dirs.push_back(dir_);  // our own last: its records are the newest
  std::vector<std::unique_ptr<Loaded>> loaded;
  std::unordered_map<uint64_t, JobState> jobs;
  std::vector<uint64_t> order;  // job ids in first-seen order
  uint64_t max_own_counter = 0;
  size_t segments = 0, records = 0, damaged = 0;
  for (const std::string& dir : dirs) {
    for (const std::string& name : list_dir(dir)) {
      if (name.size() != 20 || !name.ends_with(".seg")) {
        continue;
      }
      auto l = std::make_unique<Loaded>();
      l->path = dir + "/" + name;
      if (!read_whole(l->path, &l->buffer)) {
        return make_error(Errc::kIo, "spool: cannot read " + l->path + ": " + std::strerror(errno));
      }
      ++segments;
      auto hdr = sp::decode_segment_header(l->buffer);
      if (!hdr.ok()) {
        if (l->buffer.size() < sp::kSegmentHeaderSize) {
          // Created, never written: a crash right after creating it.
          ::unlink(l->path.c_str());
          continue;
        }
        RM_LOG_ERROR("spool: %s: %s; moved aside, not used", l->path.c_str(),
                     hdr.error().message.c_str());
        ::mkdir((cfg_.dir + "/corrupt").c_str(), 0700);
        ::rename(l->path.c_str(), (cfg_.dir + "/corrupt/" + name).c_str());
        ++damaged;
        continue;
      }
      if (dir == dir_) {
        seg_ = std::max(seg_, hdr->segment);
      }
      auto on_record = [&](sp::RecordType type, std::string_view payload, size_t) {
        ++records;
        if (type == sp::RecordType::kJob) {
          auto j = sp::decode_job(payload);
          if (!j.ok()) {
            RM_LOG_ERROR("spool: %s: undecodable job record: %s", l->path.c_str(),
                         j.error().message.c_str());
            ++damaged;
            return true;
          }
          auto [it, fresh] = jobs.try_emplace(j->job_id);
          if (fresh) {
            order.push_back(j->job_id);
          }
          JobState& js = it->second;
          js.rec = std::move(*j);
          js.state.clear();
          js.attempts.clear();
          js.next.clear();
          for (const auto& r : js.rec.rcpts) {
            js.state.push_back(r.state);
            js.attempts.push_back(r.attempts);
            js.next.push_back(r.next_retry_ms);
          }
          js.retired = false;
          if ((js.rec.job_id >> 48) == shard_.id()) {
            max_own_counter =
                std::max<uint64_t>(max_own_counter, js.rec.job_id & ((uint64_t{1} << 48) - 1));
          }
        } else if (type == sp::RecordType::kState) {
          auto st = sp::decode_state(payload);
          if (!st.ok()) {
            ++damaged;
            return true;
          }
          auto it = jobs.find(st->job_id);
          if (it == jobs.end()) {
            return true;  // its job finished and its segment is gone
          }
          JobState& js = it->second;
          for (uint32_t i : st->rcpts) {
            if (i >= js.state.size()) {
              continue;
            }
            if (st->kind == sp::StateKind::kFinal) {
              js.state[i] = sp::RcptState::kFinal;
            } else {
              js.attempts[i] = st->attempts;
              js.next[i] = st->next_retry_ms;
            }
          }
        } else if (type == sp::RecordType::kRetire && payload.size() == 8) {
          uint64_t id = 0;
          std::memcpy(&id, payload.data(), 8);  // little-endian host
          auto it = jobs.find(id);
          if (it != jobs.end()) {
            it->second.retired = true;
          }
        }
        return true;
      };
      sp::ScanResult res = sp::scan_segment(l->buffer, on_record);
      if (res.damaged) {
        if (res.damage_offset < res.commit) {
          // Inside data an fsync had covered: real corruption of
          // acknowledged mail. Everything readable was used; keep a copy.
          ++damaged;
          RM_LOG_ERROR(
              "spool: %s: corruption at offset %zu inside acknowledged data (%s); %zu "
              "bytes skipped, the records after it were recovered; a copy is kept in "
              "%s/corrupt",
              l->path.c_str(), res.damage_offset, res.damage.c_str(), res.skipped,
              cfg_.dir.c_str());
          ::mkdir((cfg_.dir + "/corrupt").c_str(), 0700);
          std::ofstream(cfg_.dir + "/corrupt/" + name, std::ios::binary) << l->buffer;
        } else if (!res.resynced) {
          RM_LOG_INFO(
              "spool: %s: torn tail at offset %zu (%s) cut: it held nothing "
              "acknowledged",
              l->path.c_str(), res.damage_offset, res.damage.c_str());
        } else {
          RM_LOG_WARN(
              "spool: %s: damaged record at offset %zu after the last commit (%s); "
              "the records after it were recovered",
              l->path.c_str(), res.damage_offset, res.damage.c_str());
        }
      }
      obsolete_.push_back(l->path);
      loaded.push_back(std::move(l));
    }
  }
  next_job_id_ = (uint64_t{shard_.id()} << 48) | (max_own_counter + 1);
  // Rebuild unfinished jobs.
  std::vector<RecoveredJob> out;
  uint64_t rcpts = 0;
  const int64_t now_wall = shard_.clock().wall_ms();
  const TimePoint now = shard_.clock().now();
  for (uint64_t id : order) {
    JobState& js = jobs[id];
    if (js.retired) {
      continue;
    }
    RecoveredJob rj;
    for (uint32_t i = 0; i < js.state.size(); ++i) {
      if (js.state[i] != sp::RcptState::kFinal) {
        rj.rcpts.push_back(RecoveredRcpt{i, js.next[i]});
      }
    }
    if (rj.rcpts.empty()) {
      continue;
    }
    std::shared_ptr<const Personalisation> personal;
    if (js.rec.personalised) {
      // Re-signing is deterministic (fixed t=, RSA PKCS#1 v1.5, Ed25519):
      // the recovered copies are the bytes the first attempt sent.
      auto p = Personalisation::create(js.rec.body, shard_.runtime().dkim_signer(),
                                       js.rec.dkim_domain, js.rec.dkim_time_s);
      if (!p.ok() && !js.rec.dkim_domain.empty()) {
        RM_LOG_WARN("spool: job %llu of batch %.*s: %s; its messages go unsigned",
                    static_cast<unsigned long long>(id), static_cast<int>(js.rec.batch_id.size()),
                    js.rec.batch_id.data(), p.error().message.c_str());
        p = Personalisation::create(js.rec.body, nullptr, "", 0);
      }
      bool bad = !p.ok();
      for (size_t i = 0; !bad && i < js.rec.rcpts.size(); ++i) {
        bad = !proto::bind_vars((*p)->tmpl(), js.rec.rcpts[i].vars, js.rec.rcpts[i].address).ok();
      }
      if (bad) {
        RM_LOG_ERROR(
            "spool: DAMAGE: job %llu of batch %.*s: its template or variables no "
            "longer parse; its %zu unfinished recipients are not delivered",
            static_cast<unsigned long long>(id), static_cast<int>(js.rec.batch_id.size()),
            js.rec.batch_id.data(), rj.rcpts.size());
        ++damaged;
        continue;
      }
      personal = std::move(*p);
    }
    MessageInit mi;
    mi.batch_id = std::string(js.rec.batch_id);
    mi.sender = std::string(js.rec.sender);
    mi.sender_utf8 = js.rec.sender_utf8;
    mi.raw = js.rec.body;
    mi.auth_user = std::string(js.rec.auth_user);
    mi.pool = js.rec.pool < shard_.config().egress.pools.size() ? js.rec.pool : 0;
    mi.accepted_wall_ms = js.rec.accepted_ms;
    mi.accepted_at = now - Millis(std::max<int64_t>(0, now_wall - js.rec.accepted_ms));
    mi.budget = shard_.runtime().budget_counter();
    if (personal != nullptr) {
      mi.personal = std::move(personal);
      mi.rcpt_vars.reserve(js.rec.rcpts.size());
      for (const auto& r : js.rec.rcpts) {
        mi.rcpt_vars.push_back(r.vars);
      }
    }
    auto* job = new Job();
    job->msg = Message::create(std::move(mi));
    job->spool_id = id;
    size_t bytes = 0;
    for (const auto& r : js.rec.rcpts) {
      bytes += r.address.size();
    }
    job->addrs.reserve(bytes);
    for (uint32_t i = 0; i < js.rec.rcpts.size(); ++i) {
      const auto& r = js.rec.rcpts[i];
      job->add(r.address, r.domain_off);
      job->rcpts.back().attempts = js.attempts[i];
      job->rcpts.back().status =
          js.state[i] == sp::RcptState::kFinal ? RcptStatus::kFinal : RcptStatus::kQueued;
    }
    job->unfinished = static_cast<uint32_t>(rj.rcpts.size());
    rcpts += rj.rcpts.size();
    rj.job = job;
    out.push_back(std::move(rj));
  }
  auto ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t0).count();
  if (segments > 0) {
    RM_LOG_INFO(
        "spool: recovered %zu jobs with %llu unfinished recipients from %zu segments "
        "(%zu records) in %lld ms%s",
        out.size(), static_cast<unsigned long long>(rcpts), segments, records,
        static_cast<long long>(ms), damaged > 0 ? "; DAMAGE was found and reported above" : "");
  }
  recovered_damage_ = damaged;
  return out;
}

// ---------------------------------------------------------------------------
// Writing

Result<void> Spool::start() {
  ::mkdir(cfg_.dir.c_str(), 0700);
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error(Errc::kIo, "spool: cannot create " + dir_ + ": " + std::strerror(errno));
  }
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) {
    return make_error(Errc::kIo, "spool: cannot open " + dir_ + ": " + std::strerror(errno));
  }
  RM_TRY(open_segment());
  if (cfg_.mode == SpoolMode::kAsync) {
    shard_.timers().schedule(&async_timer_, shard_.clock().now() + cfg_.async_interval);
  }
  return ok_result();
}

void Spool::adopt_recovered(const std::vector<RecoveredJob>& jobs) {
  // Every recovered job is rewritten into the new segment with its current
  // state; once that is durable the old segments (ours and those of shards
  // that no longer exist) are all garbage.
  for (const RecoveredJob& rj : jobs) {
    snapshot(rj.job, pending_);
    pending_jobs_.push_back(rj.job);
  }
  std::vector<std::string> old = std::move(obsolete_);
  obsolete_.clear();
  if (old.empty()) {
    return;
  }
  Spool* self = this;
  pending_waiters_.push_back(Waiter{[self, old](bool ok) {
    if (!ok) {
      return;  // keep them: recovery will read them again
    }
    for (const auto& p : old) {
      ::unlink(p.c_str());
    }
    ++self->stats_.retired_segments;
  }});
}

Result<void> Spool::open_segment() {
  uint64_t n = seg_ + 1;
  std::string path = dir_ + "/" + seg_name(n);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(Errc::kIo, "spool: cannot create " + path + ": " + std::strerror(errno));
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = fd;
  const uint64_t previous = seg_;
  seg_ = n;
  Segment s;
  s.number = n;
  s.path = path;
  segments_[n] = std::move(s);
  committed_ = 0;
  commit_marked_ = 0;
  header_pending_ = true;
  dir_sync_needed_ = true;
  ++stats_.segments;
  maybe_retire(previous);  // every job it held may have finished while it was current
  return ok_result();
}

void Spool::note_record(Job* job) {
  Segment& s = segments_[seg_];
  if (std::find(job->spool_segs.begin(), job->spool_segs.end(), seg_) == job->spool_segs.end()) {
    job->spool_segs.push_back(seg_);
    s.live.insert(job);
    ++s.jobs_written;
    writing_new_.push_back(job);
  }
}

void Spool::append_job(Job* job, std::function<void(bool)> done) {
  if (!healthy_) {
    done(false);
    return;
  }
  job->spool_id = next_job_id_++;
  snapshot(job, pending_);
  pending_jobs_.push_back(job);
  pending_waiters_.push_back(Waiter{std::move(done), job});
}

void Spool::snapshot(Job* job, std::string& out) {
  const Message& m = *job->msg;
  sp::JobRecord r;
  r.job_id = job->spool_id;
  r.sender_utf8 = m.sender_utf8();
  r.pool = m.pool();
  r.accepted_ms = m.accepted_wall_ms();
  r.batch_id = m.batch_id();
  r.sender = m.sender();
  r.auth_user = m.auth_user();
  r.body_prefix = m.dkim_signature();  // signed once: kept, never re-signed
  r.body = m.bdat_body();
  if (const Personalisation* p = m.personal()) {
    r.personalised = true;
    r.dkim_domain = p->dkim_domain();
    r.dkim_time_s = p->dkim_time_s();
  }
  r.rcpts.reserve(job->rcpts.size());
  for (const RcptEntry& e : job->rcpts) {
    sp::RcptRecord rr;
    rr.address = job->address(e);
    rr.domain_off = e.domain_off;
    rr.attempts = e.attempts;
    rr.state = e.status == RcptStatus::kFinal ? sp::RcptState::kFinal : sp::RcptState::kQueued;
    rr.next_retry_ms = e.retry_at_s == 0 ? 0 : m.accepted_wall_ms() + int64_t{e.retry_at_s} * 1000;
    rr.vars = m.rcpt_vars(static_cast<uint32_t>(&e - job->rcpts.data()));
    r.rcpts.push_back(rr);
  }
  sp::append_job(out, r);
}

void Spool::journal_final(Job* job, const std::vector<uint32_t>& idx) {
  if (!healthy_ || idx.empty()) {
    return;  // lost state only costs a duplicate after a crash
  }
  sp::StateRecord st;
  st.job_id = job->spool_id;
  st.kind = sp::StateKind::kFinal;
  st.rcpts = idx;
  sp::append_state(pending_, st);
  pending_jobs_.push_back(job);
}

void Spool::journal_deferred(Job* job, const std::vector<uint32_t>& idx, uint16_t attempts,
                             int64_t next_retry_ms) {
  if (!healthy_ || idx.empty()) {
    return;
  }
  sp::StateRecord st;
  st.job_id = job->spool_id;
  st.kind = sp::StateKind::kDeferred;
  st.attempts = attempts;
  st.next_retry_ms = next_retry_ms;
  st.rcpts = idx;
  sp::append_state(pending_, st);
  pending_jobs_.push_back(job);
}

void Spool::retire_job(Job* job) {
  std::erase(pending_jobs_, job);
  std::erase(compact_queue_, job);
  std::erase(writing_new_, job);
  std::erase_if(snapshot_done_, [job](const auto& p) { return p.first == job; });
  for (auto& w : pending_waiters_) {
    if (w.job == job) {
      w.job = nullptr;
    }
  }
  for (auto& w : writing_waiters_) {
    if (w.job == job) {
      w.job = nullptr;
    }
  }
  if (job->spool_id != 0) {
    if (healthy_) {
      sp::append_retire(pending_, job->spool_id);
    } else {
      unretired_.push_back(job->spool_id);  // written once the disk works
    }
  }
  for (uint64_t seg : job->spool_segs) {
    auto it = segments_.find(seg);
    if (it != segments_.end()) {
      it->second.live.erase(job);
      maybe_retire(seg);
    }
  }
  job->spool_segs.clear();
}

void Spool::maybe_retire(uint64_t seg) {
  if (seg == seg_) {
    return;
  }
  auto it = segments_.find(seg);
  if (it == segments_.end() || !it->second.live.empty()) {
    return;
  }
  ::unlink(it->second.path.c_str());
  segments_.erase(it);
  ++stats_.retired_segments;
}

void Spool::revoke_job(Job* job, std::function<void(bool)> done) {
  const bool was_healthy = healthy_;
  retire_job(job);
  if (was_healthy) {
    pending_waiters_.push_back(Waiter{std::move(done), nullptr});
  } else {
    done(false);
  }
}

bool Spool::idle() const {
  return phase_ == Phase::kIdle && pending_.empty() && !unsynced_;
}

void Spool::flush() {
  if (probe_due_ && !healthy_ && phase_ == Phase::kIdle) {
    probe_due_ = false;
    auto r = open_segment();
    if (!r.ok()) {
      fail("probe", errno);
      return;
    }
    probing_ = true;  // the header write and fsync decide
  }
  if (healthy_ && phase_ == Phase::kIdle) {
    compact_some();
  }
  start_write();
}

void Spool::start_write() {
  if (phase_ != Phase::kIdle || fd_ < 0 || (!healthy_ && !probing_)) {
    return;
  }
  // async: the periodic fsync goes first, even under a steady stream of
  // writes, so acknowledged data is never unsynced for much longer than
  // async_interval (plus one fsync).
  if (cfg_.mode == SpoolMode::kAsync && sync_due_ && unsynced_ && !header_pending_) {
    sync_due_ = false;
    phase_ = Phase::kSyncing;
    int inject = SpoolFaults::instance().fsync_errno.load();
    if (inject != 0) {
      on_fsync(-inject);
      return;
    }
    fsync_started_ = std::chrono::steady_clock::now();
    shard_.ring().fsync(fd_, true, &fsync_op_);
    return;
  }
  if (pending_.empty() && !header_pending_) {
    return;
  }
  if (segments_[seg_].size >= cfg_.segment_size && !header_pending_ && healthy_) {
    if (!open_segment().ok()) {
      fail("create segment", errno);
      return;
    }
  }
  std::string batch;
  batch.reserve(pending_.size() + 64 + unretired_.size() * 32);
  if (header_pending_) {
    sp::append_segment_header(batch, shard_.id(), seg_, shard_.clock().wall_ms());
    header_pending_ = false;
  }
  if (healthy_) {
    for (uint64_t id : unretired_) {
      sp::append_retire(batch, id);
    }
    unretired_.clear();
  }
  if (committed_ > commit_marked_) {
    sp::append_commit(batch, committed_);
    commit_marked_ = committed_;
  }
  batch.append(pending_);
  pending_.clear();
  writing_new_.clear();
  for (Job* j : pending_jobs_) {
    note_record(j);
  }
  pending_jobs_.clear();
  writing_.swap(batch);
  written_ = 0;
  write_off_ = segments_[seg_].size;
  writing_waiters_.swap(pending_waiters_);
  pending_waiters_.clear();
  group_unacked_ = true;
  phase_ = Phase::kWriting;
  submit_write();
}

void Spool::submit_write() {
  SpoolFaults& f = SpoolFaults::instance();
  uint64_t nth = f.writes.fetch_add(1) + 1;
  int inject = f.write_errno.load();
  if (inject != 0) {
    on_write(-inject);
    return;
  }
  size_t len = writing_.size() - written_;
  uint32_t every = f.short_write_every.load();
  if (every != 0 && nth % every == 0 && len > 1) {
    len /= 2;  // the kernel may write less than asked: the rest is resubmitted
  }
  shard_.ring().write(fd_, writing_.data() + written_, len, write_off_ + written_, &write_op_);
}

void Spool::on_write(int res) {
  if (res < 0) {
    fail("write", -res);
    return;
  }
  if (res == 0) {
    fail("write", EIO);
    return;
  }
  written_ += static_cast<size_t>(res);
  if (written_ < writing_.size()) {
    submit_write();
    return;
  }
  segments_[seg_].size = write_off_ + writing_.size();
  stats_.bytes += writing_.size();
  failpoint("spool_after_write");
  if (cfg_.mode == SpoolMode::kAsync && !probing_) {
    // Acknowledged once written; the fsync follows on the async timer.
    unsynced_ = true;
    group_done(true);
    return;
  }
  phase_ = Phase::kSyncing;
  SpoolFaults& f = SpoolFaults::instance();
  int once = f.fsync_fail_once.exchange(0);
  int inject = once != 0 ? once : f.fsync_errno.load();
  if (inject != 0) {
    on_fsync(-inject);
    return;
  }
  fsync_started_ = std::chrono::steady_clock::now();
  shard_.ring().fsync(fd_, /*datasync=*/true, &fsync_op_);
}

void Spool::on_fsync(int res) {
  if (res < 0) {
    fail("fsync", -res);
    return;
  }
  committed_ = segments_[seg_].size;
  unsynced_ = false;
  ++stats_.commits;
  stats_.fsync.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - fsync_started_).count());
  failpoint("spool_after_fsync");
  // Compaction snapshots in the covered writes are durable now.
  for (auto& [job, seg] : snapshot_done_) {
    for (uint64_t old : std::vector<uint64_t>(job->spool_segs)) {
      if (old != seg) {
        auto it = segments_.find(old);
        if (it != segments_.end()) {
          it->second.live.erase(job);
        }
        std::erase(job->spool_segs, old);
        maybe_retire(old);
      }
    }
  }
  snapshot_done_.clear();
  if (dir_sync_needed_) {
    phase_ = Phase::kSyncingDir;
    shard_.ring().fsync(dir_fd_, false, &dir_op_);
    return;
  }
  group_done(true);
}

void Spool::on_dir_fsync(int res) {
  if (res < 0) {
    fail("fsync of the spool directory", -res);
    return;
  }
  dir_sync_needed_ = false;
  group_done(true);
}

void Spool::group_done(bool ok) {
  phase_ = Phase::kIdle;
  writing_.clear();
  group_unacked_ = false;
  writing_new_.clear();
  if (probing_ && ok) {
    probing_ = false;
    healthy_ = true;
    error_logged_ = false;
    RM_LOG_INFO("spool: writing works again (%s); accepting batches", dir_.c_str());
  }
  std::vector<Waiter> ws;
  ws.swap(writing_waiters_);
  for (auto& w : ws) {
    w.done(ok);
  }
}

void Spool::fail(const std::string& what, int err) {
  ++stats_.errors;
  if (!error_logged_) {
    RM_LOG_ERROR(
        "spool %s failed in %s: %s; batches are refused (spool unavailable) until "
        "the disk works again; the segment is abandoned, the fsync is not retried",
        what.c_str(), dir_.c_str(), std::strerror(err));
    error_logged_ = true;
  }
  healthy_ = false;
  probing_ = false;
  phase_ = Phase::kIdle;
  if (group_unacked_) {
    // The group is refused: none of it may come back at recovery.
    cut_failed_group(writing_waiters_);
    group_unacked_ = false;
  }
  std::vector<Waiter> ws;
  ws.swap(writing_waiters_);
  for (auto& w : pending_waiters_) {
    ws.push_back(std::move(w));
  }
  pending_waiters_.clear();
  pending_.clear();
  pending_jobs_.clear();
  writing_.clear();
  snapshot_done_.clear();
  header_pending_ = false;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  // The abandoned segment keeps what an earlier fsync covered; it retires
  // like any old segment once its jobs are done.
  seg_dead_ = true;
  shard_.timers().schedule(&probe_timer_, shard_.clock().now() + Millis(1000));
  for (auto& w : ws) {
    w.done(false);
  }
}

void Spool::cut_failed_group(const std::vector<Waiter>& refused) {
  // What the disk took of a failed group (a write cut short by ENOSPC, data
  // behind a failed fsync that writeback may still flush) would be read
  // back at recovery as records of batches that were refused. Cut the
  // segment back to where the group began: truncating frees space, so it
  // works on a full disk too.
  auto it = segments_.find(seg_);
  if (fd_ >= 0 && ::ftruncate(fd_, static_cast<off_t>(write_off_)) == 0) {
    if (it != segments_.end()) {
      it->second.size = write_off_;
      for (Job* j : writing_new_) {
        it->second.live.erase(j);
        std::erase(j->spool_segs, seg_);
      }
    }
  } else {
    RM_LOG_ERROR(
        "spool: cannot cut %s back after the failed write (%s); the refused batches get "
        "RETIRE records once the disk works",
        it != segments_.end() ? it->second.path.c_str() : dir_.c_str(), std::strerror(errno));
    for (const Waiter& w : refused) {
      if (w.job != nullptr && w.job->spool_id != 0) {
        unretired_.push_back(w.job->spool_id);
      }
    }
  }
  writing_new_.clear();
  if (it != segments_.end() && write_off_ == 0 && it->second.live.empty()) {
    // Nothing of it was ever durable (e.g. a failed probe): remove it, so
    // an outage does not leave a segment file per probe.
    ::unlink(it->second.path.c_str());
    segments_.erase(it);
  }
}

void Spool::on_probe(void* self) {
  auto* s = static_cast<Spool*>(self);
  if (!s->healthy_) {
    s->probe_due_ = true;
    s->shard_.wake();
  }
}

void Spool::on_async(void* self) {
  auto* s = static_cast<Spool*>(self);
  s->sync_due_ = true;
  s->shard_.timers().schedule(&s->async_timer_, s->shard_.clock().now() + s->cfg_.async_interval);
}

void Spool::compact_some() {
  if (cfg_.compact_percent == 0) {
    return;
  }
  if (compact_queue_.empty()) {
    for (auto& [n, s] : segments_) {
      if (n == seg_ || s.live.empty() || s.compacting) {
        continue;
      }
      if (s.live.size() * 100 < uint64_t{cfg_.compact_percent} * s.jobs_written) {
        s.compacting = true;
        compact_queue_.assign(s.live.begin(), s.live.end());
        break;
      }
    }
  }
  size_t budget = kCompactBytesPerFlush;
  while (!compact_queue_.empty() && budget > 0) {
    Job* job = compact_queue_.back();
    compact_queue_.pop_back();
    size_t before = pending_.size();
    snapshot(job, pending_);
    pending_jobs_.push_back(job);
    snapshot_done_.emplace_back(job, seg_);
    ++stats_.compacted_jobs;
    failpoint("compaction");
    size_t used = pending_.size() - before;
    budget = used >= budget ? 0 : budget - used;
  }
}

void Spool::close() {
  if (fd_ < 0 || !healthy_) {
    return;
  }
  // Blocking is fine at shutdown: a last COMMIT so recovery knows exactly
  // what was durable.
  std::string tail;
  if (header_pending_) {
    sp::append_segment_header(tail, shard_.id(), seg_, shard_.clock().wall_ms());
    header_pending_ = false;
  }
  tail.append(pending_);
  pending_.clear();
  uint64_t off = segments_[seg_].size;
  if (!tail.empty() && ::pwrite(fd_, tail.data(), tail.size(), static_cast<off_t>(off)) ==
                           static_cast<ssize_t>(tail.size())) {
    off += tail.size();
  }
  if (::fdatasync(fd_) == 0) {
    std::string c;
    sp::append_commit(c, off);
    if (::pwrite(fd_, c.data(), c.size(), static_cast<off_t>(off)) ==
        static_cast<ssize_t>(c.size())) {
      ::fdatasync(fd_);
    }
  }
}

}  // namespace ringmail::engine
