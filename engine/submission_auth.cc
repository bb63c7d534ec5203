// Credentials, AUTH failure limiting and trusted networks for the
// submission listener (see submission_auth.h).
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/pwdbased.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "engine/submission_auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ringmail::engine {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool parse_hex(std::string_view text, std::vector<uint8_t>* out) {
  if (text.size() % 2 != 0) {
    return false;
  }
  out->clear();
  for (size_t i = 0; i < text.size(); i += 2) {
    int hi = hex_digit(text[i]);
    int lo = hex_digit(text[i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out->push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return true;
}

void append_hex(std::string& out, std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
}

bool valid_user(std::string_view user) {
  if (user.empty() || user.size() > 256) {
    return false;
  }
  for (char c : user) {
    auto u = static_cast<unsigned char>(c);
    if (c == ':' || u < 0x21 || u == 0x7f) {
      return false;
    }
  }
  return true;
}

// Compares two equal-length digests without an early exit.
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) {
    return false;
  }
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace

Result<std::array<uint8_t, kPbkdf2HashBytes>> pbkdf2_sha256(std::string_view password,
                                                            std::span<const uint8_t> salt,
                                                            uint32_t iterations) {
  std::array<uint8_t, kPbkdf2HashBytes> out{};
  int rc = wc_PBKDF2(out.data(), reinterpret_cast<const byte*>(password.data()),
                     static_cast<int>(password.size()), salt.data(), static_cast<int>(salt.size()),
                     static_cast<int>(iterations), static_cast<int>(out.size()), WC_SHA256);
  if (rc != 0) {
    return make_error(Errc::kInternal, "wc_PBKDF2 failed: " + std::to_string(rc));
  }
  return out;
}

Result<std::string> make_credential_line(std::string_view user, std::string_view password,
                                         uint32_t iterations) {
  if (!valid_user(user)) {
    return make_error(Errc::kInvalidArgument,
                      "user names are 1-256 printable bytes without ':' or spaces");
  }
  if (iterations < CredentialStore::kMinIterations ||
      iterations > CredentialStore::kMaxIterations) {
    return make_error(Errc::kInvalidArgument, "iterations must be between " +
                                                  std::to_string(CredentialStore::kMinIterations) +
                                                  " and " +
                                                  std::to_string(CredentialStore::kMaxIterations));
  }
  std::array<uint8_t, kPbkdf2SaltBytes> salt{};
  size_t have = 0;
  while (have < salt.size()) {
    ssize_t n = ::getrandom(salt.data() + have, salt.size() - have, 0);
    if (n < 0 && errno != EINTR) {
      return make_error(Errc::kIo, std::string("getrandom: ") + std::strerror(errno));
    }
    have += n > 0 ? static_cast<size_t>(n) : 0;
  }
  auto hash = pbkdf2_sha256(password, salt, iterations);
  RM_TRY(hash);
  std::string line(user);
  line += ":" + std::to_string(iterations) + ":";
  append_hex(line, salt);
  line += ":";
  append_hex(line, *hash);
  return line;
}

// ---------------------------------------------------------------------------
// CredentialStore

Result<CredentialStore> CredentialStore::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_error(Errc::kConfig, "submission.credentials_file: cannot read " + path + ": " +
                                         std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

Result<CredentialStore> CredentialStore::parse(std::string_view text, std::string_view origin) {
  CredentialStore store;
  size_t line_no = 0;
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kConfig, std::string(origin) + ":" + std::to_string(line_no) + ": " +
                                         why + " (expected user:iterations:salt-hex:hash-hex)");
  };
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') {
      continue;
    }
    std::vector<std::string_view> f;
    size_t start = 0;
    for (size_t i = 0; i <= line.size(); ++i) {
      if (i == line.size() || line[i] == ':') {
        f.push_back(line.substr(start, i - start));
        start = i + 1;
      }
    }
    if (f.size() != 4) {
      return bad("wrong number of fields");
    }
    if (!valid_user(f[0])) {
      return bad("invalid user name");
    }
    Entry e;
    uint64_t it = 0;
    for (char c : f[1]) {
      if (c < '0' || c > '9' || it > kMaxIterations) {
        return bad("invalid iteration count");
      }
      it = it * 10 + static_cast<uint64_t>(c - '0');
    }
    if (f[1].empty() || it < kMinIterations || it > kMaxIterations) {
      return bad("iterations must be between " + std::to_string(kMinIterations) + " and " +
                 std::to_string(kMaxIterations));
    }
    e.iterations = static_cast<uint32_t>(it);
    std::vector<uint8_t> hash;
    if (!parse_hex(f[2], &e.salt) || e.salt.size() < 8 || e.salt.size() > 64) {
      return bad("the salt must be 8 to 64 bytes of hex");
    }
    if (!parse_hex(f[3], &hash) || hash.size() != kPbkdf2HashBytes) {
      return bad("the hash must be 32 bytes (64 hex digits) of PBKDF2-HMAC-SHA256");
    }
    std::copy(hash.begin(), hash.end(), e.hash.begin());
    if (store.users_.contains(std::string(f[0]))) {
      return bad("user \"" + std::string(f[0]) + "\" appears twice");
    }
    if (store.users_.size() >= kMaxUsers) {
      return bad("more than " + std::to_string(kMaxUsers) + " users");
    }
    if (store.dummy_.iterations == 0) {
      // Unknown users cost what the first real user costs.
      store.dummy_.iterations = e.iterations;
      store.dummy_.salt = e.salt;
      store.dummy_.hash.fill(0xa5);
    }
    store.users_.emplace(std::string(f[0]), std::move(e));
  }
  return store;
}

bool CredentialStore::check(const Entry& e, std::string_view password) {
  auto got = pbkdf2_sha256(password, e.salt, e.iterations);
  return got.ok() && constant_time_equal(*got, e.hash);
}

bool CredentialStore::verify(std::string_view user, std::string_view password) const {
  auto it = users_.find(std::string(user));
  if (it == users_.end()) {
    if (dummy_.iterations != 0) {
      (void)check(dummy_, password);  // same work; the dummy hash never matches
    }
    return false;
  }
  return check(it->second, password);
}

// ---------------------------------------------------------------------------
// AuthWorker

namespace {
void wipe(std::string& s) {
  std::fill(s.begin(), s.end(), '\0');
  s.clear();
}
}  // namespace

AuthWorker::AuthWorker(const CredentialStore* store, size_t max_pending)
    : store_(store), max_pending_(max_pending), thread_([this] { run(); }) {}

AuthWorker::~AuthWorker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    for (Job& j : jobs_) {
      wipe(j.password);
    }
    jobs_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

bool AuthWorker::submit(std::string user, std::string password, Done done) {
  {
    std::lock_guard lock(mu_);
    if (stop_ || jobs_.size() >= max_pending_) {
      wipe(password);
      return false;
    }
    jobs_.push_back(Job{std::move(user), std::move(password), std::move(done)});
  }
  cv_.notify_one();
  return true;
}

size_t AuthWorker::cancel_pending() {
  std::lock_guard lock(mu_);
  size_t n = jobs_.size();
  for (Job& j : jobs_) {
    wipe(j.password);
  }
  jobs_.clear();
  return n;
}

void AuthWorker::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) {
        return;
      }
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    bool ok = store_->verify(job.user, job.password);
    wipe(job.password);
    job.done(ok);
  }
}

// ---------------------------------------------------------------------------
// AuthFailureLimiter

bool AuthFailureLimiter::blocked(const std::string& addr, TimePoint now) {
  auto it = entries_.find(addr);
  if (it == entries_.end()) {
    // Fail closed: with the table full of live windows, an address we
    // cannot track may not try.
    return entries_.size() >= kMaxTracked && !make_room(now);
  }
  Entry& e = it->second;
  if (now >= e.start + window_) {
    if (e.pending == 0) {
      entries_.erase(it);
      return false;
    }
    e.start = now;
    e.failures = 0;
  }
  return e.failures + e.pending >= limit_;
}

AuthFailureLimiter::Entry* AuthFailureLimiter::entry(const std::string& addr, TimePoint now) {
  auto it = entries_.find(addr);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxTracked && !make_room(now)) {
      return nullptr;
    }
    return &entries_.emplace(addr, Entry{now, 0, 0}).first->second;
  }
  Entry& e = it->second;
  if (now >= e.start + window_) {
    e.start = now;
    e.failures = 0;
  }
  return &e;
}

bool AuthFailureLimiter::begin(const std::string& addr, TimePoint now) {
  if (blocked(addr, now)) {
    return false;
  }
  Entry* e = entry(addr, now);
  if (e == nullptr) {
    return false;
  }
  ++e->pending;
  return true;
}

void AuthFailureLimiter::end(const std::string& addr, TimePoint now, bool failed) {
  Entry* e = entry(addr, now);  // an entry with pending checks is never dropped
  if (e == nullptr) {
    return;
  }
  if (e->pending > 0) {
    --e->pending;
  }
  if (failed) {
    ++e->failures;
  }
}

void AuthFailureLimiter::record_failure(const std::string& addr, TimePoint now) {
  Entry* e = entry(addr, now);
  if (e != nullptr) {
    ++e->failures;
  }
}

bool AuthFailureLimiter::make_room(TimePoint now) {
  std::erase_if(entries_, [&](const auto& kv) {
    return kv.second.pending == 0 && now >= kv.second.start + window_;
  });
  return entries_.size() < kMaxTracked;
}

// ---------------------------------------------------------------------------
// Networks

Result<Cidr> parse_cidr(std::string_view text) {
  Cidr c;
  std::string s(text);
  size_t slash = s.find('/');
  std::string ip = s.substr(0, slash);
  if (::inet_pton(AF_INET, ip.c_str(), c.addr.data()) == 1) {
    c.family = AF_INET;
  } else if (::inet_pton(AF_INET6, ip.c_str(), c.addr.data()) == 1) {
    c.family = AF_INET6;
  } else {
    return make_error(Errc::kConfig, "not a CIDR: " + s);
  }
  uint32_t max = c.family == AF_INET ? 32 : 128;
  c.prefix = max;
  if (slash != std::string::npos) {
    std::string p = s.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) {
      return make_error(Errc::kConfig, "not a CIDR: " + s);
    }
    c.prefix = static_cast<uint32_t>(std::stoul(p));
    if (c.prefix > max) {
      return make_error(Errc::kConfig, "prefix too long in " + s);
    }
  }
  return c;
}

namespace {

// The address bytes to match, with IPv4-mapped IPv6 turned into IPv4.
int address_bytes(const sockaddr_storage& addr, const uint8_t** bytes) {
  if (addr.ss_family == AF_INET) {
    *bytes = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr.s_addr);
    return AF_INET;
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
      *bytes = a6->s6_addr + 12;
      return AF_INET;
    }
    *bytes = a6->s6_addr;
    return AF_INET6;
  }
  *bytes = nullptr;
  return AF_UNSPEC;
}

}  // namespace

bool cidr_contains(const Cidr& net, const sockaddr_storage& addr) {
  const uint8_t* b = nullptr;
  if (address_bytes(addr, &b) != net.family) {
    return false;
  }
  uint32_t bits = net.prefix;
  for (size_t i = 0; bits > 0; ++i) {
    uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((b[i] & mask) != (net.addr[i] & mask)) {
      return false;
    }
    bits = bits >= 8 ? bits - 8 : 0;
  }
  return true;
}

std::string client_key(const sockaddr_storage& addr) {
  const uint8_t* b = nullptr;
  int family = address_bytes(addr, &b);
  char text[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    ::inet_ntop(AF_INET, b, text, sizeof text);
    return text;
  }
  if (family == AF_INET6) {
    uint8_t net[16] = {};
    std::memcpy(net, b, 8);
    ::inet_ntop(AF_INET6, net, text, sizeof text);
    return std::string(text) + "/64";
  }
  return "?";
}

}  // namespace ringmail::engine
