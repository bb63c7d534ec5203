// The io_uring wrapper, run over both feature sets: everything the kernel
// offers, and the oldest-kernel fallbacks (no optional flags or opcodes).
#include "engine/ring.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace ringmail::engine {
namespace {

struct Capture final : Completion {
  int res = 0;
  int count = 0;
  void complete(int r, uint32_t) override {
    res = r;
    ++count;
  }
};

class RingTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    Ring::Options o;
    o.allow_optional_features = GetParam();
    auto r = Ring::create(o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ring_ = std::move(*r);
  }
  void run_until(const Capture& c, int want = 1) {
    for (int i = 0; i < 100 && c.count < want; ++i) {
      ring_->submit_and_wait(Millis(100));
      ring_->reap();
    }
  }
  std::unique_ptr<Ring> ring_;
};

TEST_P(RingTest, FeaturesMatchTheRequest) {
  if (!GetParam()) {
    EXPECT_FALSE(ring_->features().single_issuer);
    EXPECT_FALSE(ring_->features().defer_taskrun);
    EXPECT_FALSE(ring_->features().send_zc);
    EXPECT_EQ(ring_->features().describe().find("multishot"), std::string::npos);
  }
}

TEST_P(RingTest, SocketSendRecvAndCancel) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char buf[16] = {};
  Capture recv_c, send_c, cancel_c;
  ring_->recv(sv[0], buf, sizeof buf, &recv_c);
  ring_->send(sv[1], "ping", 4, 0, &send_c);
  run_until(recv_c);
  run_until(send_c);
  EXPECT_EQ(send_c.res, 4);
  EXPECT_EQ(recv_c.res, 4);
  EXPECT_EQ(std::string(buf, 4), "ping");
  // A pending receive is cancelled by its Completion pointer.
  Capture pending;
  ring_->recv(sv[0], buf, sizeof buf, &pending);
  ring_->submit_and_wait(Nanos(0));
  ring_->cancel(&pending, &cancel_c);
  run_until(pending);
  run_until(cancel_c);
  EXPECT_EQ(pending.res, -ECANCELED);
  close(sv[0]);
  close(sv[1]);
}

TEST_P(RingTest, WaitTimesOutWithoutCompletions) {
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_GE(ring_->submit_and_wait(Millis(30)), 0);
  EXPECT_EQ(ring_->reap(), 0u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, Millis(25));
}

TEST_P(RingTest, EventfdReadCompletesOnWrite) {
  int fd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint64_t v = 0;
  Capture c;
  ring_->read(fd, &v, sizeof v, 0, &c);
  ring_->submit_and_wait(Nanos(0));
  uint64_t one = 7;
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
  run_until(c);
  EXPECT_EQ(c.res, 8);
  EXPECT_EQ(v, 7u);
  close(fd);
}

INSTANTIATE_TEST_SUITE_P(Features, RingTest, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "all" : "fallback"; });

}  // namespace
}  // namespace ringmail::engine
