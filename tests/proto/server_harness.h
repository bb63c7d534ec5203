/// server_harness.h — a scripted driver for ServerSession tests: feeds
/// client writes (each in an exact-size heap buffer), answers decisions with
/// a callback, and collects replies, decisions, bodies and AUTH requests.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "proto/smtp_server.h"
#include "tests/proto/test_util.h"

namespace ringmail::proto::test {

// A scripted driver: feeds client bytes (each read in an exact-size heap
// buffer), answers decisions with `decide`, collects replies.
class Harness {
 public:
  using Action = ServerSession::Action;

  explicit Harness(ServerConfig config = {}, bool start = true) : s(std::move(config)) {
    if (start) {
      s.start();
      greeting = take_output();
    }
  }

  // One client write; returns the replies it produced.
  std::string send(std::string_view bytes) {
    std::string pending(bytes);
    while (true) {
      HeapBytes hb(pending);
      ServerSession::FeedResult r = s.feed(hb.span());
      EXPECT_LE(r.consumed, pending.size());
      pending.erase(0, r.consumed);
      last = r.action;
      if (r.action == Action::kDecide) {
        decisions.push_back(s.decision().kind);
        if (s.decision().kind == DecisionKind::kMessage) {
          bodies.push_back(s.decision().transaction->body);
          body_sizes.push_back(s.decision().transaction->body_size);
        }
        if (s.decision().kind == DecisionKind::kAuth) {
          const AuthRequest& a = *s.decision().auth;
          auth_seen.push_back(a.mechanism + ":" + a.authzid + ":" + a.user + ":" + a.password);
        }
        decide(s);
        continue;
      }
      if (r.action == Action::kFlush) {
        flushed += take_output();
        continue;
      }
      if (r.action == Action::kNeedInput) {
        EXPECT_TRUE(pending.empty());
      }
      break;
    }
    leftover = pending;
    return flushed_and_take();
  }

  std::string take_output() {
    std::string out(s.output());
    s.consume_output(out.size());
    return out;
  }

  ServerSession s;
  std::function<void(ServerSession&)> decide = [](ServerSession& x) { x.accept(); };
  std::string greeting;
  Action last = Action::kNeedInput;
  std::string leftover;
  std::vector<DecisionKind> decisions;
  std::vector<std::string> bodies;
  std::vector<uint64_t> body_sizes;
  std::vector<std::string> auth_seen;

 private:
  std::string flushed_and_take() {
    std::string out = flushed + take_output();
    flushed.clear();
    return out;
  }
  std::string flushed;
};

}  // namespace ringmail::proto::test
