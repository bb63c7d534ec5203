// TLS contexts and memory-buffer channels over wolfSSL (see tls.h).
// <wolfssl/options.h> must precede every other wolfSSL header: it carries
// the build's feature macros, and struct layouts depend on them.
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>

#include "engine/tls.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "engine/log.h"

namespace ringmail::engine {

// ChaCha20-Poly1305 first: Debian's wolfSSL 5.5.4 is built without AES-NI,
// and on this project's machines its C AES-128-GCM runs at ~96 MB/s against
// ~160 MB/s for ChaCha20-Poly1305 (encrypt side, 16 KiB records). Peers
// honour the client's order in TLS 1.3, so this is what our CPU pays.
const char* const kCipherList =
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

namespace {

// wolfSSL_Init once per process; never cleaned up (contexts may live until exit).
void init_wolfssl() {
  static std::once_flag once;
  std::call_once(once, [] { wolfSSL_Init(); });
}

// The reason for a failed load: wolfSSL's error queue, as the load
// functions themselves only say "failure".
std::string load_error_text(int rc) {
  unsigned long e = wolfSSL_ERR_get_error();
  if (rc < 0) {
    e = static_cast<unsigned long>(rc);
  }
  if (e == 0) {
    return "missing, unreadable or not PEM";
  }
  char buf[WOLFSSL_MAX_ERROR_SZ] = {};
  wolfSSL_ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string wolf_error_text(int code) {
  char buf[WOLFSSL_MAX_ERROR_SZ] = {};
  wolfSSL_ERR_error_string_n(static_cast<unsigned long>(code), buf, sizeof buf);
  std::string s = buf;
  // wolfSSL prefixes "error:<code>:..." in OpenSSL-compatible builds; keep
  // the human part when it is there.
  size_t colon = s.rfind(':');
  if (s.rfind("error:", 0) == 0 && colon != std::string::npos && colon + 1 < s.size()) {
    s = s.substr(colon + 1);
  }
  return s + " (" + std::to_string(code) + ")";
}

bool is_address_literal(std::string_view name) {
  std::string n(name);
  in_addr a4;
  in6_addr a6;
  return ::inet_pton(AF_INET, n.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, n.c_str(), &a6) == 1;
}

Result<WOLFSSL_CTX*> new_context(const TlsConfig& cfg, bool server) {
  init_wolfssl();
  WOLFSSL_CTX* ctx =
      wolfSSL_CTX_new(server ? wolfSSLv23_server_method() : wolfSSLv23_client_method());
  if (ctx == nullptr) {
    return make_error(Errc::kInternal, "wolfSSL_CTX_new failed");
  }
  int floor = cfg.min_version == "1.3" ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2;
  if (wolfSSL_CTX_SetMinVersion(ctx, floor) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set_cipher_list(ctx, kCipherList) != WOLFSSL_SUCCESS) {
    wolfSSL_CTX_free(ctx);
    return make_error(Errc::kInternal, "wolfSSL refused the TLS version floor or cipher list");
  }
  wolfSSL_CTX_SetIORecv(ctx, nullptr);  // set per channel (wolfSSL_SSLSetIORecv)
  wolfSSL_CTX_SetIOSend(ctx, nullptr);
  return ctx;
}

}  // namespace

void TlsSessionFree::operator()(WOLFSSL_SESSION* s) const {
  wolfSSL_SESSION_free(s);
}

// ---------------------------------------------------------------------------
// TlsContext

Result<std::unique_ptr<TlsContext>> TlsContext::client(const TlsConfig& cfg) {
  auto ctx = new_context(cfg, false);
  RM_TRY(ctx);
  std::unique_ptr<TlsContext> c(new TlsContext(*ctx, false));
  // The client keeps its own per-destination cache (TlsClient); wolfSSL's
  // process-wide cache would only add a lock shared by every shard.
  wolfSSL_CTX_set_session_cache_mode(*ctx, WOLFSSL_SESS_CACHE_NO_INTERNAL);
  wolfSSL_CTX_set_verify(*ctx, WOLFSSL_VERIFY_NONE, nullptr);  // per channel
  wolfSSL_ERR_clear_error();
  int rc = cfg.ca_file.empty()
               ? wolfSSL_CTX_load_system_CA_certs(*ctx)
               : wolfSSL_CTX_load_verify_locations(*ctx, cfg.ca_file.c_str(), nullptr);
  if (rc != WOLFSSL_SUCCESS) {
    c->ca_error_ = "cannot load the CA bundle " +
                   (cfg.ca_file.empty() ? std::string("(system store)") : cfg.ca_file) +
                   " (tls.ca_file): " + load_error_text(rc);
    RM_LOG_WARN("%s; TLS policy \"verify\" will defer", c->ca_error_.c_str());
  }
  return c;
}

Result<std::unique_ptr<TlsContext>> TlsContext::server(const TlsConfig& cfg,
                                                       const std::string& cert_file,
                                                       const std::string& key_file) {
  auto ctx = new_context(cfg, true);
  RM_TRY(ctx);
  std::unique_ptr<TlsContext> c(new TlsContext(*ctx, true));
  wolfSSL_CTX_set_verify(*ctx, WOLFSSL_VERIFY_NONE, nullptr);  // no client certificates
  wolfSSL_ERR_clear_error();
  int rc = wolfSSL_CTX_use_certificate_chain_file(*ctx, cert_file.c_str());
  if (rc != WOLFSSL_SUCCESS) {
    return make_error(Errc::kConfig,
                      "cert_file " + cert_file + ": cannot load: " + load_error_text(rc));
  }
  wolfSSL_ERR_clear_error();
  rc = wolfSSL_CTX_use_PrivateKey_file(*ctx, key_file.c_str(), WOLFSSL_FILETYPE_PEM);
  if (rc != WOLFSSL_SUCCESS) {
    return make_error(Errc::kConfig,
                      "key_file " + key_file + ": cannot load: " + load_error_text(rc));
  }
  // A handshake against ourselves, in memory: proves the key signs for the
  // certificate (wolfSSL_CTX_check_private_key does not compare EC keys in
  // this build) and that a client can complete a handshake at all.
  auto probe_ctx = new_context(cfg, false);
  RM_TRY(probe_ctx);
  TlsContext probe(*probe_ctx, false);  // no CA: nothing to verify here
  auto client = TlsChannel::client(probe, {});
  auto server = TlsChannel::server(*c);
  if (!client.ok() || !server.ok()) {
    return make_error(Errc::kInternal, "cannot create a TLS test channel");
  }
  TlsChannel::Status cs = TlsChannel::Status::kWant, ss = TlsChannel::Status::kWant;
  for (int i = 0; i < 16 && (cs == TlsChannel::Status::kWant || ss == TlsChannel::Status::kWant);
       ++i) {
    std::string wire;
    if (cs == TlsChannel::Status::kWant) {
      cs = (*client)->handshake();
    }
    (*client)->take_output(&wire);
    (*server)->feed(wire);
    wire.clear();
    if (ss == TlsChannel::Status::kWant) {
      ss = (*server)->handshake();
    }
    (*server)->take_output(&wire);
    (*client)->feed(wire);
  }
  if (cs != TlsChannel::Status::kDone || ss != TlsChannel::Status::kDone) {
    std::string why = cs == TlsChannel::Status::kFailed ? (*client)->error() : (*server)->error();
    return make_error(Errc::kConfig, "key_file " + key_file + " does not match cert_file " +
                                         cert_file + " (test handshake: " + why + ")");
  }
  return c;
}

TlsContext::~TlsContext() {
  wolfSSL_CTX_free(ctx_);
}

// ---------------------------------------------------------------------------
// TlsChannel

int TlsChannel::on_recv(WOLFSSL* /*ssl*/, char* buf, int sz, void* ctx) {
  auto* ch = static_cast<TlsChannel*>(ctx);
  size_t avail = ch->in_.size() - ch->in_pos_;
  if (avail == 0) {
    return ch->eof_ ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
  }
  size_t n = std::min(avail, static_cast<size_t>(sz));
  std::memcpy(buf, ch->in_.data() + ch->in_pos_, n);
  ch->in_pos_ += n;
  if (ch->in_pos_ == ch->in_.size()) {
    ch->in_.clear();
    ch->in_pos_ = 0;
  }
  return static_cast<int>(n);
}

int TlsChannel::on_send(WOLFSSL* /*ssl*/, char* buf, int sz, void* ctx) {
  auto* ch = static_cast<TlsChannel*>(ctx);
  // Always accepted: the driver bounds what it asks to encrypt per batch
  // (kMaxWriteBatch) and drains the buffer before asking for more.
  ch->out_.append(buf, static_cast<size_t>(sz));
  return sz;
}

namespace {

Result<WOLFSSL*> new_ssl(const TlsContext& ctx, void* io_ctx, CallbackIORecv recv,
                         CallbackIOSend send) {
  WOLFSSL* ssl = wolfSSL_new(ctx.native());
  if (ssl == nullptr) {
    return make_error(Errc::kInternal, "wolfSSL_new failed");
  }
  wolfSSL_SSLSetIORecv(ssl, recv);
  wolfSSL_SSLSetIOSend(ssl, send);
  wolfSSL_SetIOReadCtx(ssl, io_ctx);
  wolfSSL_SetIOWriteCtx(ssl, io_ctx);
  return ssl;
}

}  // namespace

Result<std::unique_ptr<TlsChannel>> TlsChannel::client(const TlsContext& ctx,
                                                       const ClientParams& params) {
  RM_ASSERT(!ctx.is_server());
  if (params.verify && !ctx.ca_error().empty()) {
    return make_error(Errc::kConfig, ctx.ca_error());
  }
  std::unique_ptr<TlsChannel> ch(new TlsChannel());
  auto ssl = new_ssl(ctx, ch.get(), &TlsChannel::on_recv, &TlsChannel::on_send);
  RM_TRY(ssl);
  ch->ssl_ = *ssl;
  std::string name(params.server_name);
  if (!name.empty() && name.back() == '.') {
    name.pop_back();
  }
  if (!name.empty() && !is_address_literal(name)) {
    if (wolfSSL_UseSNI(ch->ssl_, WOLFSSL_SNI_HOST_NAME, name.data(),
                       static_cast<unsigned short>(name.size())) != WOLFSSL_SUCCESS) {
      return make_error(Errc::kInternal, "wolfSSL_UseSNI failed for " + name);
    }
  }
  if (params.verify) {
    wolfSSL_set_verify(ch->ssl_, WOLFSSL_VERIFY_PEER, nullptr);
    if (name.empty() || wolfSSL_check_domain_name(ch->ssl_, name.c_str()) != WOLFSSL_SUCCESS) {
      return make_error(Errc::kInternal, "cannot set the name to verify: \"" + name + "\"");
    }
  } else {
    wolfSSL_set_verify(ch->ssl_, WOLFSSL_VERIFY_NONE, nullptr);
  }
  if (params.resume != nullptr) {
    // An expired or unusable session is not an error: a full handshake follows.
    (void)wolfSSL_set_session(ch->ssl_, params.resume);
  }
  return ch;
}

Result<std::unique_ptr<TlsChannel>> TlsChannel::server(const TlsContext& ctx) {
  RM_ASSERT(ctx.is_server());
  std::unique_ptr<TlsChannel> ch(new TlsChannel());
  auto ssl = new_ssl(ctx, ch.get(), &TlsChannel::on_recv, &TlsChannel::on_send);
  RM_TRY(ssl);
  ch->ssl_ = *ssl;
  ch->server_ = true;
  return ch;
}

TlsChannel::~TlsChannel() {
  if (ssl_ != nullptr) {
    wolfSSL_free(ssl_);
  }
}

void TlsChannel::feed(std::span<const char> ciphertext) {
  if (in_pos_ > 0 && in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  } else if (in_pos_ > 0) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
  in_.append(ciphertext.data(), ciphertext.size());
}

void TlsChannel::take_output(std::string* out) {
  if (out->empty()) {
    out->swap(out_);
  } else {
    out->append(out_);
  }
  out_.clear();
}

TlsChannel::Status TlsChannel::fail(int ret, std::string_view what) {
  int err = wolfSSL_get_error(ssl_, ret);
  if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
    return Status::kWant;
  }
  if (err == WOLFSSL_ERROR_ZERO_RETURN) {
    error_ = "close_notify from the peer";
    return Status::kClosed;
  }
  // The thread's error queue would otherwise keep this for the next caller.
  wolfSSL_ERR_clear_error();
  if (eof_ && in_pos_ == in_.size()) {
    error_ = std::string(what) + ": connection closed by the peer";
    return Status::kFailed;
  }
  error_ = std::string(what) + ": " + wolf_error_text(err);
  return Status::kFailed;
}

TlsChannel::Status TlsChannel::handshake() {
  if (done_) {
    return Status::kDone;
  }
  int ret = server_ ? wolfSSL_accept(ssl_) : wolfSSL_connect(ssl_);
  if (ret == WOLFSSL_SUCCESS) {
    done_ = true;
    return Status::kDone;
  }
  Status s = fail(ret, "TLS handshake");
  return s == Status::kClosed ? Status::kFailed : s;
}

TlsChannel::Status TlsChannel::read(std::span<char> buf, size_t* n) {
  *n = 0;
  int want = static_cast<int>(std::min<size_t>(buf.size(), INT32_MAX));
  int ret = wolfSSL_read(ssl_, buf.data(), want);
  if (ret > 0) {
    *n = static_cast<size_t>(ret);
    return Status::kDone;
  }
  Status s = fail(ret, "TLS read");
  if (s == Status::kFailed && eof_ && in_pos_ == in_.size()) {
    // The transport ended without close_notify: SMTP knows where its
    // messages end (RFC 3207 does not require close_notify), so this is an
    // ordinary close, not an attack.
    error_ = "connection closed without close_notify";
    return Status::kClosed;
  }
  return s;
}

bool TlsChannel::pending() const {
  return wolfSSL_pending(ssl_) > 0;
}

TlsChannel::Status TlsChannel::write(std::span<const char> plain) {
  size_t off = 0;
  while (off < plain.size()) {
    int chunk = static_cast<int>(std::min<size_t>(plain.size() - off, 1 << 20));
    int ret = wolfSSL_write(ssl_, plain.data() + off, chunk);
    if (ret <= 0) {
      Status s = fail(ret, "TLS write");
      if (s == Status::kWant) {
        error_ = "TLS write: wolfSSL wants I/O during a write";
      }
      return Status::kFailed;
    }
    off += static_cast<size_t>(ret);
  }
  return Status::kDone;
}

void TlsChannel::close_notify() {
  if (done_) {
    (void)wolfSSL_shutdown(ssl_);
  }
}

std::string TlsChannel::version() const {
  const char* v = wolfSSL_get_version(ssl_);
  return v != nullptr ? v : "";
}

std::string TlsChannel::cipher() const {
  int suite = wolfSSL_get_current_cipher_suite(ssl_);
  const char* iana = wolfSSL_get_cipher_name_iana_from_suite(
      static_cast<unsigned char>((suite >> 8) & 0xff), static_cast<unsigned char>(suite & 0xff));
  if (iana != nullptr && *iana != '\0' && std::strcmp(iana, "None") != 0) {
    return iana;
  }
  const char* name = wolfSSL_get_cipher_name(ssl_);
  return name != nullptr ? name : "";
}

std::string TlsChannel::summary() const {
  return version() + " " + cipher();
}

bool TlsChannel::resumed() const {
  return wolfSSL_session_reused(ssl_) == 1;
}

TlsSessionPtr TlsChannel::session() const {
  return TlsSessionPtr(wolfSSL_get1_session(ssl_));
}

// ---------------------------------------------------------------------------
// TlsClient

TlsClient::~TlsClient() = default;

Result<const TlsContext*> TlsClient::context() {
  if (ctx_ == nullptr) {
    auto c = TlsContext::client(cfg_);
    if (!c.ok()) {
      return std::move(c).take_error();
    }
    ctx_ = std::move(*c);
  }
  return static_cast<const TlsContext*>(ctx_.get());
}

void TlsClient::reconfigure(const TlsConfig& cfg) {
  const bool trust_changed = cfg.ca_file != cfg_.ca_file || cfg.min_version != cfg_.min_version;
  cfg_ = cfg;
  ctx_.reset();
  if (trust_changed || !cfg.session_resumption) {
    sessions_.clear();
  }
}

WOLFSSL_SESSION* TlsClient::find_session(const std::string& key) const {
  auto it = sessions_.find(key);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void TlsClient::store_session(const std::string& key, TlsSessionPtr session) {
  if (session == nullptr) {
    return;
  }
  auto it = sessions_.find(key);
  if (it != sessions_.end()) {
    it->second = std::move(session);
    return;
  }
  if (sessions_.size() >= kMaxSessions) {
    sessions_.erase(sessions_.begin());  // any one: a lost session costs one full handshake
  }
  sessions_.emplace(key, std::move(session));
}

void TlsClient::drop_session(const std::string& key) {
  sessions_.erase(key);
}

bool TlsClient::plaintext_only(const std::string& key, TimePoint now) const {
  auto it = plaintext_until_.find(key);
  return it != plaintext_until_.end() && it->second > now;
}

void TlsClient::remember_plaintext(const std::string& key, TimePoint now) {
  if (plaintext_until_.size() >= kMaxFallbacks && !plaintext_until_.contains(key)) {
    // Expired entries first; if all are live, forget one (it costs one
    // more failed handshake, never a delivery).
    std::erase_if(plaintext_until_, [now](const auto& kv) { return kv.second <= now; });
    if (plaintext_until_.size() >= kMaxFallbacks) {
      plaintext_until_.erase(plaintext_until_.begin());
    }
  }
  plaintext_until_[key] = now + kFallbackMemory;
}

void tls_release_thread_caches() {
#ifdef FP_ECC
  wc_ecc_fp_free();
#endif
}

}  // namespace ringmail::engine
