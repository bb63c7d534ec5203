#include "engine/timer_wheel.h"

#include <bit>

#include "proto/result.h"

namespace ringmail::engine {
namespace {

constexpr int kBits = 6;
constexpr uint64_t kMask = 63;
constexpr uint64_t kHorizon = (uint64_t{1} << 36) - 1;

inline uint64_t digit(uint64_t tick, int level) {
  return (tick >> (kBits * level)) & kMask;
}

}  // namespace

Timer::~Timer() {
  cancel();
}

void Timer::cancel() {
  if (wheel_ != nullptr) {
    wheel_->cancel(this);
  }
}

TimerWheel::TimerWheel(TimePoint origin) : origin_(origin) {}

TimerWheel::~TimerWheel() {
  // Disarm whatever is left so Timer destructors do not touch a dead wheel.
  for (auto& level : slots_) {
    for (auto& slot : level) {
      while (slot.head != nullptr) {
        Timer* t = slot.head;
        slot.head = t->next_;
        t->wheel_ = nullptr;
        t->prev_ = t->next_ = nullptr;
      }
    }
  }
}

uint64_t TimerWheel::to_tick_ceil(TimePoint t) const {
  if (t <= origin_) {
    return 0;
  }
  auto d = (t - origin_).count();
  return static_cast<uint64_t>((d + kTick.count() - 1) / kTick.count());
}

void TimerWheel::schedule(Timer* t, TimePoint deadline) {
  if (t->wheel_ != nullptr) {
    unlink(t);
  } else {
    ++count_;
  }
  uint64_t e = to_tick_ceil(deadline);
  if (e <= now_) {
    e = now_ + 1;
  }
  if (e - now_ > kHorizon) {
    e = now_ + kHorizon;
  }
  t->expiry_ = e;
  t->wheel_ = this;
  place(t);
}

void TimerWheel::place(Timer* t) {
  uint64_t diff = t->expiry_ ^ now_;
  RM_ASSERT(diff != 0);
  int level = (63 - std::countl_zero(diff)) / kBits;
  RM_ASSERT(level < kLevels);  // holds for 2^42 ms of uptime
  auto slot = static_cast<uint8_t>(digit(t->expiry_, level));
  t->level_ = static_cast<uint8_t>(level);
  t->slot_ = slot;
  Slot& s = slots_[level][slot];
  t->prev_ = nullptr;
  t->next_ = s.head;
  if (s.head != nullptr) {
    s.head->prev_ = t;
  }
  s.head = t;
  occupied_[level] |= uint64_t{1} << slot;
}

void TimerWheel::unlink(Timer* t) {
  Slot& s = slots_[t->level_][t->slot_];
  if (t->prev_ != nullptr) {
    t->prev_->next_ = t->next_;
  } else {
    s.head = t->next_;
  }
  if (t->next_ != nullptr) {
    t->next_->prev_ = t->prev_;
  }
  if (s.head == nullptr) {
    occupied_[t->level_] &= ~(uint64_t{1} << t->slot_);
  }
  t->prev_ = t->next_ = nullptr;
}

void TimerWheel::cancel(Timer* t) {
  if (t->wheel_ != this) {
    return;
  }
  unlink(t);
  t->wheel_ = nullptr;
  --count_;
}

std::optional<uint64_t> TimerWheel::next_event_tick() const {
  for (int level = 0; level < kLevels; ++level) {
    uint64_t d = digit(now_, level);
    uint64_t above = d == kMask ? 0 : (occupied_[level] & (~uint64_t{0} << (d + 1)));
    if (above != 0) {
      uint64_t s = static_cast<uint64_t>(std::countr_zero(above));
      int shift = kBits * (level + 1);
      uint64_t high = shift >= 64 ? 0 : (now_ >> shift) << shift;
      return high | (s << (kBits * level));
    }
  }
  return std::nullopt;
}

std::optional<TimePoint> TimerWheel::next_wakeup() const {
  auto tick = next_event_tick();
  if (!tick) {
    return std::nullopt;
  }
  return origin_ + Nanos(static_cast<int64_t>(*tick) * kTick.count());
}

size_t TimerWheel::advance(TimePoint now) {
  uint64_t target = now <= origin_ ? 0 : static_cast<uint64_t>((now - origin_) / kTick);
  size_t fired = 0;
  while (now_ < target) {
    auto next = next_event_tick();
    if (!next || *next > target) {
      now_ = target;
      break;
    }
    now_ = *next;
    // Exactly one level has a slot starting at now_ (lower levels are empty
    // at a higher level's boundary). Take its list and re-place or fire.
    for (int level = 0; level < kLevels; ++level) {
      auto slot = static_cast<uint8_t>(digit(now_, level));
      Slot& s = slots_[level][slot];
      if (s.head == nullptr) {
        continue;
      }
      // Pop one at a time: callbacks may cancel timers still in this slot.
      // Nothing can be placed into this slot meanwhile (a new expiry > now_
      // differs from now_ in a higher digit of its level).
      while (s.head != nullptr) {
        Timer* t = s.head;
        unlink(t);
        if (t->expiry_ <= now_) {
          t->wheel_ = nullptr;
          --count_;
          ++fired;
          t->fn_(t->ctx_);
        } else {
          place(t);
        }
      }
      break;
    }
  }
  return fired;
}

}  // namespace ringmail::engine
