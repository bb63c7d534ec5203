#include "engine/timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

namespace ringmail::engine {
namespace {

struct Fired {
  std::vector<int>* log;
  int id;
};

void record(void* p) {
  auto* f = static_cast<Fired*>(p);
  f->log->push_back(f->id);
}

TEST(TimerWheel, FiresInDeadlineOrderAndNeverEarly) {
  TimePoint t0(std::chrono::hours(1));
  TimerWheel w(t0);
  std::vector<int> log;
  std::vector<Fired> ctx = {{&log, 0}, {&log, 1}, {&log, 2}, {&log, 3}};
  Timer a(&record, &ctx[0]), b(&record, &ctx[1]), c(&record, &ctx[2]), d(&record, &ctx[3]);
  w.schedule(&a, t0 + Millis(500));
  w.schedule(&b, t0 + Millis(5));
  w.schedule(&c, t0 + Millis(70'000));
  w.schedule(&d, t0 + Millis(5LL * 24 * 3600 * 1000));  // five days
  EXPECT_EQ(w.size(), 4u);
  EXPECT_EQ(w.advance(t0 + Millis(4)), 0u);
  EXPECT_EQ(w.advance(t0 + Millis(5)), 1u);
  EXPECT_EQ(w.advance(t0 + Millis(499)), 0u);
  EXPECT_EQ(w.advance(t0 + Millis(69'999)), 1u);
  EXPECT_EQ(w.advance(t0 + Millis(70'000)), 1u);
  EXPECT_EQ(w.advance(t0 + Millis(5LL * 24 * 3600 * 1000 - 1)), 0u);
  EXPECT_EQ(w.advance(t0 + Millis(5LL * 24 * 3600 * 1000)), 1u);
  EXPECT_EQ(log, (std::vector<int>{1, 0, 2, 3}));
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, CancelAndRescheduleAndDestructorDisarm) {
  TimePoint t0(std::chrono::hours(1));
  TimerWheel w(t0);
  std::vector<int> log;
  Fired f0{&log, 0}, f1{&log, 1};
  Timer a(&record, &f0);
  w.schedule(&a, t0 + Millis(10));
  w.schedule(&a, t0 + Millis(20));  // re-arm moves it
  EXPECT_EQ(w.size(), 1u);
  {
    Timer b(&record, &f1);
    w.schedule(&b, t0 + Millis(15));
    EXPECT_EQ(w.size(), 2u);
  }  // destroyed while armed: cancels itself
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.advance(t0 + Millis(15)), 0u);
  a.cancel();
  EXPECT_FALSE(a.armed());
  EXPECT_EQ(w.advance(t0 + Millis(100)), 0u);
  EXPECT_TRUE(log.empty());
}

TEST(TimerWheel, NextWakeupIsNeverLaterThanTheDeadline) {
  TimePoint t0(std::chrono::hours(1));
  TimerWheel w(t0);
  std::vector<int> log;
  Fired f{&log, 0};
  Timer a(&record, &f);
  EXPECT_FALSE(w.next_wakeup().has_value());
  TimePoint due = t0 + Millis(123'456);
  w.schedule(&a, due);
  // Follow next_wakeup() like a shard loop does: each step must stay at or
  // before the deadline, and the timer must fire exactly at it.
  int steps = 0;
  while (log.empty()) {
    auto n = w.next_wakeup();
    ASSERT_TRUE(n.has_value());
    ASSERT_LE(*n, due);
    w.advance(*n);
    ASSERT_LT(++steps, 20);
  }
  EXPECT_EQ(log.size(), 1u);
}

struct Rescheduler {
  TimerWheel* w;
  Timer* t;
  TimePoint next;
  int count = 0;
};

void reschedule(void* p) {
  auto* r = static_cast<Rescheduler*>(p);
  if (++r->count < 5) {
    r->next += Millis(1000);
    r->w->schedule(r->t, r->next);
  }
}

TEST(TimerWheel, CallbackMayRearmItself) {
  TimePoint t0(std::chrono::hours(1));
  TimerWheel w(t0);
  Rescheduler r{&w, nullptr, t0 + Millis(1000)};
  Timer t(&reschedule, &r);
  r.t = &t;
  w.schedule(&t, r.next);
  w.advance(t0 + Millis(10'000));
  EXPECT_EQ(r.count, 5);
}

// Against a reference (multimap) with random deadlines, cancels and jumps.
TEST(TimerWheel, MatchesReferenceModel) {
  std::mt19937_64 rng(42);
  TimePoint t0(std::chrono::hours(1));
  TimerWheel w(t0);
  std::vector<int> log;
  const int n = 2000;
  std::vector<Fired> ctx;
  ctx.reserve(n);
  std::vector<std::unique_ptr<Timer>> timers;
  std::map<int, int64_t> ref;  // id -> deadline ms
  for (int i = 0; i < n; ++i) {
    ctx.push_back({&log, i});
    timers.push_back(std::make_unique<Timer>(&record, &ctx.back()));
  }
  int64_t now = 0;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 20; ++k) {
      int id = static_cast<int>(rng() % n);
      int64_t span = std::vector<int64_t>{50, 5000, 400'000, 30'000'000}[rng() % 4];
      int64_t due = now + 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(span));
      w.schedule(timers[static_cast<size_t>(id)].get(), t0 + Millis(due));
      ref[id] = due;
      if (rng() % 5 == 0) {
        int c = static_cast<int>(rng() % n);
        timers[static_cast<size_t>(c)]->cancel();
        ref.erase(c);
      }
    }
    now += static_cast<int64_t>(rng() % 200'000);
    log.clear();
    w.advance(t0 + Millis(now));
    std::vector<int> expected;
    std::vector<std::pair<int64_t, int>> due;
    for (auto it = ref.begin(); it != ref.end();) {
      if (it->second <= now) {
        due.push_back({it->second, it->first});
        it = ref.erase(it);
      } else {
        ++it;
      }
    }
    std::sort(due.begin(), due.end());
    ASSERT_EQ(log.size(), due.size()) << "round " << round;
    // Deadline order (ties in any order): the fired deadlines never go down.
    std::map<int, int64_t> deadline_of;
    for (auto& d : due) {
      deadline_of[d.second] = d.first;
    }
    for (size_t i = 1; i < log.size(); ++i) {
      ASSERT_LE(deadline_of[log[i - 1]], deadline_of[log[i]]) << "round " << round;
    }
    std::vector<int> got = log, want;
    for (auto& d : due) {
      want.push_back(d.second);
    }
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    ASSERT_EQ(got, want) << "round " << round;
    ASSERT_EQ(w.size(), ref.size());
  }
}

}  // namespace
}  // namespace ringmail::engine
