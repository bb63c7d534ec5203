/// timer_wheel.h — hierarchical timing wheel: O(1) schedule and cancel,
/// jump-ahead advance.
///
/// Used by each shard for every timeout (session phases, idle connections)
/// and for deferred recipients (retry groups), so no structure is ever
/// scanned to find due work. Seven levels of 64 slots with a 1 ms tick;
/// deadlines are clamped to 2^36 ms (about 795 days) ahead, and the top
/// level lets the wheel run for 2^42 ms (139 years) of uptime.
///
/// Placement: a timer whose expiry tick e differs from the current tick in
/// base-64 digit l (and not above) lives at level l, slot digit_l(e). When
/// the current tick enters that slot, the timer is re-placed lower or
/// fires. advance() jumps straight to the next occupied slot using one
/// 64-bit occupancy bitmap per level, so a ManualClock jump of five days
/// costs a handful of steps, not 432 million ticks.
///
/// Thread safety: owned by one shard thread. Timers never fire early; they
/// fire at most one tick (1 ms) late plus the loop's latency.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/clock.h"

namespace ringmail::engine {

class TimerWheel;

class Timer {
 public:
  using Fn = void (*)(void* ctx);
  Timer(Fn fn, void* ctx) : fn_(fn), ctx_(ctx) {}
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  bool armed() const { return wheel_ != nullptr; }
  /// Cancels if armed; no-op otherwise.
  void cancel();

 private:
  friend class TimerWheel;
  Fn fn_;
  void* ctx_;
  TimerWheel* wheel_ = nullptr;
  Timer* prev_ = nullptr;
  Timer* next_ = nullptr;
  uint64_t expiry_ = 0;  // tick
  uint8_t level_ = 0;
  uint8_t slot_ = 0;
};

class TimerWheel {
 public:
  static constexpr int kLevels = 7;
  static constexpr int kSlots = 64;
  static constexpr Nanos kTick = Millis(1);

  explicit TimerWheel(TimePoint origin);
  ~TimerWheel();
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  /// Arms `t` to fire at `deadline` (re-arms when already armed). A deadline
  /// in the past fires on the next advance().
  void schedule(Timer* t, TimePoint deadline);
  void cancel(Timer* t);
  /// Fires, in deadline order (ties in any order), every timer due at or
  /// before `now`. Callbacks may schedule and cancel timers, including
  /// themselves. Returns how many fired.
  size_t advance(TimePoint now);
  /// The earliest time at which advance() may have work: exact for timers
  /// within 64 ms, otherwise the moment a higher-level slot must be
  /// re-examined (never later than the true next deadline).
  std::optional<TimePoint> next_wakeup() const;
  size_t size() const { return count_; }

 private:
  struct Slot {
    Timer* head = nullptr;
  };
  void place(Timer* t);
  void unlink(Timer* t);
  uint64_t to_tick_ceil(TimePoint t) const;
  std::optional<uint64_t> next_event_tick() const;

  TimePoint origin_;
  uint64_t now_ = 0;  // every timer with expiry <= now_ has fired
  size_t count_ = 0;
  uint64_t occupied_[kLevels] = {};
  Slot slots_[kLevels][kSlots];
};

}  // namespace ringmail::engine
