/// http_server.h — the HTTP listener ([http], docs/http.md): Prometheus
/// metrics at GET /metrics and the injection API at POST /api/inject/v1.
///
/// Runs on shard 0's ring, like the batch socket and the submission
/// listeners: each client has one receive armed and at most one send in
/// flight; closing cancels what is pending and the connection is freed
/// once its last completion has arrived. Requests are parsed by
/// proto::HttpRequestParser (HTTP/1.1 with keep-alive; bodies framed by
/// Content-Length only) and answered one at a time, in order: while one is
/// being answered (a scrape gathering the shards, a batch waiting for the
/// spool) nothing more is read from that client.
///
/// Limits, each with its answer:
///   - http.max_connections: a further client is answered 503 and closed;
///   - the head (request line kMaxRequestLine, kMaxHeaders fields,
///     kMaxHeadBytes in all): 414 or 431, then close;
///   - http.header_timeout: the head must be complete this long after its
///     first byte (the first request: after the connection), however
///     slowly it trickles: 408 and close;
///   - http.max_body_bytes: 413 and close, before any body byte is read;
///   - http.body_min_rate: the body must be complete by the end of the
///     head + header_timeout + length / body_min_rate: 408 and close;
///   - memory: a body is charged to limits.max_queued_bytes when its head
///     arrives; a body that does not fit gets 503 with Retry-After;
///   - http.idle_timeout: a keep-alive client without a new request is
///     closed.
///
/// The injection API (http_inject.cc) takes KumoMTA's request shape and
/// hands the batch to Runtime::submit_batch, so validation, the memory
/// budget and spool durability are exactly the batch socket's: 200 only
/// once the accepted recipients are durable (spool on). Bearer tokens come
/// from http.api_tokens_file (kept as SHA-256 digests, compared in
/// constant time); without the file the API answers 403.
///
/// Thread safety: shard 0's thread only. Diagnostics: one log line per
/// client cut off by a deadline or refused over a limit, and per failed
/// authentication.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/config.h"
#include "engine/metrics.h"
#include "engine/ring.h"
#include "proto/batch_wire.h"
#include "proto/http_request.h"
#include "proto/result.h"

namespace ringmail::engine {

class Shard;

/// Opens the listening TCP socket of [http] (SO_REUSEADDR, non-blocking,
/// close-on-exec). Errors name http.listen.
[[nodiscard]] Result<int> open_http_socket(const HttpConfig& c);

/// Bearer tokens of the injection API: SHA-256 digests of the lines of
/// http.api_tokens_file. Any thread once loaded.
class ApiTokens {
 public:
  /// Shortest token accepted: 16 characters (at least 96 bits when random).
  static constexpr size_t kMinTokenLength = 16;
  static constexpr size_t kMaxTokens = 1000;
  /// One token per line (RFC 6750 b64token characters); blank lines and
  /// lines starting with '#' are skipped. Errors name the file and line.
  [[nodiscard]] static Result<ApiTokens> load(const std::string& path);
  /// Parses the file's text (what load() reads).
  [[nodiscard]] static Result<ApiTokens> parse(std::string_view text, const std::string& origin);
  bool empty() const { return digests_.empty(); }
  /// True when `token` is one of the tokens. Compares every digest in
  /// full, so the time taken does not depend on which bytes matched.
  bool check(std::string_view token) const;

 private:
  std::vector<std::array<uint8_t, 32>> digests_;
};

/// What the injection API answers.
struct InjectResponse {
  int status = 200;
  std::string body;           // JSON
  std::string extra_headers;  // e.g. "Retry-After: 5\r\n"
};

class HttpServer {
 public:
  static constexpr size_t kRecvBuffer = 16 * 1024;
  /// Request heads. Threat: a client that makes the server buffer an
  /// endless line or field list; these fit every client ringmail expects
  /// (curl, Prometheus, KumoMTA-style injectors).
  static constexpr size_t kMaxRequestLine = 8 * 1024;
  static constexpr size_t kMaxHeadBytes = 32 * 1024;
  static constexpr size_t kMaxHeaders = 64;
  /// Seconds a client is asked to wait (Retry-After) when the memory
  /// budget is full, and when the spool cannot write.
  static constexpr int kRetryAfterBusy = 5;
  /// How long a closing connection keeps reading (and discarding) after
  /// its last answer, so the answer is not lost to a reset.
  static constexpr Millis kLinger{2'000};
  static constexpr int kRetryAfterSpool = 30;

  /// Loads http.api_tokens_file (if set). `fd` is the listening socket.
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> create(Shard& shard, int fd);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void start();
  /// Stops accepting and closes every client (what was queued for it is
  /// still sent); answers that come later are dropped.
  void stop();
  bool stopped() const { return stopping_ && conns_.empty() && !accept_armed_; }
  size_t connections() const { return conns_.size(); }

  class Conn;

 private:
  struct AcceptOp final : Completion {
    HttpServer* server = nullptr;
    void complete(int res, uint32_t flags) override;
  };
  friend class Conn;

  HttpServer(Shard& shard, int fd);
  void arm_accept();
  void on_accept(int res, uint32_t flags);
  /// A connection's last operation completed: forget it; it is deleted on
  /// the next loop iteration (this runs inside its own completion).
  void conn_closed(Conn* c);
  /// Reserves `n` bytes of the memory budget for a request body.
  bool charge(uint64_t n);
  void release(uint64_t n);

  // Request handlers. Each ends in Conn::respond() (maybe later).
  void handle(Conn* c, const proto::HttpRequest& req);
  void handle_metrics(Conn* c, const proto::HttpRequest& req);
  void handle_inject(Conn* c, const proto::HttpRequest& req);

  Shard& shard_;
  int fd_;
  AcceptOp accept_op_;
  bool accept_armed_ = false;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Conn*> conns_;
  std::vector<Conn*> graveyard_;  // closed, deleted by the next conn_closed()
  ApiTokens tokens_;
  bool inject_enabled_ = false;
  MetricsExporter exporter_;
};

/// Builds the batch of an injection request (KumoMTA's JSON shape) and
/// submits it. `done` gets the response (maybe later, on shard 0's
/// thread; at once for a malformed request). In http_inject.cc.
void submit_inject(Shard& shard, std::string_view body, std::function<void(InjectResponse)> done);

}  // namespace ringmail::engine
