// DkimSigner with keys minted by wolfSSL in the test, checked by a small
// verifier written here from RFC 6376 6.1 (parse the tags of the emitted
// field, rebuild the hash input from the message as a receiver would,
// verify with the public key of dns_record()). The independent check is
// tests/e2e/dkim_verify_test.cc (dkimpy).
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
// clang-format on

#include "engine/dkim.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "proto/dkim.h"

namespace ringmail::engine {
namespace {

// ---------------------------------------------------------------------------
// Keys minted with wolfSSL

std::string der_to_pem(const std::vector<byte>& der, int type) {
  std::string pem(der.size() * 2 + 256, '\0');
  int n = wc_DerToPem(der.data(), static_cast<word32>(der.size()),
                      reinterpret_cast<byte*>(pem.data()), static_cast<word32>(pem.size()), type);
  EXPECT_GT(n, 0);
  pem.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return pem;
}

struct Rng {
  Rng() { EXPECT_EQ(wc_InitRng(&rng), 0); }
  ~Rng() { wc_FreeRng(&rng); }
  WC_RNG rng;
};

std::string make_rsa_pem(int bits) {
  Rng r;
  RsaKey key;
  wc_InitRsaKey(&key, nullptr);
  EXPECT_EQ(wc_MakeRsaKey(&key, bits, WC_RSA_EXPONENT, &r.rng), 0);
  std::vector<byte> der(8192);
  int n = wc_RsaKeyToDer(&key, der.data(), static_cast<word32>(der.size()));
  EXPECT_GT(n, 0);
  der.resize(static_cast<size_t>(n));
  wc_FreeRsaKey(&key);
  return der_to_pem(der, PRIVATEKEY_TYPE);  // "RSA PRIVATE KEY" (PKCS#1)
}

std::string make_ed25519_pem(bool with_public) {
  Rng r;
  ed25519_key key;
  wc_ed25519_init(&key);
  EXPECT_EQ(wc_ed25519_make_key(&r.rng, ED25519_KEY_SIZE, &key), 0);
  std::vector<byte> der(256);
  int n = with_public
              ? wc_Ed25519KeyToDer(&key, der.data(), static_cast<word32>(der.size()))
              : wc_Ed25519PrivateKeyToDer(&key, der.data(), static_cast<word32>(der.size()));
  EXPECT_GT(n, 0);
  der.resize(static_cast<size_t>(n));
  wc_ed25519_free(&key);
  return der_to_pem(der, ED25519_TYPE);  // PKCS#8 "PRIVATE KEY"
}

const std::string& rsa1024() {
  static const std::string pem = make_rsa_pem(1024);
  return pem;
}
const std::string& ed25519() {
  static const std::string pem = make_ed25519_pem(false);
  return pem;
}

std::unique_ptr<DkimPrivateKey> load(const std::string& pem) {
  auto k = DkimPrivateKey::from_pem(pem, "test");
  EXPECT_TRUE(k.ok()) << (k.ok() ? "" : k.error().message);
  return k.ok() ? std::move(*k) : nullptr;
}

DkimSigner::Key signer_key(std::string domain, std::string selector, const std::string& pem,
                           proto::CanonPair canon = {}) {
  DkimSigner::Key k;
  k.domain = std::move(domain);
  k.selector = std::move(selector);
  k.canon = canon;
  k.headers.emplace_back("From");
  for (std::string_view h : proto::kDefaultSignedHeaders) {
    k.headers.emplace_back(h);
  }
  k.oversign.emplace_back("From");
  k.key = load(pem);
  return k;
}

// ---------------------------------------------------------------------------
// A small verifier (RFC 6376 6.1.3), independent of the signer's code paths
// except for the proto canonicalisation functions.

std::string lower(std::string_view s) {
  std::string out;
  for (char c : s) {
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::map<std::string, std::string> parse_tags(std::string_view value) {
  std::map<std::string, std::string> tags;
  std::string v;
  for (char c : value) {
    if (c != '\r' && c != '\n') {
      v.push_back(c);
    }
  }
  size_t pos = 0;
  while (pos < v.size()) {
    size_t semi = v.find(';', pos);
    std::string spec = v.substr(pos, semi == std::string::npos ? std::string::npos : semi - pos);
    pos = semi == std::string::npos ? v.size() : semi + 1;
    size_t eq = spec.find('=');
    if (eq == std::string::npos) {
      continue;
    }
    auto trim = [](std::string s) {
      std::string out;
      for (char c : s) {
        if (c != ' ' && c != '\t') {
          out.push_back(c);
        }
      }
      return out;
    };
    tags[trim(spec.substr(0, eq))] = trim(spec.substr(eq + 1));
  }
  return tags;
}

// Verifies every DKIM-Signature of `msg` against `records` (selector ->
// "v=DKIM1; k=...; p=..."). Returns the number of valid signatures; the
// reasons for invalid ones go to `why` when given.
int verify_all(std::string_view msg, const std::map<std::string, std::string>& records,
               std::vector<std::string>* why = nullptr) {
  std::vector<std::string> local;
  if (why == nullptr) {
    why = &local;
  }
  auto split = proto::split_header(msg);
  EXPECT_TRUE(split.ok());
  if (!split.ok()) {
    return 0;
  }
  int good = 0;
  for (const proto::HeaderField& f : split->fields) {
    if (lower(f.name) != "dkim-signature") {
      continue;
    }
    std::string_view value = f.raw.substr(f.raw.find(':') + 1);
    auto tags = parse_tags(value);
    auto canon = proto::parse_canonicalization(tags["c"]);
    EXPECT_TRUE(canon.ok());
    // Body hash.
    WolfSha256 sha;
    proto::BodyCanonicalizer bc(canon->body, &sha);
    std::string_view body = msg.substr(split->body_offset);
    if (tags.count("l")) {
      std::string canonical;
      struct Rec final : proto::Sha256 {
        std::string* s;
        void update(std::string_view b) override { s->append(b); }
        Digest finish() override { return {}; }
      } rec;
      rec.s = &canonical;
      proto::BodyCanonicalizer full(canon->body, &rec);
      full.update(body);
      full.finish();
      canonical.resize(std::min<size_t>(canonical.size(), std::stoull(tags["l"])));
      sha.update(canonical);
    } else {
      bc.update(body);
      bc.finish();
    }
    auto d = sha.finish();
    if (proto::base64(d) != tags["bh"]) {
      why->push_back("body hash mismatch for s=" + tags["s"]);
      continue;
    }
    // Header hash: h= bottom-up, then this field with b= emptied, no CRLF.
    std::map<std::string, size_t> used;  // lower name -> instances consumed
    std::string input;
    std::string h = tags["h"];
    size_t pos = 0;
    while (pos <= h.size()) {
      size_t colon = h.find(':', pos);
      std::string name =
          h.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
      pos = colon == std::string::npos ? h.size() + 1 : colon + 1;
      std::string lname = lower(name);
      size_t skip = used[lname]++;
      for (size_t i = split->fields.size(); i-- > 0;) {
        if (lower(split->fields[i].name) == lname && skip-- == 0) {
          proto::append_canonical_header(canon->header, split->fields[i].raw, input);
          break;
        }
      }
    }
    std::string raw(f.raw);
    size_t b = raw.rfind("b=");
    std::string stripped = raw.substr(0, b + 2) + "\r\n";
    std::string self;
    proto::append_canonical_header(canon->header, stripped, self);
    self.resize(self.size() - 2);
    input += self;
    sha.update(input);
    auto digest = sha.finish();
    auto sig = proto::base64_decode(tags["b"]);
    EXPECT_TRUE(sig.ok());
    auto rec_it = records.find(tags["s"]);
    if (rec_it == records.end()) {
      why->push_back("no key record for s=" + tags["s"]);
      continue;
    }
    auto rtags = parse_tags(rec_it->second);
    auto pub = proto::base64_decode(rtags["p"]);
    EXPECT_TRUE(pub.ok());
    bool ok = false;
    if (tags["a"] == "rsa-sha256") {
      EXPECT_EQ(rtags["k"], "rsa");
      RsaKey key;
      wc_InitRsaKey(&key, nullptr);
      word32 idx = 0;
      EXPECT_EQ(wc_RsaPublicKeyDecode(reinterpret_cast<const byte*>(pub->data()), &idx, &key,
                                      static_cast<word32>(pub->size())),
                0);
      std::string buf = *sig;
      byte* out = nullptr;
      int n = wc_RsaSSL_VerifyInline(reinterpret_cast<byte*>(buf.data()),
                                     static_cast<word32>(buf.size()), &out, &key);
      byte info[64];
      word32 info_len =
          wc_EncodeSignature(info, digest.data(), 32, wc_GetCTC_HashOID(WC_HASH_TYPE_SHA256));
      ok = n == static_cast<int>(info_len) && std::memcmp(out, info, info_len) == 0;
      wc_FreeRsaKey(&key);
    } else if (tags["a"] == "ed25519-sha256") {
      EXPECT_EQ(rtags["k"], "ed25519");
      ed25519_key key;
      wc_ed25519_init(&key);
      EXPECT_EQ(wc_ed25519_import_public(reinterpret_cast<const byte*>(pub->data()),
                                         static_cast<word32>(pub->size()), &key),
                0);
      int res = 0;
      int rc =
          wc_ed25519_verify_msg(reinterpret_cast<const byte*>(sig->data()),
                                static_cast<word32>(sig->size()), digest.data(), 32, &res, &key);
      ok = rc == 0 && res == 1;
      wc_ed25519_free(&key);
    }
    if (ok) {
      ++good;
    } else {
      why->push_back("signature does not verify: a=" + tags["a"] + " s=" + tags["s"]);
    }
  }
  return good;
}

const std::string kMessage =
    "From: News <news@example.com>\r\n"
    "To: reader@example.net\r\n"
    "Subject:  Folded\r\n"
    "  subject line \t\r\n"
    "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <1@example.com>\r\n"
    "X-Not-Signed: x\r\n"
    "\r\n"
    "Body line with trailing space \r\n"
    "caf\xc3\xa9\r\n"
    "\r\n"
    "\r\n";

constexpr int64_t kNow = 1767225600;

TEST(DkimPrivateKey, LoadsRsaAndEd25519) {
  auto rsa = load(rsa1024());
  ASSERT_NE(rsa, nullptr);
  EXPECT_EQ(rsa->algorithm(), DkimAlgorithm::kRsaSha256);
  EXPECT_EQ(rsa->bits(), 1024u);
  EXPECT_EQ(rsa->signature_size(), 128u);
  EXPECT_TRUE(rsa->dns_record().starts_with("v=DKIM1; k=rsa; p=MI"));
  auto ed = load(ed25519());
  ASSERT_NE(ed, nullptr);
  EXPECT_EQ(ed->algorithm(), DkimAlgorithm::kEd25519Sha256);
  EXPECT_EQ(ed->signature_size(), 64u);
  EXPECT_TRUE(ed->dns_record().starts_with("v=DKIM1; k=ed25519; p="));
  EXPECT_EQ(ed->dns_record().size(), std::string("v=DKIM1; k=ed25519; p=").size() + 44);
  // PKCS#8 with the public key included (RFC 8410 v2) loads too.
  auto ed2 = load(make_ed25519_pem(true));
  ASSERT_NE(ed2, nullptr);
}

TEST(DkimPrivateKey, RefusesWhatItCannotUse) {
  EXPECT_FALSE(DkimPrivateKey::from_pem("not a key", "k").ok());
  std::string enc = rsa1024();
  enc.insert(enc.find('\n') + 1, "Proc-Type: 4,ENCRYPTED\n");
  auto e = DkimPrivateKey::from_pem(enc, "k");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("encrypted"), std::string::npos);
  // An ECDSA key is neither RSA nor Ed25519.
  Rng r;
  ecc_key ecc;
  wc_ecc_init(&ecc);
  ASSERT_EQ(wc_ecc_make_key(&r.rng, 32, &ecc), 0);
  std::vector<byte> der(512);
  int n = wc_EccKeyToDer(&ecc, der.data(), static_cast<word32>(der.size()));
  ASSERT_GT(n, 0);
  der.resize(static_cast<size_t>(n));
  wc_ecc_free(&ecc);
  auto ec = DkimPrivateKey::from_pem(der_to_pem(der, ECC_PRIVATEKEY_TYPE), "ec.pem");
  ASSERT_FALSE(ec.ok());
  EXPECT_NE(ec.error().message.find("ec.pem"), std::string::npos);
  EXPECT_FALSE(DkimPrivateKey::from_file("/nonexistent/key.pem").ok());
}

TEST(DkimSigner, SignsWithEveryKeyOfTheFromDomain) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(signer_key("example.com", "rsa", rsa1024()));
  keys.push_back(
      signer_key("example.com", "ed", ed25519(), {proto::Canon::kSimple, proto::Canon::kSimple}));
  keys.push_back(signer_key("other.test", "x", ed25519()));
  auto signer = DkimSigner::from_keys(std::move(keys));
  auto sig = signer->sign(kMessage, kNow);
  ASSERT_TRUE(sig.ok()) << sig.error().message;
  EXPECT_TRUE(sig->starts_with(
      "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=rsa;"));
  EXPECT_NE(sig->find("\r\nDKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple;"),
            std::string::npos);
  EXPECT_NE(sig->find("t=1767225600;"), std::string::npos);
  EXPECT_EQ(sig->find("x="), std::string::npos);
  EXPECT_EQ(sig->find("l="), std::string::npos);
  std::map<std::string, std::string> records = {{"rsa", signer->keys()[0].key->dns_record()},
                                                {"ed", signer->keys()[1].key->dns_record()}};
  EXPECT_EQ(verify_all(*sig + kMessage, records), 2);
  // h= oversigns From and lists only fields that are present.
  EXPECT_NE(sig->find("h=From:From:Subject:Date:To:Message-ID;"), std::string::npos);
}

TEST(DkimSigner, TamperingIsDetected) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(signer_key("example.com", "ed", ed25519()));
  auto signer = DkimSigner::from_keys(std::move(keys));
  auto sig = signer->sign(kMessage, kNow);
  ASSERT_TRUE(sig.ok());
  std::map<std::string, std::string> records = {{"ed", signer->keys()[0].key->dns_record()}};
  std::string msg = *sig + kMessage;
  EXPECT_EQ(verify_all(msg, records), 1);
  // A second From added on top breaks it (From is oversigned).
  std::string extra_from = *sig + "From: evil@attacker.test\r\n" + kMessage;
  std::vector<std::string> why;
  EXPECT_EQ(verify_all(extra_from, records, &why), 0);
  ASSERT_EQ(why.size(), 1u);
  EXPECT_EQ(why[0], "signature does not verify: a=ed25519-sha256 s=ed");
  std::string body_changed = msg;
  body_changed.replace(body_changed.find("Body line"), 4, "B0dy");
  why.clear();
  EXPECT_EQ(verify_all(body_changed, records, &why), 0);
  ASSERT_EQ(why.size(), 1u);
  EXPECT_EQ(why[0], "body hash mismatch for s=ed");
}

TEST(DkimSigner, DomainSelection) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(signer_key("example.com", "a", ed25519()));
  keys.push_back(signer_key("brand.test", "b", ed25519()));
  auto signer = DkimSigner::from_keys(std::move(keys));
  // Unknown From domain: unsigned, not an error.
  auto none = signer->sign("From: a@unknown.test\r\n\r\nx\r\n", kNow);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // Case-insensitive From domain.
  auto upper = signer->sign("From: a@EXAMPLE.com\r\n\r\nx\r\n", kNow);
  ASSERT_TRUE(upper.ok());
  EXPECT_NE(upper->find("d=example.com;"), std::string::npos);
  // A batch option may name another configured domain.
  auto over = signer->sign("From: a@unknown.test\r\n\r\nx\r\n", kNow, "Brand.Test");
  ASSERT_TRUE(over.ok()) << over.error().message;
  EXPECT_NE(over->find("d=brand.test; s=b;"), std::string::npos);
  EXPECT_FALSE(signer->sign("From: a@x.test\r\n\r\nx\r\n", kNow, "nokey.test").ok());
  // No From / two From: an error (the caller decides).
  EXPECT_FALSE(signer->sign("Subject: x\r\n\r\nx\r\n", kNow).ok());
  EXPECT_FALSE(signer->sign("From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n", kNow).ok());
  // An empty signer signs nothing and never fails.
  auto empty = DkimSigner::from_keys({});
  auto e = empty->sign("garbage", kNow);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
}

TEST(DkimSigner, SegmentsGiveTheSameSignatureAsOneBuffer) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(
      signer_key("example.com", "ed", ed25519(), {proto::Canon::kRelaxed, proto::Canon::kSimple}));
  auto signer = DkimSigner::from_keys(std::move(keys));
  auto whole = signer->sign(kMessage, kNow);
  ASSERT_TRUE(whole.ok());
  // Ed25519 is deterministic: every split gives the same field.
  for (size_t a = 0; a <= kMessage.size(); a += 7) {
    for (size_t b = a; b <= kMessage.size(); b += 13) {
      std::string_view m = kMessage;
      std::string_view parts[3] = {m.substr(0, a), m.substr(a, b - a), m.substr(b)};
      auto s = signer->sign(std::span<const std::string_view>(parts, 3), kNow);
      ASSERT_TRUE(s.ok());
      ASSERT_EQ(*s, *whole) << a << " " << b;
    }
  }
}

TEST(DkimSigner, SignOnceBodyHashManyHeaders) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(signer_key("example.com", "rsa", rsa1024()));
  auto signer = DkimSigner::from_keys(std::move(keys));
  std::map<std::string, std::string> records = {{"rsa", signer->keys()[0].key->dns_record()}};
  const std::string body = "shared body\r\n";
  std::string_view body_view = body;
  DkimBodyHashes bh =
      signer->hash_body("example.com", std::span<const std::string_view>(&body_view, 1));
  for (int i = 0; i < 3; ++i) {
    std::string head = "From: a@example.com\r\nList-Unsubscribe: <https://u.test/" +
                       std::to_string(i) + ">\r\n\r\n";
    auto split = proto::split_header(head);
    ASSERT_TRUE(split.ok());
    auto sig = signer->sign_header("example.com", *split, bh, kNow);
    ASSERT_TRUE(sig.ok());
    EXPECT_NE(sig->find("List-Unsubscribe"), std::string::npos);
    EXPECT_EQ(verify_all(*sig + head + body, records), 1);
  }
}

TEST(DkimSigner, ExpiryAndBodyLength) {
  std::vector<DkimSigner::Key> keys;
  DkimSigner::Key k = signer_key("example.com", "ed", ed25519());
  k.expire_s = 86400;
  k.body_length = true;
  keys.push_back(std::move(k));
  auto signer = DkimSigner::from_keys(std::move(keys));
  auto sig = signer->sign(kMessage, kNow);
  ASSERT_TRUE(sig.ok());
  EXPECT_NE(sig->find("x=" + std::to_string(kNow + 86400) + ";"), std::string::npos);
  // Relaxed body "Body line with trailing space\r\ncafé\r\n" = 31 + 7 bytes.
  EXPECT_NE(sig->find("l=38;"), std::string::npos) << *sig;
  std::map<std::string, std::string> records = {{"ed", signer->keys()[0].key->dns_record()}};
  EXPECT_EQ(verify_all(*sig + kMessage, records), 1);
}

TEST(DkimSigner, ConcurrentSigningReusesContexts) {
  std::vector<DkimSigner::Key> keys;
  keys.push_back(signer_key("example.com", "rsa", rsa1024()));
  keys.push_back(signer_key("example.com", "ed", ed25519()));
  auto signer = DkimSigner::from_keys(std::move(keys));
  std::map<std::string, std::string> records = {{"rsa", signer->keys()[0].key->dns_record()},
                                                {"ed", signer->keys()[1].key->dns_record()}};
  constexpr int kThreads = 4;
  constexpr int kEach = 25;
  std::vector<std::string> outs(kThreads * kEach);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string msg = "From: a@example.com\r\nSubject: " + std::to_string(t * 1000 + i) +
                          "\r\n\r\nbody " + std::to_string(i) + "\r\n";
        auto s = signer->sign(msg, kNow);
        outs[t * kEach + i] = s.ok() ? *s + msg : "";
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  for (const std::string& m : outs) {
    ASSERT_FALSE(m.empty());
    ASSERT_EQ(verify_all(m, records), 2);
  }
  for (const auto& k : signer->keys()) {
    EXPECT_LE(k.key->contexts_created_for_test(), size_t{kThreads} + 1);
  }
}

TEST(DkimSigner, CreateFromConfig) {
  char dir_template[] = "/tmp/ringmail-dkim-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  std::ofstream(dir + "/rsa.pem") << rsa1024();
  std::ofstream(dir + "/ed.pem") << ed25519();
  std::vector<DkimKey> cfg(2);
  cfg[0].domain = "example.com";
  cfg[0].selector = "s1";
  cfg[0].key_file = dir + "/rsa.pem";
  cfg[0].canonicalization = "simple/relaxed";
  cfg[0].headers = {"Subject", "To"};
  cfg[1].domain = "example.com";
  cfg[1].selector = "s2";
  cfg[1].key_file = dir + "/ed.pem";
  cfg[1].expire = Millis(3'600'000);
  auto signer = DkimSigner::create(cfg);
  ASSERT_TRUE(signer.ok()) << signer.error().message;
  const auto& keys = (*signer)->keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].headers, (std::vector<std::string>{"From", "Subject", "To"}));
  EXPECT_EQ(keys[0].canon, (proto::CanonPair{proto::Canon::kSimple, proto::Canon::kRelaxed}));
  EXPECT_EQ(keys[1].expire_s, 3600);
  EXPECT_EQ(keys[1].headers.size(), 1 + proto::kDefaultSignedHeaders.size());
  auto recs = (*signer)->dns_records();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_TRUE(recs[0].starts_with("s1._domainkey.example.com. TXT \"v=DKIM1; k=rsa; p="));
  cfg[1].key_file = dir + "/missing.pem";
  auto bad = DkimSigner::create(cfg);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("selector s2"), std::string::npos);
  cfg[1].key_file = dir + "/ed.pem";
  cfg[1].headers = {"Bad:Name"};
  EXPECT_FALSE(DkimSigner::create(cfg).ok());
  std::remove((dir + "/rsa.pem").c_str());
  std::remove((dir + "/ed.pem").c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace ringmail::engine
