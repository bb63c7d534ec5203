// The daemon's Unix sockets as a hostile client or a careless operator
// would meet them: announced frame sizes that never arrive, frames that
// together would exhaust memory, clients that say nothing, control
// commands on the ingest socket, peers the configuration does not allow,
// and the privilege drop after binding. ringmaild runs as a child process;
// every wait polls a condition against a deadline.
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>

#include "proto/batch_wire.h"
#include "tests/e2e/harness.h"
#include "tools/batch_client.h"

namespace ringmail::testing {
namespace {

/// A raw client of the batch protocol: it writes exactly what a test says,
/// including frames it never finishes.
class RawClient {
 public:
  ~RawClient() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  bool connect(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    return fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  /// Sends HELLO and waits for the server's.
  bool hello() {
    std::string payload, frame;
    proto::Hello h;
    h.peer_name = "ingest-test";
    proto::encode_hello(payload, h);
    proto::append_frame(frame, proto::FrameType::kHello, payload);
    auto f = send_all(frame) ? read_frame() : std::nullopt;
    return f && f->type == proto::FrameType::kHello;
  }
  bool send_all(std::string_view bytes, milliseconds timeout = milliseconds(10'000)) {
    auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return false;
      }
      pollfd p{fd_, POLLOUT, 0};
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) < 0) {
        return false;
      }
    }
    return true;
  }
  /// The next frame, or nullopt on EOF, error or timeout.
  std::optional<tools::Frame> read_frame(milliseconds timeout = milliseconds(10'000)) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (in_.size() >= proto::kFrameHeaderSize) {
        uint32_t len = (uint32_t{static_cast<uint8_t>(in_[0])} << 24) |
                       (uint32_t{static_cast<uint8_t>(in_[1])} << 16) |
                       (uint32_t{static_cast<uint8_t>(in_[2])} << 8) | static_cast<uint8_t>(in_[3]);
        if (in_.size() >= proto::kFrameHeaderSize + len) {
          tools::Frame f{static_cast<proto::FrameType>(in_[4]),
                         in_.substr(proto::kFrameHeaderSize, len)};
          in_.erase(0, proto::kFrameHeaderSize + len);
          return f;
        }
      }
      pollfd p{fd_, POLLIN, 0};
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) {
        return std::nullopt;
      }
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        return std::nullopt;
      }
      in_.append(buf, static_cast<size_t>(n));
    }
  }
  /// Waits for an ERROR frame and the close after it; returns its text.
  std::string error_and_close(milliseconds timeout = milliseconds(10'000)) {
    auto f = read_frame(timeout);
    if (!f || f->type != proto::FrameType::kError) {
      return "";
    }
    read_frame(timeout);  // then EOF
    return eof_ ? f->payload : "";
  }
  bool eof() const { return eof_; }

 private:
  int fd_ = -1;
  std::string in_;
  bool eof_ = false;
};

std::string frame_header(proto::FrameType type, uint32_t length) {
  std::string h;
  proto::append_frame_header(h, type, length);
  return h;
}

long rss_kb(pid_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/status").value_or("");
  size_t p = s.find("VmRSS:");
  return p == std::string::npos ? -1 : std::stol(s.substr(p + 6));
}

proto::Ack send_batch(tools::BatchClient& c, const proto::BatchView& b) {
  c.queue_batch(b);
  for (;;) {
    auto f = c.next(10'000);
    if (!f.ok() || !*f) {
      ADD_FAILURE() << "no ACK";
      return {};
    }
    if ((*f)->type == proto::FrameType::kAck) {
      auto ack = proto::decode_ack((*f)->payload);
      EXPECT_TRUE(ack.ok());
      return ack.ok() ? *ack : proto::Ack{};
    }
  }
}

/// A one-recipient batch that owns its bytes (a BatchView only points).
struct SmallBatch {
  SmallBatch(std::string id_in, std::string msg_in)
      : id(std::move(id_in)), msg(std::move(msg_in)), rcpt(id + "@example.test") {}
  operator proto::BatchView() const {
    proto::BatchView b;
    b.batch_id = id;
    b.sender = "s@example.test";
    b.has_sender = true;
    b.message = msg;
    b.recipients = {rcpt};
    return b;
  }
  std::string id, msg, rcpt;
};

SmallBatch small_batch(const std::string& id, const std::string& msg) {
  return SmallBatch(id, msg);
}

class IngestTest : public ::testing::Test {
 protected:
  /// ringmaild with its sockets in a temporary directory, delivering to
  /// `sink_port`; `extra` is appended to the configuration.
  void start(uint16_t sink_port, const std::string& extra = "",
             const std::string& ingest_extra = "") {
    socket_ = dir_.file("rm.sock");
    control_ = dir_.file("rm-ctl.sock");
    std::string cfg = "[ingest]\nsocket = \"" + socket_ + "\"\n" + ingest_extra +
                      "[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink_port) + "\"\n" +
                      extra;
    if (extra.find("[events]") == std::string::npos) {
      cfg += "[events]\nfile = \"\"\n";
    }
    if (extra.find("[spool]") == std::string::npos) {
      cfg += "[spool]\nmode = \"off\"\n";
    }
    std::ofstream(dir_.file("ringmail.toml")) << cfg;
    ASSERT_TRUE(daemon_.start({env_or("RINGMAILD", ""), "--config", dir_.file("ringmail.toml")},
                              dir_.path(), "ringmaild"));
    ASSERT_TRUE(eventually([&] {
      return tools::BatchClient::connect(socket_, "probe", 1'000).ok() || !daemon_.running();
    })) << daemon_.err();
    ASSERT_TRUE(daemon_.running()) << daemon_.err();
  }
  TempDir dir_;
  Child daemon_;
  std::string socket_, control_;
};

// Twenty clients announce frames of nearly 128 MiB and send 1 KiB of each:
// the daemon must not reserve what was only announced (it used to: 2.6 GB
// of RSS, and an abort under a 4 GiB address-space limit).
TEST_F(IngestTest, AnnouncedFrameSizesReserveNothing) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port());
  long before = rss_kb(daemon_.pid());
  ASSERT_GT(before, 0);
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 20; ++i) {
    auto c = std::make_unique<RawClient>();
    ASSERT_TRUE(c->connect(socket_));
    ASSERT_TRUE(c->hello());
    ASSERT_TRUE(c->send_all(frame_header(proto::FrameType::kBatch, (128u << 20) - 64) +
                            std::string(1024, 'x')));
    clients.push_back(std::move(c));
  }
  // Every client's partial frame has reached the daemon once a new client
  // gets its HELLO answered (one shard serves the socket, in order).
  auto probe = tools::BatchClient::connect(socket_, "probe");
  ASSERT_TRUE(probe.ok()) << probe.error().message;
  long after = rss_kb(daemon_.pid());
  EXPECT_LT(after - before, 64 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
  // And it still works.
  proto::Ack ack = send_batch(*probe, small_batch("after", message_of(500)));
  EXPECT_EQ(ack.status, proto::AckStatus::kAccepted) << ack.reason;
  EXPECT_TRUE(sink.wait_stat("recipients", 1));
}

// Frames that arrive for real are bounded across clients: the client whose
// frame would pass ingest.max_buffered_bytes gets a clear ERROR; others
// carry on, and the memory comes back when a client leaves.
TEST_F(IngestTest, BufferedFramesAreBoundedAcrossClients) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port(), "", "max_buffered_bytes = \"4MiB\"\n");
  const uint32_t frame = 3u << 20;
  auto a = std::make_unique<RawClient>();
  ASSERT_TRUE(a->connect(socket_));
  ASSERT_TRUE(a->hello());
  ASSERT_TRUE(
      a->send_all(frame_header(proto::FrameType::kBatch, frame) + std::string(frame - 4096, 'a')));
  RawClient b;
  ASSERT_TRUE(b.connect(socket_));
  ASSERT_TRUE(b.hello());
  // b may not get all of its bytes in before the daemon refuses it.
  (void)b.send_all(frame_header(proto::FrameType::kBatch, frame) + std::string(frame - 4096, 'b'),
                   milliseconds(3'000));
  std::string why = b.error_and_close();
  EXPECT_NE(why.find("ingest.max_buffered_bytes"), std::string::npos) << why;
  EXPECT_NE(why.find("retry later"), std::string::npos) << why;
  // A small batch still fits beside a's 3 MiB.
  auto c = tools::BatchClient::connect(socket_, "small");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(send_batch(*c, small_batch("small", message_of(500))).status,
            proto::AckStatus::kAccepted);
  // a leaves: a 3 MiB message now fits.
  a.reset();
  SmallBatch big = small_batch("big", message_of(3u << 20));
  bool accepted = eventually([&] {
    auto d = tools::BatchClient::connect(socket_, "big");
    return d.ok() && send_batch(*d, big).status == proto::AckStatus::kAccepted;
  });
  EXPECT_TRUE(accepted);
  EXPECT_TRUE(sink.wait_stat("recipients", 2));
}

TEST_F(IngestTest, SilentAndIdleClientsAreClosedSubscribersAreNot) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port(), "", "hello_timeout = \"300ms\"\nidle_timeout = \"600ms\"\n");
  // A subscriber, connected first: waiting for events is not idleness.
  auto sub = tools::BatchClient::connect(socket_, "subscriber");
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  sub->subscribe(/*own_only=*/true);
  ASSERT_TRUE(sub->flush(5'000).ok());
  // Never says HELLO.
  RawClient mute;
  ASSERT_TRUE(mute.connect(socket_));
  auto t0 = Clock::now();
  std::string why = mute.error_and_close();
  EXPECT_NE(why.find("no HELLO within ingest.hello_timeout"), std::string::npos) << why;
  EXPECT_LT(Clock::now() - t0, milliseconds(5'000));
  // Says HELLO, then nothing.
  RawClient idle;
  ASSERT_TRUE(idle.connect(socket_));
  ASSERT_TRUE(idle.hello());
  why = idle.error_and_close();
  EXPECT_NE(why.find("idle for ingest.idle_timeout"), std::string::npos) << why;
  // The subscriber, idle longer than that, is still served.
  proto::Ack ack = send_batch(*sub, small_batch("alive", message_of(500)));
  EXPECT_EQ(ack.status, proto::AckStatus::kAccepted) << ack.reason;
  bool delivered = false;
  for (int i = 0; i < 50 && !delivered; ++i) {
    auto f = sub->next(1'000);
    ASSERT_TRUE(f.ok()) << f.error().message;
    delivered = *f && (*f)->type == proto::FrameType::kEvent &&
                (*f)->payload.find("\"delivered\"") != std::string::npos;
  }
  EXPECT_TRUE(delivered);
}

TEST_F(IngestTest, OperatorCommandsAndAllEventsOnlyOnTheControlSocket) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port());
  {
    auto c = tools::BatchClient::connect(socket_, "sneaky");
    ASSERT_TRUE(c.ok());
    c->queue_frame(proto::FrameType::kControl, "suppression remove a@example.test");
    auto f = c->next(5'000);
    ASSERT_TRUE(f.ok() && *f);
    EXPECT_EQ((*f)->type, proto::FrameType::kError);
    EXPECT_NE((*f)->payload.find("control socket"), std::string::npos) << (*f)->payload;
  }
  {
    auto c = tools::BatchClient::connect(socket_, "nosy");
    ASSERT_TRUE(c.ok());
    c->subscribe(/*own_only=*/false);
    auto f = c->next(5'000);
    ASSERT_TRUE(f.ok() && *f);
    EXPECT_EQ((*f)->type, proto::FrameType::kError);
    EXPECT_NE((*f)->payload.find("scope=own"), std::string::npos) << (*f)->payload;
  }
  // The control socket (next to the ingest socket, mode 0600) serves them,
  // and ringmail-ctl finds it.
  struct stat st {};
  ASSERT_EQ(::stat(control_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto ctl = tools::BatchClient::connect(control_, "operator");
  ASSERT_TRUE(ctl.ok()) << ctl.error().message;
  ctl->subscribe(/*own_only=*/false);
  ctl->queue_frame(proto::FrameType::kControl, "stats");
  auto f = ctl->next(5'000);
  ASSERT_TRUE(f.ok() && *f);
  EXPECT_EQ((*f)->type, proto::FrameType::kControlReply);
  EXPECT_NE((*f)->payload.find("\"ok\":true"), std::string::npos) << (*f)->payload;
  // Batches are not taken there.
  auto writer = tools::BatchClient::connect(control_, "misdirected");
  ASSERT_TRUE(writer.ok());
  writer->queue_batch(small_batch("wrong", message_of(300)));
  auto e = writer->next(5'000);
  ASSERT_TRUE(e.ok() && *e);
  EXPECT_EQ((*e)->type, proto::FrameType::kError);
  EXPECT_NE((*e)->payload.find("ingest.socket"), std::string::npos) << (*e)->payload;
  // The operator's subscription sees every client's events.
  auto platform = tools::BatchClient::connect(socket_, "platform");
  ASSERT_TRUE(platform.ok());
  EXPECT_EQ(send_batch(*platform, small_batch("seen", message_of(300))).status,
            proto::AckStatus::kAccepted);
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    auto ev = ctl->next(1'000);
    ASSERT_TRUE(ev.ok());
    seen = *ev && (*ev)->type == proto::FrameType::kEvent &&
           (*ev)->payload.find("seen@example.test") != std::string::npos;
  }
  EXPECT_TRUE(seen);
}

using DaemonShutdown = IngestTest;

// SIGTERM with mail that cannot go anywhere now (its destination refuses
// connections; the retry is a minute away): the daemon stops at once
// instead of waiting out engine.shutdown_grace, and says truthfully what
// becomes of the queued mail for the spool mode it runs with.
TEST_F(DaemonShutdown, StopsPromptlyWhenNothingCanBeDeliveredAndSaysWhereMailStays) {
  for (const std::string mode : {"off", "sync"}) {
    SCOPED_TRACE(mode);
    uint16_t closed = free_port();
    start(closed, "[engine]\nshutdown_grace = \"60s\"\n[spool]\nmode = \"" + mode + "\"\ndir = \"" +
                      dir_.file("spool-" + mode) +
                      "\"\n[retry]\nschedule = [\"1m\"]\n[delivery]\nbackoff = \"5m\"\n");
    auto c = tools::BatchClient::connect(socket_, "shutdown");
    ASSERT_TRUE(c.ok()) << c.error().message;
    c->subscribe(/*own_only=*/true);
    EXPECT_EQ(send_batch(*c, small_batch("stuck", message_of(300))).status,
              proto::AckStatus::kAccepted);
    bool deferred = false;
    for (int i = 0; i < 20 && !deferred; ++i) {
      auto f = c->next(1'000);
      ASSERT_TRUE(f.ok()) << f.error().message;
      deferred = *f && (*f)->payload.find("\"deferred\"") != std::string::npos;
    }
    ASSERT_TRUE(deferred);
    auto t0 = Clock::now();
    EXPECT_EQ(daemon_.terminate(SIGTERM, milliseconds(20'000)), 0) << daemon_.err();
    EXPECT_LT(Clock::now() - t0, milliseconds(15'000)) << "waited for a grace that could not help";
    std::string err = daemon_.err();
    EXPECT_NE(err.find("none can be delivered now"), std::string::npos) << err;
    if (mode == "off") {
      EXPECT_NE(err.find("with the spool off they are not kept"), std::string::npos) << err;
    } else {
      EXPECT_EQ(err.find("not kept"), std::string::npos) << err;
      EXPECT_NE(err.find("they stay in the spool"), std::string::npos) << err;
    }
  }
}

/// Runs `argv` as uid/gid 65534 (nobody) through setpriv; returns the exit
/// code and the output.
std::pair<int, std::string> run_as_nobody(const std::vector<std::string>& argv,
                                          const std::string& dir, const std::string& tag) {
  std::vector<std::string> full = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                   "--clear-groups"};
  full.insert(full.end(), argv.begin(), argv.end());
  Child c;
  if (!c.start(full, dir, tag)) {
    return {-1, "cannot start setpriv"};
  }
  int rc = c.wait(milliseconds(30'000));
  return {rc, c.out() + c.err()};
}

TEST_F(IngestTest, PeerCredentialsAreCheckedOnBothSockets) {
  if (::geteuid() != 0 || !have_program("/usr/bin/setpriv")) {
    GTEST_SKIP() << "needs root and setpriv to connect as another user";
  }
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // nobody may reach the sockets' directory
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  // Both sockets world-connectable: only SO_PEERCRED stands in the way.
  start(sink.port(), "[control]\nsocket_mode = \"0666\"\n",
        "socket_mode = \"0666\"\nallowed_users = [\"root\"]\n");
  const std::string ctl = env_or("RINGMAIL_CTL", "");
  auto [rc, out] = run_as_nobody({ctl, "--socket", control_, "stats"}, dir_.path(), "ctl-nobody");
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("permission denied: uid 65534"), std::string::npos) << out;
  EXPECT_NE(out.find("control.allowed_users"), std::string::npos) << out;
  auto [rc2, out2] =
      run_as_nobody({ctl, "--socket", socket_, "stats"}, dir_.path(), "ingest-nobody");
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("ingest.allowed_users"), std::string::npos) << out2;
  EXPECT_NE(daemon_.err().find("uid 65534"), std::string::npos) << daemon_.err();
  // Root (and ringmail's own user) always may.
  Child own;
  ASSERT_TRUE(own.start({ctl, "--socket", control_, "stats"}, dir_.path(), "ctl-root"));
  EXPECT_EQ(own.wait(), 0) << own.out() << own.err();
}

TEST_F(IngestTest, AllowedUsersGetIn) {
  if (::geteuid() != 0 || !have_program("/usr/bin/setpriv")) {
    GTEST_SKIP() << "needs root and setpriv to connect as another user";
  }
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port(), "[control]\nsocket_mode = \"0666\"\nallowed_users = [65534]\n");
  auto [rc, out] = run_as_nobody({env_or("RINGMAIL_CTL", ""), "--socket", control_, "stats"},
                                 dir_.path(), "ctl-allowed");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"ok\":true"), std::string::npos) << out;
}

TEST_F(IngestTest, PrivilegesAreDroppedOnceTheSocketsAreBound) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to switch users";
  }
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  // The working directory (spool, events) belongs to the service user.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(::chown(dir_.path().c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  start(sink.port(), "[engine]\nuser = \"nobody\"\n[spool]\nmode = \"sync\"\ndir = \"" +
                         dir_.file("spool") + "\"\n[events]\nfile = \"" +
                         dir_.file("events.jsonl") + "\"\n");
  std::string status = read_file("/proc/" + std::to_string(daemon_.pid()) + "/status").value_or("");
  std::string want = std::to_string(nobody->pw_uid);
  EXPECT_NE(status.find("Uid:\t" + want + "\t" + want + "\t" + want + "\t" + want),
            std::string::npos)
      << status;
  EXPECT_NE(status.find("Groups:\t" + std::to_string(nobody->pw_gid)), std::string::npos) << status;
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody->pw_uid);
  ASSERT_EQ(::stat(dir_.file("spool").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody->pw_uid);
  // It works as that user: a batch is made durable and delivered.
  auto c = tools::BatchClient::connect(socket_, "after-drop");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(send_batch(*c, small_batch("dropped", message_of(300))).status,
            proto::AckStatus::kAccepted);
  EXPECT_TRUE(sink.wait_stat("recipients", 1));
  EXPECT_EQ(daemon_.terminate(), 0) << daemon_.err();
}

}  // namespace
}  // namespace ringmail::testing
