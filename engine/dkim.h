/// dkim.h — DKIM signing with wolfSSL: rsa-sha256 (RFC 6376, RFC 8301:
/// 1024-4096-bit keys) and ed25519-sha256 (RFC 8463).
///
/// A DkimSigner is built once from the [[dkim]] tables (engine/config.h):
/// it loads every key, and groups the keys by signing domain (d=). A
/// message is signed by every key of its domain (the From domain, or a
/// domain the caller names), so an RSA key and an Ed25519 key of one
/// domain give two signatures. The result is the DKIM-Signature field(s),
/// CRLF-terminated, to send before the message: the message bytes are
/// never copied or changed (engine/message.h sends the fields as their own
/// segment before the shared body).
///
/// Sign once: hash_body() and sign_header() split the work so that a body
/// shared by many rendered messages (personalised headers only) is
/// canonicalised and hashed once; sign() does both for one message.
///
/// Thread safety: a DkimSigner is immutable after create(); any thread may
/// sign with it concurrently. wolfSSL key objects are not reentrant (an
/// RsaKey keeps operation state, RSA blinding needs an RNG per user), so
/// each DkimPrivateKey keeps a small pool of per-user contexts (decoded key
/// + RNG): a signer takes one for the duration of one signature under a
/// mutex held for a pointer swap, creating one when none is idle. The pool
/// holds at most kMaxIdleContexts idle contexts; more concurrent signers
/// than that create and free contexts (slower, still correct).
/// Lifetime: share it with std::shared_ptr; it must outlive its users.
/// Diagnostics: create() fails, naming the key file, on unreadable,
/// encrypted or unsupported keys and RSA sizes outside 1024-4096 bits.
/// See also: proto/dkim.h (canonicalisation, header text), docs/benchmarks.md.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "proto/dkim.h"
#include "proto/result.h"

namespace ringmail::engine {

/// proto::Sha256 over wolfSSL's wc_Sha256. One thread at a time.
class WolfSha256 final : public proto::Sha256 {
 public:
  WolfSha256();
  ~WolfSha256() override;
  WolfSha256(const WolfSha256&) = delete;
  WolfSha256& operator=(const WolfSha256&) = delete;
  void update(std::string_view bytes) override;
  Digest finish() override;

 private:
  alignas(16) unsigned char state_[512];  // wc_Sha256, opaque here (see the .cc)
};

enum class DkimAlgorithm : uint8_t { kRsaSha256, kEd25519Sha256 };
std::string_view dkim_algorithm_name(DkimAlgorithm a);  // the a= value

/// A private signing key. Thread-safe (see the module comment).
class DkimPrivateKey {
 public:
  static constexpr size_t kMaxIdleContexts = 64;

  /// Parses an unencrypted PEM private key: RSA (PKCS#1 "RSA PRIVATE KEY" or
  /// PKCS#8 "PRIVATE KEY", 1024-4096 bits) or Ed25519 (PKCS#8). `origin`
  /// names the source in errors.
  static Result<std::unique_ptr<DkimPrivateKey>> from_pem(std::string_view pem,
                                                          std::string_view origin);
  static Result<std::unique_ptr<DkimPrivateKey>> from_file(const std::string& path);
  ~DkimPrivateKey();
  DkimPrivateKey(const DkimPrivateKey&) = delete;
  DkimPrivateKey& operator=(const DkimPrivateKey&) = delete;

  DkimAlgorithm algorithm() const { return alg_; }
  /// RSA modulus bits, or 256 for Ed25519.
  unsigned bits() const { return bits_; }
  /// Signature size in bytes (RSA: modulus size; Ed25519: 64).
  size_t signature_size() const { return sig_size_; }

  /// Signs a SHA-256 digest of the canonical header data: RSA PKCS#1 v1.5
  /// over the DER DigestInfo (RFC 8017 9.2); Ed25519 PureEdDSA over the 32
  /// digest bytes (RFC 8463 3: the hash is what is signed). Errors only on
  /// wolfSSL failures (out of memory, RNG failure).
  Result<std::string> sign(const proto::Sha256::Digest& digest) const;

  /// The public key as a DKIM key record (RFC 6376 3.6.1):
  /// "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" or
  /// "v=DKIM1; k=ed25519; p=<base64 32-byte key>" (RFC 8463 4).
  const std::string& dns_record() const { return dns_record_; }

  /// Contexts created so far (tests: the pool is reused).
  size_t contexts_created_for_test() const;

 private:
  struct Context;
  struct ContextDeleter {
    void operator()(Context* c) const;
  };
  using ContextPtr = std::unique_ptr<Context, ContextDeleter>;

  DkimPrivateKey() = default;
  Result<ContextPtr> make_context() const;
  Result<ContextPtr> acquire() const;
  void release(ContextPtr c) const;

  DkimAlgorithm alg_ = DkimAlgorithm::kRsaSha256;
  unsigned bits_ = 0;
  size_t sig_size_ = 0;
  std::string der_;  // RSA: the private key DER; Ed25519: seed (32) + public key (32)
  std::string dns_record_;
  mutable std::mutex mu_;
  mutable std::vector<ContextPtr> idle_;
  mutable size_t created_ = 0;
};

/// Body hashes of one body, per body canonicalisation, for the keys that
/// need them (sign once, sign_header() many times).
struct DkimBodyHashes {
  bool have[2] = {false, false};  // index: proto::Canon
  proto::Sha256::Digest digest[2]{};
  uint64_t length[2] = {0, 0};  // canonical length (l=)
};

class DkimSigner {
 public:
  /// One configured key, ready to sign.
  struct Key {
    std::string domain;
    std::string selector;
    std::string key_file;
    proto::CanonPair canon;
    std::vector<std::string> headers;   // signed header names, From first
    std::vector<std::string> oversign;  // names listed once more than present
    int64_t expire_s = 0;               // x= = t= + this; 0 = no x=
    bool body_length = false;           // l=
    std::unique_ptr<DkimPrivateKey> key;
  };

  /// Loads every [[dkim]] key. A config without keys gives a signer that
  /// signs nothing. Errors name the table's domain/selector and the file.
  static Result<std::shared_ptr<const DkimSigner>> create(const std::vector<DkimKey>& config);
  /// Test/embedding form: keys already loaded.
  static std::shared_ptr<const DkimSigner> from_keys(std::vector<Key> keys);

  bool empty() const { return keys_.empty(); }
  /// True when some key signs for `domain` (lower-case).
  bool signs_for(std::string_view domain) const;

  /// The signing domain for a message: `override_domain` when not empty
  /// (a batch option; must be a configured domain), else the From domain.
  /// Returns "" when no key signs for the From domain (send unsigned).
  /// Errors: a malformed header section, no/several From fields (only when
  /// no override), an override naming no configured domain.
  Result<std::string> signing_domain(const proto::SplitMessage& msg,
                                     std::string_view override_domain) const;

  /// Hashes a body (given as consecutive segments) for the keys of `domain`.
  DkimBodyHashes hash_body(std::string_view domain, std::span<const std::string_view> body) const;

  /// The DKIM-Signature fields (each ending CRLF, first key of the config
  /// on top) for a message whose header section is `msg` and whose body
  /// hashes are `bh`, signed at `now_s` (t=). Empty when no key signs for
  /// `domain`.
  Result<std::string> sign_header(std::string_view domain, const proto::SplitMessage& msg,
                                  const DkimBodyHashes& bh, int64_t now_s) const;

  /// Everything at once for a message given as consecutive segments (the
  /// header section may span segments; at most HeaderLimits::max_section
  /// of it is copied). Empty result: no key for the signing domain.
  Result<std::string> sign(std::span<const std::string_view> message, int64_t now_s,
                           std::string_view override_domain = {}) const;
  Result<std::string> sign(std::string_view message, int64_t now_s,
                           std::string_view override_domain = {}) const {
    return sign(std::span<const std::string_view>(&message, 1), now_s, override_domain);
  }

  /// "selector._domainkey.domain. TXT ..." lines for every key (operators
  /// publish these; ringmail-ctl can print them).
  std::vector<std::string> dns_records() const;
  const std::vector<Key>& keys() const { return keys_; }

 private:
  std::vector<Key> keys_;
};

}  // namespace ringmail::engine
