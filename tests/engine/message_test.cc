// Message: the DKIM-Signature segment is signed once at creation and sent
// before the shared body, by reference, in both wire forms.
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/random.h>
// clang-format on

#include "engine/message.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/dkim.h"
#include "engine/out_buffer.h"
#include "proto/message_body.h"

namespace ringmail::engine {
namespace {

constexpr int64_t kNow = 1767225600;

std::shared_ptr<const DkimSigner> ed25519_signer(const std::string& domain) {
  WC_RNG rng;
  wc_InitRng(&rng);
  ed25519_key key;
  wc_ed25519_init(&key);
  EXPECT_EQ(wc_ed25519_make_key(&rng, ED25519_KEY_SIZE, &key), 0);
  std::vector<byte> der(128);
  int n = wc_Ed25519PrivateKeyToDer(&key, der.data(), static_cast<word32>(der.size()));
  wc_ed25519_free(&key);
  wc_FreeRng(&rng);
  std::string pem(512, '\0');
  int p = wc_DerToPem(der.data(), static_cast<word32>(n), reinterpret_cast<byte*>(pem.data()),
                      static_cast<word32>(pem.size()), ED25519_TYPE);
  pem.resize(static_cast<size_t>(p));
  auto loaded = DkimPrivateKey::from_pem(pem, "test");
  EXPECT_TRUE(loaded.ok());
  DkimSigner::Key k;
  k.domain = domain;
  k.selector = "sel";
  k.headers = {"From", "Subject", "To"};
  k.oversign = {"From"};
  k.key = std::move(loaded).value();
  std::vector<DkimSigner::Key> keys;
  keys.push_back(std::move(k));
  return DkimSigner::from_keys(std::move(keys));
}

struct Wire {
  std::string bytes;
  std::vector<iovec> iov;
};

Wire wire(const MessageRef& m, bool stuffed) {
  OutBuffer out;
  m->append_wire(out, stuffed, m, {});
  SendBatch b;
  out.take(&b);
  Wire w;
  w.iov = b.iov();
  for (const iovec& v : w.iov) {
    w.bytes.append(static_cast<const char*>(v.iov_base), v.iov_len);
  }
  return w;
}

MessageRef make(std::string_view raw, const DkimSigner* signer, std::string domain = {}) {
  MessageInit mi;
  mi.raw = raw;
  mi.dkim = signer;
  mi.dkim_domain = std::move(domain);
  mi.dkim_time_s = kNow;
  return Message::create(std::move(mi));
}

TEST(Message, UnsignedIsTheBodyAlone) {
  MessageRef m = make("From: a@example.com\r\n\r\nbody\r\n", nullptr);
  EXPECT_TRUE(m->dkim_signature().empty());
  Wire w = wire(m, false);
  ASSERT_EQ(w.iov.size(), 1u);
  EXPECT_EQ(w.iov[0].iov_base, m->bdat_body().data());
  EXPECT_EQ(m->wire_size({}), m->size());
}

TEST(Message, SignatureIsItsOwnSegmentBeforeTheSharedBody) {
  auto signer = ed25519_signer("example.com");
  // LF line ends and a dotted line: signed in normalised form, stuffed for DATA.
  const std::string raw = "From: a@example.com\nSubject: hi\n\n.dot line\nend\n";
  MessageRef m = make(raw, signer.get());
  ASSERT_TRUE(m->dkim_error().empty()) << m->dkim_error();
  ASSERT_FALSE(m->dkim_signature().empty());
  // Ed25519 is deterministic: the signature is the signer's over the normalised bytes.
  std::string normalised;
  proto::normalize_body(raw, normalised);
  auto again = signer->sign(normalised, kNow);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(m->dkim_signature(), *again);

  Wire bdat = wire(m, false);
  ASSERT_EQ(bdat.iov.size(), 2u);
  EXPECT_EQ(bdat.iov[0].iov_base, m->dkim_signature().data());  // no copies
  EXPECT_EQ(bdat.iov[1].iov_base, m->bdat_body().data());
  EXPECT_EQ(bdat.bytes, *again + normalised);
  EXPECT_EQ(m->wire_size({}), bdat.bytes.size());

  Wire data = wire(m, true);
  ASSERT_EQ(data.iov.size(), 2u);
  EXPECT_EQ(data.iov[0].iov_base, m->dkim_signature().data());
  EXPECT_EQ(data.iov[1].iov_base, m->data_body().data());
  EXPECT_NE(data.bytes.find("\r\n..dot line\r\n"), std::string::npos);
  EXPECT_EQ(proto::dot_unstuff(data.bytes), bdat.bytes);  // what the receiver stores
  EXPECT_GE(m->footprint(), m->size() + m->dkim_signature().size());
}

TEST(Message, ManyConnectionsShareOneSignature) {
  auto signer = ed25519_signer("example.com");
  MessageRef m = make("From: a@example.com\r\n\r\nx\r\n", signer.get());
  Wire a = wire(m, false);
  Wire b = wire(m, true);
  EXPECT_EQ(a.iov[0].iov_base, b.iov[0].iov_base);
}

TEST(Message, SigningFailuresAreReportedNotSent) {
  auto signer = ed25519_signer("example.com");
  MessageRef no_from = make("Subject: x\r\n\r\nbody\r\n", signer.get());
  EXPECT_NE(no_from->dkim_error().find("no From"), std::string::npos);
  EXPECT_TRUE(no_from->dkim_signature().empty());
  EXPECT_EQ(wire(no_from, false).bytes, "Subject: x\r\n\r\nbody\r\n");
  MessageRef unknown = make("From: a@example.com\r\n\r\nbody\r\n", signer.get(), "other.test");
  EXPECT_FALSE(unknown->dkim_error().empty());
  // A From domain without a key: unsigned, and not an error.
  MessageRef other = make("From: a@other.test\r\n\r\nbody\r\n", signer.get());
  EXPECT_TRUE(other->dkim_error().empty());
  EXPECT_TRUE(other->dkim_signature().empty());
  // The batch option picks a configured domain for another From.
  MessageRef chosen = make("From: a@other.test\r\n\r\nbody\r\n", signer.get(), "example.com");
  EXPECT_NE(chosen->dkim_signature().find("d=example.com;"), std::string::npos);
}

}  // namespace
}  // namespace ringmail::engine
