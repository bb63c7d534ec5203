// The HTTP listener: connections, deadlines, routing (see http_server.h).
#include "engine/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/shard.h"
#include "engine/timer_wheel.h"
#include "proto/json.h"

namespace ringmail::engine {
namespace {

constexpr std::string_view kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kJsonType = "application/json";
constexpr std::string_view kTextType = "text/plain; charset=utf-8";

std::array<uint8_t, 32> sha256(std::string_view s) {
  std::array<uint8_t, 32> d{};
  wc_Sha256Hash(reinterpret_cast<const byte*>(s.data()), static_cast<word32>(s.size()), d.data());
  return d;
}

// RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
bool b64token(std::string_view t) {
  size_t i = 0;
  while (i < t.size() && (std::isalnum(static_cast<unsigned char>(t[i])) != 0 ||
                          std::strchr("-._~+/", t[i]) != nullptr)) {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  while (i < t.size() && t[i] == '=') {
    ++i;
  }
  return i == t.size();
}

std::string json_error(std::string_view why) {
  std::string out = "{\"success_count\":0,\"fail_count\":0,\"failed_recipients\":[],\"errors\":[";
  proto::append_json_string(out, why);
  out += "]}";
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Tokens

Result<ApiTokens> ApiTokens::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_error(Errc::kIo,
                      "http.api_tokens_file: cannot read " + path + ": " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

Result<ApiTokens> ApiTokens::parse(std::string_view text, const std::string& origin) {
  ApiTokens t;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      line.remove_prefix(1);
    }
    if (line.empty() || line.front() == '#') {
      continue;
    }
    std::string where = "http.api_tokens_file: " + origin + ":" + std::to_string(line_no) + ": ";
    if (!b64token(line)) {
      return make_error(Errc::kConfig,
                        where + "a token is letters, digits and - . _ ~ + / (then = padding)");
    }
    if (line.size() < kMinTokenLength) {
      return make_error(Errc::kConfig, where + "a token must be at least " +
                                           std::to_string(kMinTokenLength) + " characters");
    }
    if (t.digests_.size() >= kMaxTokens) {
      return make_error(Errc::kConfig,
                        where + "more than " + std::to_string(kMaxTokens) + " tokens");
    }
    t.digests_.push_back(sha256(line));
  }
  if (t.digests_.empty()) {
    return make_error(Errc::kConfig, "http.api_tokens_file: " + origin + ": no token in the file");
  }
  return t;
}

bool ApiTokens::check(std::string_view token) const {
  std::array<uint8_t, 32> d = sha256(token);
  uint8_t found = 0;
  for (const auto& want : digests_) {
    uint8_t diff = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      diff = static_cast<uint8_t>(diff | (d[i] ^ want[i]));
    }
    // 1 when diff == 0, without a branch on the secret.
    found = static_cast<uint8_t>(found | (((static_cast<unsigned>(diff) - 1u) >> 8) & 1u));
  }
  return found != 0;
}

// ---------------------------------------------------------------------------
// Socket

Result<int> open_http_socket(const HttpConfig& c) {
  int fd = ::socket(c.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return make_error(Errc::kIo, "http.listen " + c.listen + ": socket: " + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&c.addr), c.addr_len) != 0 ||
      ::listen(fd, 128) != 0) {
    int e = errno;
    ::close(fd);
    return make_error(Errc::kIo,
                      "http.listen " + c.listen + ": cannot listen: " + std::strerror(e));
  }
  return fd;
}

// ---------------------------------------------------------------------------
// One client

class HttpServer::Conn {
 public:
  Conn(HttpServer& server, int fd, uint64_t id)
      : server_(server),
        shard_(server.shard_),
        cfg_(server.shard_.config().http),
        fd_(fd),
        id_(id),
        parser_(limits()),
        head_timer_(&Conn::on_head_timer, this),
        body_timer_(&Conn::on_body_timer, this) {
    recv_op_.conn = this;
    recv_op_.fn = &Conn::on_recv;
    send_op_.conn = this;
    send_op_.fn = &Conn::on_send;
    cancel_op_.conn = this;
    cancel_op_.fn = &Conn::on_noop;
  }
  ~Conn() { release_body(); }

  uint64_t id() const { return id_; }

  void start() {
    // The first request's head is due header_timeout after the connection.
    shard_.timers().schedule(&head_timer_, shard_.clock().now() + cfg_.header_timeout);
    head_armed_ = true;
    arm_recv();
  }

  /// Queues a response to the request being answered; then reads the next
  /// one (keep-alive) or closes.
  void respond(int status, std::string_view type, std::string_view body,
               std::string_view extra = {}) {
    if (closing_) {
      return;  // closed meanwhile (shutdown): the answer has nobody to go to
    }
    bool keep = keep_alive_ && !server_.stopping_;
    proto::append_http_response(out_, status, type, body, keep, extra);
    busy_ = false;
    release_body();
    flush();
    if (!keep) {
      close();
      return;
    }
    parser_.reset();
    body_timer_.cancel();
    shard_.timers().schedule(&head_timer_, shard_.clock().now() + cfg_.idle_timeout);
    head_armed_ = false;  // idle until the next request's first byte
    if (!in_process_) {
      process();  // an answer that came later: read on
    }
  }

  /// Answers and closes (over a limit, a broken request).
  void refuse(int status, std::string_view type, std::string_view body,
              std::string_view extra = {}) {
    keep_alive_ = false;
    busy_ = true;
    respond(status, type, body, extra);
  }

  /// Sends what is queued, then closes.
  void close() {
    if (closing_) {
      return;
    }
    closing_ = true;
    head_timer_.cancel();
    body_timer_.cancel();
    if (recv_armed_) {
      ++ops_;
      shard_.ring().cancel(&recv_op_, &cancel_op_);
    }
    flush();
    maybe_finish();
  }

  /// Closes at once, dropping unsent output (peer gone, shutdown).
  void drop() {
    dropped_ = true;
    out_.clear();
    sending_buf_.clear();
    sent_ = 0;
    close();
    if (sending_) {
      ++ops_;
      shard_.ring().cancel(&send_op_, &cancel_op_);
    }
  }

 private:
  struct Op final : Completion {
    Conn* conn = nullptr;
    void (Conn::*fn)(int, uint32_t) = nullptr;
    void complete(int res, uint32_t flags) override {
      Conn* c = conn;
      --c->ops_;
      (c->*fn)(res, flags);
      c->maybe_finish();
    }
  };

  proto::HttpLimits limits() const {
    proto::HttpLimits l;
    l.max_request_line = kMaxRequestLine;
    l.max_head_bytes = kMaxHeadBytes;
    l.max_headers = kMaxHeaders;
    l.max_body = cfg_.max_body_bytes;
    return l;
  }

  void arm_recv() {
    if (recv_armed_ || closing_ || busy_) {
      return;
    }
    recv_armed_ = true;
    ++ops_;
    shard_.ring().recv(fd_, rbuf_, sizeof rbuf_, &recv_op_);
  }

  void on_recv(int res, uint32_t /*flags*/) {
    recv_armed_ = false;
    if (closing_) {
      if (lingering_ && res > 0 && !linger_done_) {
        arm_linger_recv();  // discarded: the client is still sending
      }
      return;
    }
    if (res <= 0) {
      drop();
      return;
    }
    in_.append(rbuf_, static_cast<size_t>(res));
    process();
  }

  /// Feeds buffered bytes to the parser and answers a complete request.
  void process() {
    in_process_ = true;
    while (!busy_ && !closing_ && !in_.empty()) {
      if (!head_armed_) {
        // The first byte of a request: its head is due header_timeout later.
        shard_.timers().schedule(&head_timer_, shard_.clock().now() + cfg_.header_timeout);
        head_armed_ = true;
      }
      proto::ParseResult r = parser_.feed(std::span<const char>(in_.data(), in_.size()));
      if (r.status == proto::ParseStatus::kError) {
        in_.clear();
        in_process_ = false;
        RM_LOG_INFO("http client %llu: %d %s", static_cast<unsigned long long>(id_),
                    parser_.error_status(), parser_.error().c_str());
        refuse(parser_.error_status(), kTextType, parser_.error() + "\n");
        return;
      }
      in_.erase(0, r.consumed);
      if ((parser_.in_body() || r.status == proto::ParseStatus::kDone) && !body_started_ &&
          !body_started_for_empty()) {
        if (!start_body()) {
          in_process_ = false;
          return;
        }
      }
      if (r.status == proto::ParseStatus::kNeedMore) {
        break;
      }
      head_timer_.cancel();
      body_timer_.cancel();
      body_started_ = false;
      busy_ = true;
      keep_alive_ = parser_.request().keep_alive;
      server_.handle(this, parser_.request());
    }
    in_process_ = false;
    arm_recv();
  }

  bool body_started_for_empty() const { return parser_.content_length() == 0; }

  /// The head is complete and announces a body: charge it to the memory
  /// budget and start its deadline. False when the client was answered.
  bool start_body() {
    body_started_ = true;
    uint64_t n = parser_.content_length();
    head_timer_.cancel();
    if (!server_.charge(n)) {
      // The body is not read, so the connection cannot go on.
      refuse(503, kJsonType,
             json_error("the memory budget (limits.max_queued_bytes) is full: retry later"),
             "Retry-After: " + std::to_string(kRetryAfterBusy) + "\r\n");
      return false;
    }
    charged_ = n;
    const std::string* expect = parser_.request().header("expect");
    if (expect != nullptr && parser_.in_body() && expect->size() == 12 &&
        std::equal(expect->begin(), expect->end(), "100-continue", [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == b;
        })) {
      out_ += "HTTP/1.1 100 Continue\r\n\r\n";  // RFC 9110 10.1.1
      flush();
    }
    Millis allowance(static_cast<int64_t>(n * 1000 / cfg_.body_min_rate));
    shard_.timers().schedule(&body_timer_, shard_.clock().now() + cfg_.header_timeout + allowance);
    return true;
  }

  void arm_linger_recv() {
    recv_armed_ = true;
    ++ops_;
    shard_.ring().recv(fd_, rbuf_, sizeof rbuf_, &recv_op_);
  }

  void release_body() {
    server_.release(charged_);
    charged_ = 0;
  }

  void flush() {
    if (sending_ || finished_ || dropped_) {
      return;
    }
    if (sent_ == sending_buf_.size()) {
      sending_buf_.clear();
      sent_ = 0;
      if (out_.empty()) {
        return;
      }
      sending_buf_.swap(out_);
    }
    sending_ = true;
    ++ops_;
    shard_.ring().send(fd_, sending_buf_.data() + sent_, sending_buf_.size() - sent_, MSG_NOSIGNAL,
                       &send_op_);
  }

  void on_send(int res, uint32_t /*flags*/) {
    sending_ = false;
    if (dropped_) {
      return;  // its buffer was discarded
    }
    if (res < 0) {
      if (res != -ECANCELED) {
        drop();
      }
      return;
    }
    sent_ += static_cast<size_t>(res);
    flush();
  }

  void on_noop(int, uint32_t) {}

  static void on_head_timer(void* self) {
    auto* c = static_cast<Conn*>(self);
    if (c->lingering_) {
      c->linger_done_ = true;
      if (c->recv_armed_) {
        ++c->ops_;
        c->shard_.ring().cancel(&c->recv_op_, &c->cancel_op_);
      }
      return;
    }
    if (!c->head_armed_) {
      c->close();  // idle keep-alive connection
      return;
    }
    RM_LOG_INFO("http client %llu: request head not complete within http.header_timeout",
                static_cast<unsigned long long>(c->id_));
    c->cut_off("the request head was not complete within http.header_timeout");
  }

  static void on_body_timer(void* self) {
    auto* c = static_cast<Conn*>(self);
    RM_LOG_INFO("http client %llu: request body slower than http.body_min_rate",
                static_cast<unsigned long long>(c->id_));
    c->cut_off("the request body arrived slower than http.body_min_rate");
  }

  void cut_off(const std::string& why) {
    if (busy_ || closing_) {
      return;
    }
    refuse(408, kTextType, why + "\n");
  }

  void maybe_finish() {
    if (!closing_ || ops_ != 0 || finished_) {
      return;
    }
    if (sent_ < sending_buf_.size() || !out_.empty()) {
      flush();  // the last response goes first
      if (ops_ != 0) {
        return;
      }
    }
    if (!dropped_ && !lingering_) {
      // Lingering close: the answer is sent; stop sending, and read what
      // the client still sends for a moment, so that unread bytes do not
      // turn the close into a reset that destroys the answer in flight
      // (a refused body, a pipelined request).
      lingering_ = true;
      ::shutdown(fd_, SHUT_WR);
      shard_.timers().schedule(&head_timer_, shard_.clock().now() + kLinger);
      arm_linger_recv();
      return;
    }
    finished_ = true;
    head_timer_.cancel();
    body_timer_.cancel();
    release_body();
    ::close(fd_);
    fd_ = -1;
    server_.conn_closed(this);
  }

  HttpServer& server_;
  Shard& shard_;
  const HttpConfig& cfg_;
  int fd_;
  uint64_t id_;
  proto::HttpRequestParser parser_;
  Op recv_op_, send_op_, cancel_op_;
  Timer head_timer_;  // header_timeout while a head is due, else idle_timeout
  Timer body_timer_;
  uint32_t ops_ = 0;
  uint64_t charged_ = 0;  // body bytes charged to the memory budget
  bool head_armed_ = false;
  bool body_started_ = false;
  bool recv_armed_ = false;
  bool sending_ = false;
  bool busy_ = false;        // a request is being answered
  bool in_process_ = false;  // inside process(): answers given now need no new process()
  bool keep_alive_ = true;
  bool closing_ = false;
  bool dropped_ = false;      // the peer is gone: no lingering
  bool lingering_ = false;    // answer sent, reading until EOF or kLinger
  bool linger_done_ = false;  // kLinger passed
  bool finished_ = false;
  std::string in_;  // received, not yet parsed (pipelined requests)
  std::string out_;
  std::string sending_buf_;
  size_t sent_ = 0;
  char rbuf_[kRecvBuffer];
};

// ---------------------------------------------------------------------------
// Listener

HttpServer::HttpServer(Shard& shard, int fd) : shard_(shard), fd_(fd), exporter_(shard.runtime()) {
  accept_op_.server = this;
}

HttpServer::~HttpServer() {
  for (auto& [id, c] : conns_) {
    delete c;  // only at a forced shutdown; normally stop() emptied this
  }
  for (Conn* dead : graveyard_) {
    delete dead;
  }
}

Result<std::unique_ptr<HttpServer>> HttpServer::create(Shard& shard, int fd) {
  std::unique_ptr<HttpServer> s(new HttpServer(shard, fd));
  const HttpConfig& c = shard.config().http;
  if (!c.api_tokens_file.empty()) {
    auto t = ApiTokens::load(c.api_tokens_file);
    if (!t.ok()) {
      return std::move(t).take_error();
    }
    s->tokens_ = std::move(*t);
    s->inject_enabled_ = true;
  }
  RM_LOG_INFO("http: listening on %s (/metrics%s)", c.listen.c_str(),
              s->inject_enabled_ ? ", /api/inject/v1" : "; no http.api_tokens_file: injection off");
  return s;
}

void HttpServer::start() {
  arm_accept();
}

void HttpServer::arm_accept() {
  if (stopping_ || accept_armed_) {
    return;
  }
  accept_armed_ = true;
  shard_.ring().accept(fd_, &accept_op_, /*multishot=*/true);
}

void HttpServer::AcceptOp::complete(int res, uint32_t flags) {
  server->on_accept(res, flags);
}

void HttpServer::on_accept(int res, uint32_t flags) {
  bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) {
    accept_armed_ = false;
  }
  if (res < 0) {
    if (res != -ECANCELED && res != -EAGAIN && res != -EINTR) {
      RM_LOG_WARN("http accept: %s", std::strerror(-res));
    }
  } else if (stopping_) {
    ::close(res);
  } else {
    int one = 1;
    ::setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new Conn(*this, res, next_id_++);
    conns_.emplace(c->id(), c);
    if (conns_.size() > shard_.config().http.max_connections) {
      RM_LOG_INFO("http: connection refused: http.max_connections (%u) reached",
                  shard_.config().http.max_connections);
      c->refuse(503, kTextType, "too many connections (http.max_connections)\n");
    } else {
      c->start();
    }
  }
  if (!more && !stopping_) {
    arm_accept();
  }
}

void HttpServer::conn_closed(Conn* c) {
  conns_.erase(c->id());
  // `c` is inside its own completion: it is deleted with the next one to
  // close (or with the server). Earlier ones have no operation left.
  for (Conn* dead : graveyard_) {
    delete dead;
  }
  graveyard_.assign(1, c);
}

bool HttpServer::charge(uint64_t n) {
  std::atomic<uint64_t>* budget = shard_.runtime().budget_counter();
  if (budget->load(std::memory_order_relaxed) + n > shard_.config().limits.max_queued_bytes) {
    return false;
  }
  budget->fetch_add(n, std::memory_order_relaxed);
  return true;
}

void HttpServer::release(uint64_t n) {
  if (n > 0) {
    shard_.runtime().budget_counter()->fetch_sub(n, std::memory_order_relaxed);
  }
}

void HttpServer::stop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  if (accept_armed_) {
    shard_.ring().cancel(&accept_op_, nullptr);
  }
  // Like the batch socket: a request still waiting for its answer (a
  // spool acknowledgement, a scrape) loses it. Such a batch may still be
  // delivered; the client cannot tell, and may send it again.
  for (auto& [id, c] : std::unordered_map<uint64_t, Conn*>(conns_)) {
    c->close();
  }
}

void HttpServer::handle(Conn* c, const proto::HttpRequest& req) {
  std::string_view path = req.path();
  if (path == "/metrics") {
    handle_metrics(c, req);
  } else if (path == "/api/inject/v1") {
    handle_inject(c, req);
  } else {
    c->respond(404, kTextType, "not found: ringmail serves /metrics and /api/inject/v1\n");
  }
}

void HttpServer::handle_metrics(Conn* c, const proto::HttpRequest& req) {
  if (req.method != "GET") {
    c->respond(405, kTextType, "/metrics takes GET\n", "Allow: GET\r\n");
    return;
  }
  HttpServer* self = this;
  uint64_t id = c->id();
  collect_metrics(shard_, [self, id](std::vector<ShardSnapshot> shards) {
    // Rendered even when the client left: the label assignment advances
    // the same way whoever reads it.
    std::string text = self->exporter_.render(shards);
    auto it = self->conns_.find(id);
    if (it != self->conns_.end()) {
      it->second->respond(200, kMetricsType, text);
    }
  });
}

void HttpServer::handle_inject(Conn* c, const proto::HttpRequest& req) {
  if (req.method != "POST") {
    c->respond(405, kJsonType, json_error("/api/inject/v1 takes POST"), "Allow: POST\r\n");
    return;
  }
  if (!inject_enabled_) {
    c->respond(403, kJsonType,
               json_error("the injection API is off: no http.api_tokens_file is configured"));
    return;
  }
  const std::string* auth = req.header("authorization");
  std::string_view token;
  if (auth != nullptr && auth->size() > 7 &&
      std::equal(auth->begin(), auth->begin() + 7, "bearer ",
                 [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
    token = std::string_view(*auth).substr(7);
    while (!token.empty() && token.front() == ' ') {
      token.remove_prefix(1);
    }
  }
  if (token.empty() || !tokens_.check(token)) {
    RM_LOG_WARN("http client %llu: injection refused: %s", static_cast<unsigned long long>(c->id()),
                auth == nullptr ? "no Authorization" : "bad bearer token");
    c->respond(401, kJsonType,
               json_error(auth == nullptr ? "authentication required: Authorization: Bearer TOKEN"
                                          : "invalid bearer token"),
               "WWW-Authenticate: Bearer realm=\"ringmail\"\r\n");
    return;
  }
  if (const std::string* type = req.header("content-type"); type != nullptr) {
    std::string_view t = std::string_view(*type).substr(0, type->find(';'));
    while (!t.empty() && t.back() == ' ') {
      t.remove_suffix(1);
    }
    std::string lower(t);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (lower != "application/json") {
      c->respond(415, kJsonType,
                 json_error("the body must be JSON (Content-Type: application/json), got " +
                            std::string(t)));
      return;
    }
  }
  HttpServer* self = this;
  uint64_t id = c->id();
  submit_inject(shard_, req.body, [self, id](InjectResponse r) {
    auto it = self->conns_.find(id);
    if (it != self->conns_.end()) {
      it->second->respond(r.status, kJsonType, r.body, r.extra_headers);
    }
  });
}

}  // namespace ringmail::engine
