// wolfSSL's options.h must come first in every translation unit (struct
// layouts depend on the build's feature macros).
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/sha256.h>
// clang-format on

#include "engine/dkim.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "proto/address.h"

namespace ringmail::engine {
namespace {

static_assert(sizeof(wc_Sha256) <= 512 && alignof(wc_Sha256) <= 16,
              "WolfSha256::state_ must hold a wc_Sha256");

constexpr unsigned kMinRsaBits = 1024;  // RFC 8301 3.2: signers MUST use at least 1024
constexpr unsigned kMaxRsaBits = 4096;  // RFC 8301 3.2: verifiers need not go beyond
constexpr size_t kMaxPemBytes = 64 * 1024;
constexpr size_t kDigestInfoMax = 64;  // DER DigestInfo of a SHA-256 digest: 51 bytes

void wipe(std::string& s) {
  if (!s.empty()) {
    explicit_bzero(s.data(), s.size());
  }
  s.clear();
}

Result<std::string> read_small_file(const std::string& path, size_t max) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(Errc::kIo, path + ": " + std::strerror(errno));
  }
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return make_error(Errc::kIo, path + ": " + std::strerror(e));
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max) {
      ::close(fd);
      wipe(out);
      return make_error(Errc::kLimit, path + ": larger than " + std::to_string(max) + " bytes");
    }
  }
  ::close(fd);
  return out;
}

std::string b64(const unsigned char* p, size_t n) {
  return proto::base64({p, n});
}

}  // namespace

// ---------------------------------------------------------------------------
// SHA-256

WolfSha256::WolfSha256() {
  auto* s = new (state_) wc_Sha256;
  RM_ASSERT(wc_InitSha256(s) == 0);
}

WolfSha256::~WolfSha256() {
  wc_Sha256Free(reinterpret_cast<wc_Sha256*>(state_));
}

void WolfSha256::update(std::string_view bytes) {
  auto* s = reinterpret_cast<wc_Sha256*>(state_);
  // wc_Sha256Update takes a word32 length.
  while (!bytes.empty()) {
    size_t n = std::min<size_t>(bytes.size(), 1u << 30);
    RM_ASSERT(wc_Sha256Update(s, reinterpret_cast<const byte*>(bytes.data()),
                              static_cast<word32>(n)) == 0);
    bytes.remove_prefix(n);
  }
}

proto::Sha256::Digest WolfSha256::finish() {
  Digest d;
  RM_ASSERT(wc_Sha256Final(reinterpret_cast<wc_Sha256*>(state_), d.data()) == 0);  // also resets
  return d;
}

std::string_view dkim_algorithm_name(DkimAlgorithm a) {
  return a == DkimAlgorithm::kRsaSha256 ? "rsa-sha256" : "ed25519-sha256";
}

// ---------------------------------------------------------------------------
// Keys

struct DkimPrivateKey::Context {
  DkimAlgorithm alg;
  RsaKey rsa;
  ed25519_key ed;
  WC_RNG rng;
  bool rsa_init = false;
  bool ed_init = false;
  bool rng_init = false;
};

void DkimPrivateKey::ContextDeleter::operator()(Context* c) const {
  if (c == nullptr) {
    return;
  }
  if (c->rsa_init) {
    wc_FreeRsaKey(&c->rsa);
  }
  if (c->ed_init) {
    wc_ed25519_free(&c->ed);
  }
  if (c->rng_init) {
    wc_FreeRng(&c->rng);
  }
  explicit_bzero(static_cast<void*>(c), sizeof(Context));
  delete c;
}

Result<DkimPrivateKey::ContextPtr> DkimPrivateKey::make_context() const {
  ContextPtr c(new Context());
  c->alg = alg_;
  const auto* der = reinterpret_cast<const byte*>(der_.data());
  if (alg_ == DkimAlgorithm::kRsaSha256) {
    if (wc_InitRsaKey(&c->rsa, nullptr) != 0) {
      return make_error(Errc::kInternal, "wolfSSL: cannot initialise an RSA key");
    }
    c->rsa_init = true;
    word32 idx = 0;
    if (wc_RsaPrivateKeyDecode(der, &idx, &c->rsa, static_cast<word32>(der_.size())) != 0) {
      return make_error(Errc::kInternal, "wolfSSL: cannot decode the RSA key again");
    }
    if (wc_InitRng(&c->rng) != 0) {  // RSA blinding needs one (WC_RSA_BLINDING)
      return make_error(Errc::kInternal, "wolfSSL: cannot initialise a random number generator");
    }
    c->rng_init = true;
  } else {
    if (wc_ed25519_init(&c->ed) != 0) {
      return make_error(Errc::kInternal, "wolfSSL: cannot initialise an Ed25519 key");
    }
    c->ed_init = true;
    if (wc_ed25519_import_private_key(der, ED25519_KEY_SIZE, der + ED25519_KEY_SIZE,
                                      ED25519_PUB_KEY_SIZE, &c->ed) != 0) {
      return make_error(Errc::kInternal, "wolfSSL: cannot import the Ed25519 key");
    }
  }
  std::lock_guard lock(mu_);
  ++created_;
  return c;
}

Result<DkimPrivateKey::ContextPtr> DkimPrivateKey::acquire() const {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      ContextPtr c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  return make_context();
}

void DkimPrivateKey::release(ContextPtr c) const {
  std::lock_guard lock(mu_);
  if (idle_.size() < kMaxIdleContexts) {
    idle_.push_back(std::move(c));
  }
  // else: freed here (outside the pool bound)
}

size_t DkimPrivateKey::contexts_created_for_test() const {
  std::lock_guard lock(mu_);
  return created_;
}

DkimPrivateKey::~DkimPrivateKey() {
  idle_.clear();
  wipe(der_);
}

Result<std::unique_ptr<DkimPrivateKey>> DkimPrivateKey::from_file(const std::string& path) {
  Result<std::string> pem = read_small_file(path, kMaxPemBytes);
  if (!pem.ok()) {
    return make_error(Errc::kConfig, "DKIM key " + pem.error().message);
  }
  auto key = from_pem(*pem, path);
  wipe(*pem);
  return key;
}

Result<std::unique_ptr<DkimPrivateKey>> DkimPrivateKey::from_pem(std::string_view pem,
                                                                 std::string_view origin) {
  auto fail = [&](std::string what) {
    return make_error(Errc::kConfig, "DKIM key " + std::string(origin) + ": " + what);
  };
  if (pem.size() > kMaxPemBytes) {
    return fail("larger than " + std::to_string(kMaxPemBytes) + " bytes");
  }
  if (pem.find("ENCRYPTED") != std::string_view::npos) {
    return fail(
        "encrypted keys are not supported (store it unencrypted, readable by ringmail only)");
  }
  std::string der(pem.size(), '\0');  // DER is always shorter than its PEM
  int n = wc_KeyPemToDer(reinterpret_cast<const unsigned char*>(pem.data()),
                         static_cast<int>(pem.size()), reinterpret_cast<unsigned char*>(der.data()),
                         static_cast<int>(der.size()), nullptr);
  if (n <= 0) {
    return fail("not a PEM private key (wolfSSL error " + std::to_string(n) + ")");
  }
  der.resize(static_cast<size_t>(n));
  std::unique_ptr<DkimPrivateKey> k(new DkimPrivateKey());

  // RSA first (PKCS#1 or PKCS#8); then Ed25519 (PKCS#8, RFC 8410).
  RsaKey rsa;
  if (wc_InitRsaKey(&rsa, nullptr) != 0) {
    wipe(der);
    return fail("wolfSSL cannot initialise an RSA key");
  }
  word32 idx = 0;
  int rc = wc_RsaPrivateKeyDecode(reinterpret_cast<const byte*>(der.data()), &idx, &rsa,
                                  static_cast<word32>(der.size()));
  if (rc == 0) {
    unsigned bits = static_cast<unsigned>(wc_RsaEncryptSize(&rsa)) * 8;
    std::string spki(2048, '\0');
    int pn = wc_RsaKeyToPublicDer(&rsa, reinterpret_cast<byte*>(spki.data()),
                                  static_cast<word32>(spki.size()));
    wc_FreeRsaKey(&rsa);
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      wipe(der);
      return fail("RSA key of " + std::to_string(bits) +
                  " bits; DKIM needs 1024 to 4096 (RFC 8301)");
    }
    if (pn <= 0) {
      wipe(der);
      return fail("cannot encode the RSA public key");
    }
    k->alg_ = DkimAlgorithm::kRsaSha256;
    k->bits_ = bits;
    k->sig_size_ = bits / 8;
    k->der_ = std::move(der);
    k->dns_record_ = "v=DKIM1; k=rsa; p=" +
                     b64(reinterpret_cast<const byte*>(spki.data()), static_cast<size_t>(pn));
  } else {
    wc_FreeRsaKey(&rsa);
    ed25519_key ed;
    if (wc_ed25519_init(&ed) != 0) {
      wipe(der);
      return fail("wolfSSL cannot initialise an Ed25519 key");
    }
    idx = 0;
    rc = wc_Ed25519PrivateKeyDecode(reinterpret_cast<const byte*>(der.data()), &idx, &ed,
                                    static_cast<word32>(der.size()));
    wipe(der);
    if (rc != 0) {
      wc_ed25519_free(&ed);
      return fail("neither an RSA nor an Ed25519 private key");
    }
    // An RFC 8410 PKCS#8 key holds only the seed; wolfSSL signs only with
    // the public half set, so derive it and import both.
    unsigned char seed[ED25519_KEY_SIZE];
    unsigned char pub[ED25519_PUB_KEY_SIZE];
    word32 seed_len = sizeof seed;
    bool ok = wc_ed25519_export_private_only(&ed, seed, &seed_len) == 0 &&
              seed_len == ED25519_KEY_SIZE && wc_ed25519_make_public(&ed, pub, sizeof pub) == 0;
    wc_ed25519_free(&ed);
    if (!ok) {
      explicit_bzero(seed, sizeof seed);
      return fail("cannot derive the Ed25519 public key");
    }
    k->alg_ = DkimAlgorithm::kEd25519Sha256;
    k->bits_ = 256;
    k->sig_size_ = ED25519_SIG_SIZE;
    k->der_.assign(reinterpret_cast<const char*>(seed), sizeof seed);
    k->der_.append(reinterpret_cast<const char*>(pub), sizeof pub);
    explicit_bzero(seed, sizeof seed);
    k->dns_record_ = "v=DKIM1; k=ed25519; p=" + b64(pub, sizeof pub);
  }
  // Decode once more through the context path, so a key that cannot sign
  // fails at start, not on the first message.
  auto c = k->make_context();
  if (!c.ok()) {
    return fail(c.error().message);
  }
  k->release(std::move(*c));
  return k;
}

Result<std::string> DkimPrivateKey::sign(const proto::Sha256::Digest& digest) const {
  auto lease = acquire();
  if (!lease.ok()) {
    return std::move(lease).take_error();
  }
  Context& c = **lease;
  std::string sig(sig_size_, '\0');
  auto* out = reinterpret_cast<byte*>(sig.data());
  int rc = 0;
  if (alg_ == DkimAlgorithm::kRsaSha256) {
    byte info[kDigestInfoMax];
    word32 info_len = wc_EncodeSignature(info, digest.data(), static_cast<word32>(digest.size()),
                                         wc_GetCTC_HashOID(WC_HASH_TYPE_SHA256));
    rc = info_len == 0
             ? -1
             : wc_RsaSSL_Sign(info, info_len, out, static_cast<word32>(sig.size()), &c.rsa, &c.rng);
    if (rc > 0) {
      sig.resize(static_cast<size_t>(rc));
      rc = 0;
    }
  } else {
    word32 len = static_cast<word32>(sig.size());
    rc = wc_ed25519_sign_msg(digest.data(), static_cast<word32>(digest.size()), out, &len, &c.ed);
    sig.resize(len);
  }
  release(std::move(*lease));
  if (rc != 0) {
    return make_error(Errc::kInternal, "wolfSSL " + std::string(dkim_algorithm_name(alg_)) +
                                           " signing failed: error " + std::to_string(rc));
  }
  return sig;
}

// ---------------------------------------------------------------------------
// Signer

namespace {

bool valid_header_name(std::string_view n) {
  return !n.empty() && std::all_of(n.begin(), n.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 33 && u <= 126 && c != ':';
  });
}

size_t canon_index(proto::Canon c) {
  return c == proto::Canon::kSimple ? 0 : 1;
}

}  // namespace

Result<std::shared_ptr<const DkimSigner>> DkimSigner::create(const std::vector<DkimKey>& config) {
  std::vector<Key> keys;
  for (const DkimKey& k : config) {
    std::string where = "dkim (domain " + k.domain + ", selector " + k.selector + "): ";
    Key key;
    key.domain = proto::normalize_domain(k.domain);
    key.selector = k.selector;
    key.key_file = k.key_file;
    auto canon = proto::parse_canonicalization(k.canonicalization);
    if (!canon.ok()) {
      return make_error(Errc::kConfig, where + canon.error().message);
    }
    key.canon = *canon;
    // RFC 6376 5.4: From MUST be signed; it is always first and oversigned.
    key.headers.emplace_back("From");
    if (k.headers.empty()) {
      for (std::string_view h : proto::kDefaultSignedHeaders) {
        key.headers.emplace_back(h);
      }
    }
    for (const std::string& h : k.headers) {
      if (!valid_header_name(h)) {
        return make_error(Errc::kConfig,
                          where + "headers: \"" + h + "\" is not a header field name");
      }
      key.headers.push_back(h);
    }
    key.oversign.emplace_back("From");
    key.expire_s = k.expire.count() / 1000;
    key.body_length = k.body_length;
    auto loaded = DkimPrivateKey::from_file(k.key_file);
    if (!loaded.ok()) {
      return make_error(Errc::kConfig, where + loaded.error().message);
    }
    key.key = std::move(*loaded);
    keys.push_back(std::move(key));
  }
  return from_keys(std::move(keys));
}

std::shared_ptr<const DkimSigner> DkimSigner::from_keys(std::vector<Key> keys) {
  auto s = std::shared_ptr<DkimSigner>(new DkimSigner());
  s->keys_ = std::move(keys);
  return s;
}

bool DkimSigner::signs_for(std::string_view domain) const {
  return std::any_of(keys_.begin(), keys_.end(), [&](const Key& k) { return k.domain == domain; });
}

Result<std::string> DkimSigner::signing_domain(const proto::SplitMessage& msg,
                                               std::string_view override_domain) const {
  if (!override_domain.empty()) {
    std::string d = proto::normalize_domain(override_domain);
    if (!signs_for(d)) {
      return make_error(Errc::kInvalidArgument, "no DKIM key is configured for domain \"" +
                                                    std::string(override_domain) + "\"");
    }
    return d;
  }
  auto from = proto::from_domain(msg);
  if (!from.ok()) {
    return std::move(from).take_error();
  }
  return signs_for(*from) ? std::move(*from) : std::string();
}

DkimBodyHashes DkimSigner::hash_body(std::string_view domain,
                                     std::span<const std::string_view> body) const {
  DkimBodyHashes out;
  for (const Key& k : keys_) {
    if (k.domain != domain || out.have[canon_index(k.canon.body)]) {
      continue;
    }
    size_t i = canon_index(k.canon.body);
    WolfSha256 sha;
    proto::BodyCanonicalizer bc(k.canon.body, &sha);
    for (std::string_view seg : body) {
      bc.update(seg);
    }
    bc.finish();
    out.have[i] = true;
    out.digest[i] = sha.finish();
    out.length[i] = bc.length();
  }
  return out;
}

Result<std::string> DkimSigner::sign_header(std::string_view domain, const proto::SplitMessage& msg,
                                            const DkimBodyHashes& bh, int64_t now_s) const {
  std::string fields;
  WolfSha256 sha;
  for (const Key& k : keys_) {
    if (k.domain != domain) {
      continue;
    }
    size_t bi = canon_index(k.canon.body);
    RM_ASSERT(bh.have[bi]);  // hash_body() ran for this domain
    proto::SignedHeaders sh =
        proto::select_signed_headers(msg, k.headers, k.oversign, k.canon.header);
    std::string body_hash = proto::base64(bh.digest[bi]);
    proto::SignatureParams p;
    p.algorithm = dkim_algorithm_name(k.key->algorithm());
    p.canon = k.canon;
    p.domain = k.domain;
    p.selector = k.selector;
    p.timestamp = now_s;
    p.expiration = k.expire_s > 0 ? now_s + k.expire_s : -1;
    if (k.body_length) {
      p.body_length = bh.length[bi];
    }
    p.headers = sh.h;
    p.body_hash = body_hash;
    proto::SignatureHeader header(p);
    sha.update(sh.canonical);
    sha.update(header.canonical_unsigned(k.canon.header));
    auto sig = k.key->sign(sha.finish());
    if (!sig.ok()) {
      return std::move(sig).take_error();
    }
    std::string_view s = *sig;
    fields += header.finish(proto::base64({reinterpret_cast<const uint8_t*>(s.data()), s.size()}));
  }
  return fields;
}

Result<std::string> DkimSigner::sign(std::span<const std::string_view> message, int64_t now_s,
                                     std::string_view override_domain) const {
  if (keys_.empty()) {
    return std::string();
  }
  // Gather the header section (it may span segments); the body stays where it is.
  const proto::HeaderLimits limits;
  std::string head;
  size_t seg = 0;
  size_t body_off = 0;  // offset of the body within message[seg]
  bool found = false;
  for (; seg < message.size(); ++seg) {
    size_t before = head.size();
    head.append(message[seg]);
    size_t end = std::string::npos;
    if (head.starts_with("\r\n")) {
      end = 2;
    } else {
      size_t p = head.find("\r\n\r\n", before >= 3 ? before - 3 : 0);
      end = p == std::string::npos ? p : p + 4;
    }
    if (end != std::string::npos) {
      head.resize(end);
      body_off = end - before;
      found = true;
      break;
    }
    if (head.size() > limits.max_section) {
      return make_error(Errc::kLimit, "header section is larger than " +
                                          std::to_string(limits.max_section) + " bytes");
    }
  }
  auto split = proto::split_header(head, limits);
  if (!split.ok()) {
    return std::move(split).take_error();
  }
  auto domain = signing_domain(*split, override_domain);
  if (!domain.ok()) {
    return std::move(domain).take_error();
  }
  if (domain->empty()) {
    return std::string();
  }
  std::vector<std::string_view> body;
  if (found) {
    body.push_back(message[seg].substr(body_off));
    for (size_t i = seg + 1; i < message.size(); ++i) {
      body.push_back(message[i]);
    }
  }
  DkimBodyHashes bh = hash_body(*domain, body);
  return sign_header(*domain, *split, bh, now_s);
}

std::vector<std::string> DkimSigner::dns_records() const {
  std::vector<std::string> out;
  for (const Key& k : keys_) {
    out.push_back(k.selector + "._domainkey." + k.domain + ". TXT \"" + k.key->dns_record() + "\"");
  }
  return out;
}

}  // namespace ringmail::engine
