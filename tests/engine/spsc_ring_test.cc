#include "engine/spsc_ring.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace ringmail::engine {
namespace {

TEST(SpscRing, FullAndEmpty) {
  SpscRing<uint64_t, 4> r;
  EXPECT_TRUE(r.empty());
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(r.try_push(i));
  }
  EXPECT_FALSE(r.try_push(99));
  std::vector<uint64_t> got;
  EXPECT_EQ(r.drain([&](uint64_t v) { got.push_back(v); }, 3), 3u);
  EXPECT_TRUE(r.try_push(4));
  EXPECT_EQ(r.drain([&](uint64_t v) { got.push_back(v); }, 10), 2u);
  EXPECT_EQ(got, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(r.empty());
}

TEST(SpscRing, TwoThreadsKeepOrderAndLoseNothing) {
  auto r = std::make_unique<SpscRing<uint64_t, 1024>>();
  constexpr uint64_t kN = 2'000'000;
  std::thread producer([&] {
    for (uint64_t i = 0; i < kN;) {
      if (r->try_push(i)) {
        ++i;
      }
    }
  });
  uint64_t expect = 0;
  bool ordered = true;
  while (expect < kN) {
    r->drain(
        [&](uint64_t v) {
          ordered = ordered && v == expect;
          ++expect;
        },
        256);
  }
  producer.join();
  EXPECT_TRUE(ordered);
  EXPECT_EQ(expect, kN);
}

struct Node : MpscNode {
  int producer;
  int seq;
};

TEST(MpscQueue, FourProducersEachInOrder) {
  MpscQueue q;
  constexpr int kPer = 200'000;
  std::vector<std::thread> ps;
  for (int p = 0; p < 4; ++p) {
    ps.emplace_back([&, p] {
      for (int i = 0; i < kPer; ++i) {
        q.push(new Node{{}, p, i});
      }
    });
  }
  std::vector<int> next(4, 0);
  int total = 0;
  bool ordered = true;
  while (total < 4 * kPer) {
    MpscNode* n = q.pop();
    if (n == nullptr) {
      continue;
    }
    auto* node = static_cast<Node*>(n);
    ordered = ordered && node->seq == next[static_cast<size_t>(node->producer)];
    ++next[static_cast<size_t>(node->producer)];
    ++total;
    delete node;
  }
  for (auto& t : ps) {
    t.join();
  }
  EXPECT_TRUE(ordered);
  EXPECT_EQ(q.pop(), nullptr);
}

}  // namespace
}  // namespace ringmail::engine
