#include "tools/batch_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace ringmail::tools {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

BatchClient::~BatchClient() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

BatchClient::BatchClient(BatchClient&& o) noexcept
    : fd_(o.fd_),
      out_(std::move(o.out_)),
      out_off_(o.out_off_),
      in_(std::move(o.in_)),
      in_off_(o.in_off_),
      hello_(o.hello_),
      server_name_(std::move(o.server_name_)) {
  o.fd_ = -1;
  hello_.peer_name = server_name_;
}

Result<BatchClient> BatchClient::connect(const std::string& socket_path, std::string_view name,
                                         int timeout_ms) {
  BatchClient c;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return make_error(Errc::kInvalidArgument, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  c.fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd_ < 0 || ::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return make_error(Errc::kIo, "connect " + socket_path + ": " + std::strerror(errno));
  }
  proto::Hello h;
  h.peer_name = name;
  std::string payload;
  proto::encode_hello(payload, h);
  c.queue_frame(proto::FrameType::kHello, payload);
  auto f = c.next(timeout_ms);
  if (!f.ok()) {
    return std::move(f).take_error();
  }
  if (!*f) {
    return make_error(Errc::kTimeout, "no HELLO reply from " + socket_path);
  }
  if ((*f)->type == proto::FrameType::kError) {
    return make_error(Errc::kProtocol, "server refused: " + (*f)->payload);
  }
  if ((*f)->type != proto::FrameType::kHello) {
    return make_error(Errc::kProtocol, "expected HELLO from the server");
  }
  auto hello = proto::decode_hello((*f)->payload);
  if (!hello.ok()) {
    return make_error(Errc::kProtocol, "bad HELLO from the server: " + hello.error().message);
  }
  c.server_name_ = std::string(hello->peer_name);
  c.hello_ = *hello;
  c.hello_.peer_name = c.server_name_;
  return c;
}

void BatchClient::queue_frame(proto::FrameType type, std::string_view payload) {
  if (out_off_ > 0 && out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  proto::append_frame(out_, type, payload);
}

void BatchClient::queue_batch(const proto::BatchView& batch) {
  std::string payload;
  proto::encode_batch(payload, batch);
  queue_frame(proto::FrameType::kBatch, payload);
}

void BatchClient::subscribe(bool own_only) {
  std::string payload;
  proto::append_field_u8(payload, proto::tag::kScope, own_only ? 1 : 0);
  queue_frame(proto::FrameType::kSubscribe, payload);
}

std::optional<Frame> BatchClient::take_frame(Result<void>* err) {
  size_t avail = in_.size() - in_off_;
  if (avail < proto::kFrameHeaderSize) {
    return std::nullopt;
  }
  auto h = proto::decode_frame_header(
      std::span<const char>(in_.data() + in_off_, proto::kFrameHeaderSize), 0xffffffffu);
  if (!h.ok()) {
    *err = make_error(Errc::kProtocol, "bad frame from the server: " + h.error().message);
    return std::nullopt;
  }
  if (avail < proto::kFrameHeaderSize + h->length) {
    return std::nullopt;
  }
  Frame f;
  f.type = static_cast<proto::FrameType>(h->type);
  f.payload.assign(in_.data() + in_off_ + proto::kFrameHeaderSize, h->length);
  in_off_ += proto::kFrameHeaderSize + h->length;
  if (in_off_ == in_.size()) {
    in_.clear();
    in_off_ = 0;
  } else if (in_off_ > (1u << 20)) {
    in_.erase(0, in_off_);
    in_off_ = 0;
  }
  return f;
}

Result<void> BatchClient::io(int timeout_ms, bool want_read) {
  pollfd p{};
  p.fd = fd_;
  p.events = static_cast<short>((want_read ? POLLIN : 0) | (pending_output() > 0 ? POLLOUT : 0));
  int rc = ::poll(&p, 1, timeout_ms);
  if (rc < 0) {
    return errno == EINTR ? ok_result()
                          : make_error(Errc::kIo, std::string("poll: ") + std::strerror(errno));
  }
  if (rc == 0) {
    return ok_result();
  }
  if ((p.revents & POLLOUT) != 0 && pending_output() > 0) {
    ssize_t w = ::send(fd_, out_.data() + out_off_, pending_output(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      // The server hung up (a refused client, a shutdown): what it said
      // before that — usually an ERROR frame — is still to be read.
      out_.clear();
      out_off_ = 0;
      p.revents |= POLLIN;
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      return make_error(Errc::kIo, std::string("send: ") + std::strerror(errno));
    }
    if (w > 0) {
      out_off_ += static_cast<size_t>(w);
      if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
      }
    }
  }
  if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    char buf[256 * 1024];
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) {
      return make_error(Errc::kClosed, "the server closed the connection");
    }
    if (r < 0 && errno != EAGAIN && errno != EINTR) {
      return make_error(Errc::kIo, std::string("recv: ") + std::strerror(errno));
    }
    if (r > 0) {
      in_.append(buf, static_cast<size_t>(r));
    }
  }
  return ok_result();
}

Result<std::optional<Frame>> BatchClient::next(int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  for (;;) {
    Result<void> err;
    auto f = take_frame(&err);
    if (!err.ok()) {
      return std::move(err).take_error();
    }
    if (f) {
      return f;
    }
    int wait = -1;
    if (deadline >= 0) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        return std::optional<Frame>();
      }
      wait = static_cast<int>(left);
    }
    auto r = io(wait, true);
    if (!r.ok()) {
      return std::move(r).take_error();
    }
  }
}

Result<void> BatchClient::flush(int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (pending_output() > 0) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      return make_error(Errc::kTimeout, "timed out writing to the server");
    }
    auto r = io(static_cast<int>(left), true);
    if (!r.ok()) {
      return r;
    }
  }
  return ok_result();
}

std::string event_field(std::string_view json, std::string_view key) {
  std::string pat = "\"" + std::string(key) + "\":";
  size_t p = json.find(pat);
  if (p == std::string_view::npos) {
    return "";
  }
  p += pat.size();
  if (p < json.size() && json[p] == '"') {
    std::string out;
    for (size_t i = p + 1; i < json.size(); ++i) {
      char c = json[i];
      if (c == '"') {
        return out;
      }
      if (c == '\\' && i + 1 < json.size()) {
        ++i;
        char e = json[i];
        out.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
        continue;
      }
      out.push_back(c);
    }
    return out;
  }
  size_t e = p;
  while (e < json.size() && json[e] != ',' && json[e] != '}') {
    ++e;
  }
  return std::string(json.substr(p, e - p));
}

}  // namespace ringmail::tools
