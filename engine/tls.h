/// tls.h — TLS for the SMTP client (STARTTLS, implicit TLS) and for the
/// submission listeners: wolfSSL contexts and a TLS channel that runs over
/// memory buffers.
///
/// No socket is ever handed to wolfSSL. A TlsChannel's wolfSSL I/O
/// callbacks read ciphertext from an input buffer the connection fills from
/// its io_uring receives (feed()) and append ciphertext to an output buffer
/// the connection drains with its io_uring sends (take_output()). When the
/// input is empty the receive callback says WANT_READ, so every call
/// returns at once: the shard never blocks and no thread is added.
///
/// Policy, the same on both sides:
///   - TLS 1.2 and 1.3 only; the floor is tls.min_version ("1.2"/"1.3");
///   - AEAD suites first (ChaCha20-Poly1305 ahead of AES-GCM: this wolfSSL
///     build has no AES-NI), CBC-SHA suites last for old MTAs (kCipherList);
///     no RC4, 3DES, NULL, anonymous or PSK suites (wolfSSL's "HIGH" keeps
///     some of those, so the list is explicit);
///   - no renegotiation (this wolfSSL build has no secure renegotiation
///     support and refuses it);
///   - client: SNI for host names (never for address literals, RFC 6066 3);
///     with `verify` the chain is checked against tls.ca_file (empty: the
///     system store) and the name against the certificate
///     (wolfSSL_check_domain_name: SAN DNS and IP entries, then CN);
///     sessions are resumed from a per-shard cache (TlsClient).
///
/// Bounds: the input buffer holds at most what one receive brought plus an
/// unfinished record (wolfSSL takes everything it is offered while it has
/// room); the output buffer is drained by the driver after every call, and
/// the driver encrypts plaintext in bounded batches (kMaxWriteBatch).
///
/// Threads: a TlsContext may be shared read-only; a TlsChannel and a
/// TlsClient belong to one shard thread.
/// Errors: Result<T> with wolfSSL's reason text ("ASN no signer error to
/// confirm failure", "peer subject name mismatch", ...).
/// See also: engine/smtp_connection.cc (client driver),
/// engine/submission.cc (server driver), docs/tls.md.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "engine/clock.h"
#include "engine/config.h"
#include "proto/result.h"

// wolfSSL's opaque types (its headers typedef these very structs); the
// headers themselves stay in tls.cc so <wolfssl/options.h> always comes first.
struct WOLFSSL_CTX;
struct WOLFSSL;
struct WOLFSSL_SESSION;

namespace ringmail::engine {

/// Frees this thread's wolfSSL caches (the ECC fixed-point table that
/// ECDHE handshakes fill per thread). Shard threads call it as they exit;
/// without it every thread that did a handshake leaks its table.
void tls_release_thread_caches();

/// The cipher suites offered and accepted, best first (wolfSSL names).
extern const char* const kCipherList;

struct TlsSessionFree {
  void operator()(WOLFSSL_SESSION* s) const;
};
/// One reference to a wolfSSL session (for resumption).
using TlsSessionPtr = std::unique_ptr<WOLFSSL_SESSION, TlsSessionFree>;

class TlsContext {
 public:
  /// A client context. The CA bundle is loaded here; when it cannot be,
  /// the context is still usable for unverified TLS and ca_error() says
  /// why (verify connections then fail with that text).
  [[nodiscard]] static Result<std::unique_ptr<TlsContext>> client(const TlsConfig& cfg);
  /// A server context with a PEM certificate chain and private key.
  [[nodiscard]] static Result<std::unique_ptr<TlsContext>> server(const TlsConfig& cfg,
                                                                  const std::string& cert_file,
                                                                  const std::string& key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  WOLFSSL_CTX* native() const { return ctx_; }
  bool is_server() const { return server_; }
  /// Empty when the CA bundle loaded (client contexts).
  const std::string& ca_error() const { return ca_error_; }

 private:
  TlsContext(WOLFSSL_CTX* ctx, bool server) : ctx_(ctx), server_(server) {}
  WOLFSSL_CTX* ctx_;
  bool server_;
  std::string ca_error_;
};

class TlsChannel {
 public:
  enum class Status : uint8_t {
    kDone,    // the operation completed
    kWant,    // needs more ciphertext from the peer (feed(), then call again)
    kClosed,  // the peer sent close_notify (or the transport ended cleanly)
    kFailed,  // fatal: error() says why; the connection must be dropped
  };

  struct ClientParams {
    /// The MX host name (SNI, and the name checked with `verify`), or an
    /// address literal (no SNI; checked against IP SAN entries).
    std::string_view server_name;
    bool verify = false;
    /// A session to resume (borrowed: wolfSSL copies what it needs), or null.
    WOLFSSL_SESSION* resume = nullptr;
  };

  /// Plaintext bytes encrypted per driver batch before the ciphertext is
  /// sent: bounds a connection's output buffer (about this plus record
  /// overhead) however large the message is.
  static constexpr size_t kMaxWriteBatch = 64 * 1024;

  [[nodiscard]] static Result<std::unique_ptr<TlsChannel>> client(const TlsContext& ctx,
                                                                  const ClientParams& params);
  [[nodiscard]] static Result<std::unique_ptr<TlsChannel>> server(const TlsContext& ctx);
  ~TlsChannel();
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;

  // --- transport side -------------------------------------------------------
  /// Ciphertext received from the peer.
  void feed(std::span<const char> ciphertext);
  /// The peer closed its side: reads that need more input now fail/close.
  void feed_eof() { eof_ = true; }
  /// Ciphertext waiting to be sent.
  size_t output_size() const { return out_.size(); }
  /// Appends the waiting ciphertext to *out and forgets it.
  void take_output(std::string* out);

  // --- TLS ------------------------------------------------------------------
  /// Advances the handshake (client or server side).
  [[nodiscard]] Status handshake();
  bool handshake_done() const { return done_; }
  /// Decrypts up to buf.size() bytes. kDone with *n > 0 bytes; kWant when
  /// no whole record is buffered; kClosed at close_notify; kFailed.
  [[nodiscard]] Status read(std::span<char> buf, size_t* n);
  /// True when decrypted bytes are buffered inside wolfSSL (read() again
  /// before waiting for the peer).
  bool pending() const;
  /// Encrypts all of `plain` into the output buffer. kDone or kFailed.
  [[nodiscard]] Status write(std::span<const char> plain);
  /// Appends a close_notify alert to the output (best effort).
  void close_notify();
  const std::string& error() const { return error_; }

  /// "TLSv1.3" / "TLSv1.2" (valid after the handshake).
  std::string version() const;
  /// The IANA suite name, e.g. "TLS_AES_256_GCM_SHA384".
  std::string cipher() const;
  /// "TLSv1.3 TLS_AES_256_GCM_SHA384": what events record.
  std::string summary() const;
  bool resumed() const;
  /// A new reference to the session, for resumption; null when none.
  TlsSessionPtr session() const;

 private:
  TlsChannel() = default;
  static int on_recv(WOLFSSL* ssl, char* buf, int sz, void* ctx);
  static int on_send(WOLFSSL* ssl, char* buf, int sz, void* ctx);
  Status fail(int ret, std::string_view what);

  WOLFSSL* ssl_ = nullptr;
  bool server_ = false;
  bool done_ = false;
  bool eof_ = false;
  std::string in_;  // ciphertext received, not yet taken by wolfSSL
  size_t in_pos_ = 0;
  std::string out_;  // ciphertext produced, not yet taken by the driver
  std::string error_;
};

/// A shard's client-side TLS state: its context (built on first use), the
/// session cache for resumption and the opportunistic-fallback memory.
/// Shard thread only.
class TlsClient {
 public:
  /// Sessions kept per shard. Threat: none (keys are our destinations),
  /// but each session holds the peer's certificate chain (a few KiB).
  static constexpr size_t kMaxSessions = 4096;
  /// Remembered "TLS fails here" entries per shard.
  static constexpr size_t kMaxFallbacks = 4096;
  /// How long a host whose handshake failed is sent plaintext without
  /// trying STARTTLS (opportunistic policy only), so a broken TLS server
  /// costs one failed handshake per hour, not one per connection.
  static constexpr Millis kFallbackMemory{3'600'000};

  explicit TlsClient(const TlsConfig& cfg) : cfg_(cfg) {}
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  /// The client context; built on first call. Error: wolfSSL refused it.
  [[nodiscard]] Result<const TlsContext*> context();
  /// A reload's [tls]: the next handshake builds a new context (connections
  /// in a handshake or session keep theirs: wolfSSL counts its references).
  /// The session cache is emptied when the CA bundle or the minimum version
  /// changed: a resumed session skips the certificate check it would now
  /// get.
  void reconfigure(const TlsConfig& cfg);
  bool resumption() const { return cfg_.session_resumption; }
  Millis handshake_timeout() const { return cfg_.handshake_timeout; }

  /// The cached session for `key`, borrowed (valid until the next store or
  /// drop), or null.
  WOLFSSL_SESSION* find_session(const std::string& key) const;
  void store_session(const std::string& key, TlsSessionPtr session);
  void drop_session(const std::string& key);
  size_t sessions() const { return sessions_.size(); }

  bool plaintext_only(const std::string& key, TimePoint now) const;
  /// Plaintext for `key` during kFallbackMemory from `now`.
  void remember_plaintext(const std::string& key, TimePoint now);

 private:
  TlsConfig cfg_;
  std::unique_ptr<TlsContext> ctx_;
  std::unordered_map<std::string, TlsSessionPtr> sessions_;
  std::unordered_map<std::string, TimePoint> plaintext_until_;
};

}  // namespace ringmail::engine
