#include "engine/suppression.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <queue>

#include "proto/json.h"
#include "proto/text_util.h"

namespace ringmail::engine {
namespace {

constexpr std::string_view kLogHeader = "# ringmail suppression list v1\n";
constexpr size_t kMaxLogLine = 4096;  // longer lines cannot come from us: skipped
constexpr size_t kWriteChunk = 1u << 20;

std::string errno_text(const std::string& what, int e) {
  return what + ": " + std::strerror(e);
}

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return make_error(Errc::kIo, errno_text(path + ": write", errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok_result();
}

Result<void> fsync_dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(Errc::kIo, errno_text(dir + ": open", errno));
  }
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) {
    return make_error(Errc::kIo, errno_text(dir + ": fsync", e));
  }
  return ok_result();
}

// Log fields are separated by single spaces; bytes that would break that
// (controls, space, DEL, '%') are written as %XX.
void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '%') {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    } else {
      out.push_back(c);
    }
  }
}

std::optional<std::string> unescape(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int hi = i + 1 < s.size() ? hex(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

void append_add_line(std::string& out, std::string_view key, SuppressionReason reason,
                     int64_t added_ms, int64_t expires_ms, std::string_view note) {
  out.append("+ ");
  append_escaped(out, key);
  out.push_back(' ');
  out.append(suppression_reason_name(reason));
  out.push_back(' ');
  out.append(std::to_string(added_ms));
  out.push_back(' ');
  out.append(std::to_string(expires_ms));
  out.push_back(' ');
  append_escaped(out, note);
  out.push_back('\n');
}

// Splits on single spaces into at most `n` fields (the last keeps the rest).
std::vector<std::string_view> fields(std::string_view line, size_t n) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < n) {
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) {
      break;
    }
    out.push_back(line.substr(0, sp));
    line.remove_prefix(sp + 1);
  }
  out.push_back(line);
  return out;
}

bool parse_i64(std::string_view s, int64_t* out) {
  uint64_t v = 0;
  if (!proto::internal::parse_u64(s, &v) || v > static_cast<uint64_t>(INT64_MAX)) {
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

// Glob: '*' any run, '?' one byte; iterative with one backtrack point.
bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') {
    ++p;
  }
  return p == pat.size();
}

}  // namespace

std::string_view suppression_reason_name(SuppressionReason r) {
  switch (r) {
    case SuppressionReason::kInvalidRecipient:
      return "invalid_recipient";
    case SuppressionReason::kUnsubscribed:
      return "unsubscribed";
    case SuppressionReason::kManual:
      return "manual";
  }
  return "manual";
}

std::optional<SuppressionReason> parse_suppression_reason(std::string_view name) {
  for (auto r : {SuppressionReason::kInvalidRecipient, SuppressionReason::kUnsubscribed,
                 SuppressionReason::kManual}) {
    if (name == suppression_reason_name(r)) {
      return r;
    }
  }
  return std::nullopt;
}

std::string SuppressionList::key(std::string_view address) {
  size_t at = address.rfind('@');
  if (at == std::string_view::npos) {
    return {};
  }
  std::string k(address);
  for (size_t i = at + 1; i < k.size(); ++i) {
    k[i] = proto::internal::ascii_lower(k[i]);
  }
  return k;
}

bool SuppressionList::suppresses(const proto::EnhancedCode& code) {
  if (code.cls != 5 || code.subject != 1) {
    return false;
  }
  switch (code.detail) {
    case 2:   // bad destination system: the domain (RFC 3463)
    case 7:   // bad sender's mailbox address syntax
    case 8:   // bad sender's system address
    case 10:  // the recipient's domain has a null MX (RFC 7505)
      return false;
    default:
      return true;
  }
}

std::string SuppressionList::bounce_note(uint16_t code, std::string_view enhanced,
                                         std::string_view response, std::string_view batch) {
  // `response` is the reply summary, "550 5.1.1 text": drop the code and
  // the enhanced code it may repeat, then write each once.
  std::string code_text = std::to_string(code);
  std::string_view text = response;
  if (text.starts_with(code_text) &&
      (text.size() == code_text.size() || text[code_text.size()] == ' ')) {
    text.remove_prefix(std::min(text.size(), code_text.size() + 1));
  }
  if (!enhanced.empty() && text.starts_with(enhanced) &&
      (text.size() == enhanced.size() || text[enhanced.size()] == ' ')) {
    text.remove_prefix(std::min(text.size(), enhanced.size() + 1));
  }
  std::string note = code_text;
  for (std::string_view part : {enhanced, text}) {
    if (!part.empty()) {
      note += ' ';
      note += part;
    }
  }
  if (!batch.empty()) {
    note += " (batch ";
    note += batch;
    note += ')';
  }
  return note;
}

SuppressionList::SuppressionList(const SuppressionConfig& config, const Clock& clock, Limits limits)
    : config_(config),
      enabled_(config.enabled),
      invalid_ttl_ms_(config.invalid_ttl.count()),
      unsubscribe_ttl_ms_(config.unsubscribe_ttl.count()),
      clock_(&clock),
      limits_(limits),
      stripes_(new Stripe[kStripes]) {}

void SuppressionList::set_policy(bool enabled, Millis invalid_ttl, Millis unsubscribe_ttl) {
  invalid_ttl_ms_.store(invalid_ttl.count(), std::memory_order_relaxed);
  unsubscribe_ttl_ms_.store(unsubscribe_ttl.count(), std::memory_order_relaxed);
  enabled_.store(enabled, std::memory_order_release);
}

SuppressionList::~SuppressionList() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

Result<std::unique_ptr<SuppressionList>> SuppressionList::open(const SuppressionConfig& config,
                                                               const Clock& clock, Limits limits) {
  std::unique_ptr<SuppressionList> s(new SuppressionList(config, clock, limits));
  if (!config.file.empty()) {
    RM_TRY(s->load());
    std::lock_guard io(s->io_mu_);
    Result<void> c = s->compact_locked();
    if (!c.ok()) {
      return std::move(c).take_error();
    }
  }
  return s;
}

SuppressionList::Stripe& SuppressionList::stripe_for(std::string_view key) const {
  return stripes_[Hash{}(key) % kStripes];
}

size_t SuppressionList::log_line_locked(std::string_view line) {
  std::lock_guard lock(pending_mu_);
  pending_.append(line);
  ++pending_lines_;
  return pending_.size();
}

bool SuppressionList::put(std::string key, Value v, bool log) {
  Stripe& st = stripe_for(key);
  bool big = false;
  {
    std::unique_lock lock(st.mu);
    auto it = st.map.find(std::string_view(key));
    if (it == st.map.end()) {
      if (count_.load(std::memory_order_relaxed) >= limits_.max_entries) {
        refused_full_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      count_.fetch_add(1, std::memory_order_relaxed);
    }
    if (v.note.size() > limits_.max_note) {
      v.note.resize(limits_.max_note);
    }
    if (log && !config_.file.empty()) {
      std::string line;
      append_add_line(line, key, v.reason, v.added_ms, v.expires_ms, v.note);
      big = log_line_locked(line) > kMaxPendingBytes;
    }
    if (it == st.map.end()) {
      st.map.emplace(std::move(key), std::move(v));
    } else {
      it->second = std::move(v);
    }
  }
  if (big) {
    std::lock_guard io(io_mu_);
    if (!write_pending().ok()) {
      write_failures_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return true;
}

bool SuppressionList::erase(std::string_view key, bool log) {
  Stripe& st = stripe_for(key);
  std::unique_lock lock(st.mu);
  auto it = st.map.find(key);
  if (it == st.map.end()) {
    return false;
  }
  st.map.erase(it);
  count_.fetch_sub(1, std::memory_order_relaxed);
  if (log && !config_.file.empty()) {
    std::string line = "- ";
    append_escaped(line, key);
    line.push_back('\n');
    log_line_locked(line);
  }
  return true;
}

std::optional<SuppressionHit> SuppressionList::check(std::string_view address) const {
  if (!enabled() || count_.load(std::memory_order_relaxed) == 0) {
    return std::nullopt;
  }
  const Stripe& st = stripe_for(address);
  std::shared_lock lock(st.mu);
  auto it = st.map.find(address);
  if (it == st.map.end()) {
    return std::nullopt;
  }
  const Value& v = it->second;
  if (v.expires_ms != 0 && v.expires_ms <= clock_->wall_ms()) {
    return std::nullopt;
  }
  return SuppressionHit{v.reason, v.expires_ms};
}

bool SuppressionList::note_bounce(std::string_view address, const proto::EnhancedCode& code,
                                  std::string_view note) {
  if (!enabled() || !suppresses(code)) {
    return false;
  }
  std::string k = key(address);
  if (k.empty()) {
    return false;
  }
  int64_t now = clock_->wall_ms();
  int64_t ttl = invalid_ttl_ms_.load(std::memory_order_relaxed);
  return put(
      std::move(k),
      Value{SuppressionReason::kInvalidRecipient, now, ttl > 0 ? now + ttl : 0, std::string(note)},
      true);
}

bool SuppressionList::note_unsubscribed(std::string_view address, std::string_view note) {
  if (!enabled()) {
    return false;
  }
  std::string k = key(address);
  if (k.empty()) {
    return false;
  }
  int64_t now = clock_->wall_ms();
  int64_t ttl = unsubscribe_ttl_ms_.load(std::memory_order_relaxed);
  return put(
      std::move(k),
      Value{SuppressionReason::kUnsubscribed, now, ttl > 0 ? now + ttl : 0, std::string(note)},
      true);
}

Result<void> SuppressionList::add(std::string_view address, SuppressionReason reason, Millis ttl,
                                  std::string_view note) {
  std::string k = key(address);
  if (k.empty()) {
    return make_error(Errc::kInvalidArgument, "\"" + std::string(address) + "\" is not an address");
  }
  int64_t now = clock_->wall_ms();
  if (!put(std::move(k),
           Value{reason, now, ttl.count() > 0 ? now + ttl.count() : 0, std::string(note)}, true)) {
    return make_error(Errc::kLimit, "suppression list is full (" +
                                        std::to_string(limits_.max_entries) + " entries)");
  }
  return flush();
}

Result<bool> SuppressionList::remove(std::string_view address) {
  std::string k = key(address);
  if (k.empty()) {
    return make_error(Errc::kInvalidArgument, "\"" + std::string(address) + "\" is not an address");
  }
  bool removed = erase(k, true);
  RM_TRY(flush());
  return removed;
}

std::vector<SuppressionEntry> SuppressionList::list(std::string_view pattern, size_t limit,
                                                    size_t* total) const {
  std::string pat = key(pattern);
  if (pat.empty()) {
    pat.assign(pattern);  // "*" and other patterns without '@'
  }
  const int64_t now = clock_->wall_ms();
  auto less = [](const SuppressionEntry& a, const SuppressionEntry& b) {
    return a.address < b.address;
  };
  // A max-heap of the `limit` smallest addresses: memory stays O(limit).
  std::priority_queue<SuppressionEntry, std::vector<SuppressionEntry>, decltype(less)> best(less);
  size_t matched = 0;
  for (size_t s = 0; s < kStripes; ++s) {
    std::shared_lock lock(stripes_[s].mu);
    for (const auto& [addr, v] : stripes_[s].map) {
      if ((v.expires_ms != 0 && v.expires_ms <= now) || !glob_match(pat, addr)) {
        continue;
      }
      ++matched;
      if (limit == 0 || (best.size() == limit && !(addr < best.top().address))) {
        continue;
      }
      best.push(SuppressionEntry{addr, v.reason, v.added_ms, v.expires_ms, v.note});
      if (best.size() > limit) {
        best.pop();
      }
    }
  }
  std::vector<SuppressionEntry> out;
  out.reserve(best.size());
  while (!best.empty()) {
    out.push_back(best.top());
    best.pop();
  }
  std::reverse(out.begin(), out.end());
  if (total != nullptr) {
    *total = matched;
  }
  return out;
}

size_t SuppressionList::expire() {
  const int64_t now = clock_->wall_ms();
  size_t n = 0;
  for (size_t s = 0; s < kStripes; ++s) {
    std::unique_lock lock(stripes_[s].mu);
    n += std::erase_if(stripes_[s].map, [&](const auto& kv) {
      return kv.second.expires_ms != 0 && kv.second.expires_ms <= now;
    });
  }
  count_.fetch_sub(n, std::memory_order_relaxed);
  return n;
}

SuppressionList::Stats SuppressionList::stats() const {
  Stats s;
  s.entries = size();
  s.refused_full = refused_full_.load(std::memory_order_relaxed);
  s.write_failures = write_failures_.load(std::memory_order_relaxed);
  s.compactions = compactions_.load(std::memory_order_relaxed);
  s.skipped_lines = skipped_lines_;
  return s;
}

// ---------------------------------------------------------------------------
// Persistence

Result<void> SuppressionList::load() {
  FILE* f = std::fopen(config_.file.c_str(), "re");
  if (f == nullptr) {
    if (errno == ENOENT) {
      return ok_result();  // created by the first compaction
    }
    return make_error(Errc::kIo, errno_text(config_.file + ": open", errno));
  }
  const int64_t now = clock_->wall_ms();
  char* buf = nullptr;
  size_t cap = 0;
  ssize_t n;
  while ((n = ::getline(&buf, &cap, f)) > 0) {
    std::string_view line(buf, static_cast<size_t>(n));
    if (!line.ends_with('\n')) {
      ++skipped_lines_;  // torn last write: the mutation it carried never flushed
      break;
    }
    line.remove_suffix(1);
    if (line.empty() || line.front() == '#') {
      continue;
    }
    if (line.size() > kMaxLogLine) {
      ++skipped_lines_;
      continue;
    }
    if (line.starts_with("- ")) {
      auto addr = unescape(line.substr(2));
      if (!addr) {
        ++skipped_lines_;
        continue;
      }
      erase(*addr, false);
      continue;
    }
    std::vector<std::string_view> f6 = fields(line, 6);
    Value v{};
    int64_t added = 0, expires = 0;
    std::optional<std::string> addr, note;
    std::optional<SuppressionReason> reason;
    if (f6.size() != 6 || f6[0] != "+" || !(addr = unescape(f6[1])) ||
        !(reason = parse_suppression_reason(f6[2])) || !parse_i64(f6[3], &added) ||
        !parse_i64(f6[4], &expires) || !(note = unescape(f6[5])) || key(*addr) != *addr) {
      ++skipped_lines_;
      continue;
    }
    if (expires != 0 && expires <= now) {
      erase(*addr, false);  // an older, longer entry is superseded too
      continue;
    }
    v.reason = *reason;
    v.added_ms = added;
    v.expires_ms = expires;
    v.note = std::move(*note);
    put(std::move(*addr), std::move(v), false);
  }
  bool read_error = std::ferror(f) != 0;
  std::free(buf);
  std::fclose(f);
  if (read_error) {
    return make_error(Errc::kIo, config_.file + ": read error");
  }
  return ok_result();
}

Result<void> SuppressionList::write_pending() {
  std::string out;
  uint64_t lines = 0;
  {
    std::lock_guard lock(pending_mu_);
    out.swap(pending_);
    lines = pending_lines_;
    pending_lines_ = 0;
  }
  if (out.empty() || fd_ < 0) {
    return ok_result();
  }
  RM_TRY(write_all(fd_, out, config_.file));
  if (::fdatasync(fd_) != 0) {
    return make_error(Errc::kIo, errno_text(config_.file + ": fdatasync", errno));
  }
  log_lines_ += lines;
  return ok_result();
}

Result<void> SuppressionList::flush() {
  if (config_.file.empty()) {
    return ok_result();
  }
  std::lock_guard io(io_mu_);
  Result<void> r = write_pending();
  if (r.ok() && log_lines_ > 2 * size() + 1024) {
    r = compact_locked();
  }
  if (!r.ok()) {
    write_failures_.fetch_add(1, std::memory_order_relaxed);
  }
  return r;
}

Result<void> SuppressionList::compact() {
  if (config_.file.empty()) {
    return ok_result();
  }
  std::lock_guard io(io_mu_);
  Result<void> r = compact_locked();
  if (!r.ok()) {
    write_failures_.fetch_add(1, std::memory_order_relaxed);
  }
  return r;
}

// Caller holds io_mu_. Mutations racing with the snapshot also sit in
// pending_, which is written to the new file after the rename: replaying a
// line whose effect the snapshot already has is harmless ("+" replaces,
// "-" removes), and per address the lines keep mutation order.
Result<void> SuppressionList::compact_locked() {
  const std::string tmp = config_.file + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(Errc::kIo, errno_text(tmp + ": open", errno));
  }
  auto fail = [&](Error e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return e;
  };
  const int64_t now = clock_->wall_ms();
  std::string buf(kLogHeader);
  uint64_t lines = 0;
  for (size_t s = 0; s < kStripes; ++s) {
    std::shared_lock lock(stripes_[s].mu);
    for (const auto& [addr, v] : stripes_[s].map) {
      if (v.expires_ms != 0 && v.expires_ms <= now) {
        continue;
      }
      append_add_line(buf, addr, v.reason, v.added_ms, v.expires_ms, v.note);
      ++lines;
    }
    if (buf.size() >= kWriteChunk) {
      lock.unlock();
      Result<void> w = write_all(fd, buf, tmp);
      if (!w.ok()) {
        return fail(std::move(w).take_error());
      }
      buf.clear();
    }
  }
  Result<void> w = write_all(fd, buf, tmp);
  if (!w.ok()) {
    return fail(std::move(w).take_error());
  }
  if (::fsync(fd) != 0) {
    return fail(make_error(Errc::kIo, errno_text(tmp + ": fsync", errno)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), config_.file.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(Errc::kIo, errno_text(config_.file + ": rename", e));
  }
  RM_TRY(fsync_dir_of(config_.file));
  int nfd = ::open(config_.file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (nfd < 0) {
    return make_error(Errc::kIo, errno_text(config_.file + ": open", errno));
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = nfd;
  log_lines_ = lines;
  compactions_.fetch_add(1, std::memory_order_relaxed);
  return write_pending();
}

void append_suppression_json(std::string& out, const SuppressionEntry& e) {
  out.push_back('{');
  proto::append_json_key(out, "address");
  proto::append_json_string(out, e.address);
  out.push_back(',');
  proto::append_json_key(out, "reason");
  proto::append_json_string(out, suppression_reason_name(e.reason));
  out.push_back(',');
  proto::append_json_key(out, "added");
  std::string ts;
  append_rfc3339_ms(ts, e.added_ms);
  proto::append_json_string(out, ts);
  out.push_back(',');
  proto::append_json_key(out, "expires");
  if (e.expires_ms == 0) {
    out.append("null");
  } else {
    ts.clear();
    append_rfc3339_ms(ts, e.expires_ms);
    proto::append_json_string(out, ts);
  }
  out.push_back(',');
  proto::append_json_key(out, "note");
  proto::append_json_string(out, e.note);
  out.push_back('}');
}

}  // namespace ringmail::engine
