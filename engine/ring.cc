#include "engine/ring.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "engine/log.h"

namespace ringmail::engine {
namespace {

bool env_disables_features() {
  const char* v = std::getenv("RINGMAIL_RING_FEATURES");
  return v != nullptr && std::strcmp(v, "none") == 0;
}

int try_init(io_uring* ring, unsigned entries, unsigned flags) {
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  p.flags = flags;
  return io_uring_queue_init_params(entries, ring, &p);
}

}  // namespace

std::string RingFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) {
      if (!s.empty()) {
        s += ",";
      }
      s += name;
    }
  };
  add(single_issuer, "single_issuer");
  add(defer_taskrun, "defer_taskrun");
  add(coop_taskrun, "coop_taskrun");
  add(ext_arg, "ext_arg");
  add(send_zc, "send_zc");
  add(msg_ring, "msg_ring");
  add(recv_multishot, "recv_multishot");
  add(accept_multishot, "accept_multishot");
  return s.empty() ? "none" : s;
}

Result<std::unique_ptr<Ring>> Ring::create(const Options& options) {
  std::unique_ptr<Ring> r(new Ring());
  bool optional = options.allow_optional_features && !env_disables_features();
  // Most capable first; each step down is a kernel that lacks one flag.
  const unsigned attempts[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
      IORING_SETUP_COOP_TASKRUN,
      0,
  };
  int rc = -EINVAL;
  unsigned used = 0;
  for (unsigned flags : attempts) {
    if (!optional && flags != 0) {
      continue;
    }
    rc = try_init(&r->ring_, options.entries, flags);
    if (rc == 0) {
      used = flags;
      break;
    }
    if (rc != -EINVAL) {
      break;
    }
  }
  if (rc != 0) {
    return make_error(Errc::kIo, std::string("io_uring_queue_init: ") + std::strerror(-rc));
  }
  RingFeatures& f = r->features_;
  f.single_issuer = (used & IORING_SETUP_SINGLE_ISSUER) != 0;
  f.defer_taskrun = (used & IORING_SETUP_DEFER_TASKRUN) != 0;
  f.coop_taskrun = (used & IORING_SETUP_COOP_TASKRUN) != 0;
  f.ext_arg = (r->ring_.features & IORING_FEAT_EXT_ARG) != 0;
  if (optional) {
    io_uring_probe* probe = io_uring_get_probe_ring(&r->ring_);
    if (probe != nullptr) {
      f.send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) != 0;
      f.msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
      // Multishot recv and accept arrived with SEND_ZC's kernel generation
      // (6.0) and 5.19; there is no opcode probe for a flag, so key them on
      // the newest opcode this liburing knows that came with them.
      f.recv_multishot = f.send_zc;
      f.accept_multishot = io_uring_opcode_supported(probe, IORING_OP_SOCKET) != 0;
      io_uring_free_probe(probe);
    }
  }
  return r;
}

Ring::~Ring() {
  io_uring_queue_exit(&ring_);
}

io_uring_sqe* Ring::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (s == nullptr) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
    RM_ASSERT(s != nullptr);
  }
  return s;
}

void Ring::recv(int fd, void* buf, size_t len, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv(s, fd, buf, len, 0);
  bind(s, c);
}

void Ring::send(int fd, const void* buf, size_t len, int msg_flags, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, fd, buf, len, msg_flags);
  bind(s, c);
}

void Ring::sendmsg(int fd, const msghdr* msg, int msg_flags, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_sendmsg(s, fd, msg, static_cast<unsigned>(msg_flags));
  bind(s, c);
}

void Ring::read(int fd, void* buf, size_t len, uint64_t offset, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, fd, buf, static_cast<unsigned>(len), offset);
  bind(s, c);
}

void Ring::write(int fd, const void* buf, size_t len, uint64_t offset, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_write(s, fd, buf, static_cast<unsigned>(len), offset);
  bind(s, c);
}

void Ring::connect(int fd, const sockaddr* addr, socklen_t len, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_connect(s, fd, addr, len);
  bind(s, c);
}

void Ring::accept(int fd, Completion* c, bool multishot) {
  io_uring_sqe* s = sqe();
  if (multishot && features_.accept_multishot) {
    io_uring_prep_multishot_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  } else {
    io_uring_prep_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  }
  bind(s, c);
}

void Ring::close(int fd, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_close(s, fd);
  bind(s, c);
}

void Ring::shutdown(int fd, int how, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_shutdown(s, fd, how);
  bind(s, c);
}

void Ring::poll_add(int fd, unsigned mask, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_add(s, fd, mask);
  bind(s, c);
}

void Ring::poll_remove(Completion* target, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_remove(s, reinterpret_cast<uint64_t>(target));
  bind(s, c);
}

void Ring::cancel(Completion* target, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_cancel64(s, reinterpret_cast<uint64_t>(target), IORING_ASYNC_CANCEL_ALL);
  bind(s, c);
}

void Ring::fsync(int fd, bool datasync, Completion* c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_fsync(s, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
  bind(s, c);
}

int Ring::submit() {
  int rc = io_uring_submit(&ring_);
  return rc == -EINTR ? 0 : rc;
}

int Ring::submit_and_wait(Nanos timeout) {
  __kernel_timespec ts;
  int64_t ns = timeout.count() < 0 ? 0 : timeout.count();
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  io_uring_cqe* cqe = nullptr;
  int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  if (rc == -ETIME || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
    return 0;
  }
  return rc;
}

unsigned Ring::reap() {
  unsigned total = 0;
  for (;;) {
    io_uring_cqe* cqes[64];
    unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 64);
    if (n == 0) {
      break;
    }
    for (unsigned i = 0; i < n; ++i) {
      auto* c = reinterpret_cast<Completion*>(io_uring_cqe_get_data(cqes[i]));
      int res = cqes[i]->res;
      uint32_t flags = cqes[i]->flags;
      // Advance before running: a completion may submit and wait again.
      io_uring_cq_advance(&ring_, 1);
      if (c != nullptr) {
        c->complete(res, flags);
      }
    }
    total += n;
  }
  return total;
}

}  // namespace ringmail::engine
