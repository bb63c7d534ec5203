/// spsc_ring.h — bounded lock-free single-producer/single-consumer ring.
///
/// One ring per ordered shard pair carries cross-shard work (Seastar's
/// smp_message_queue model). Capacity is fixed (a power of two); a full ring
/// makes try_push fail and the producer keeps the item in its own overflow
/// list until the next loop iteration — producers never block.
///
/// Memory layout: the producer's index and its cached copy of the consumer's
/// index share one cache line; the consumer's index and its cached copy of
/// the producer's index share another. Each side therefore writes only its
/// own line; the producer reads the consumer's line only when the ring
/// looks full, the consumer reads the producer's once per drain() batch.
#pragma once

#include <atomic>
#include <cstddef>
#include <type_traits>

namespace ringmail::engine {

template <class T, size_t kCapacity>
class SpscRing {
  static_assert((kCapacity & (kCapacity - 1)) == 0, "capacity must be a power of two");
  static_assert(std::is_trivially_copyable_v<T>, "items are copied by value");

 public:
  /// Producer thread only.
  bool try_push(const T& item) {
    size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ == kCapacity) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ == kCapacity) {
        return false;
      }
    }
    slots_[tail & (kCapacity - 1)] = item;
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  /// Consumer thread only. Calls fn(item) for up to `max` items; returns the
  /// number consumed.
  template <class Fn>
  size_t drain(Fn&& fn, size_t max) {
    size_t head = head_.load(std::memory_order_relaxed);
    if (tail_cache_ - head < max) {
      // One look at the producer's line per drain, not per item.
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) {
        return 0;
      }
    }
    size_t n = tail_cache_ - head;
    if (n > max) {
      n = max;
    }
    for (size_t i = 0; i < n; ++i) {
      fn(slots_[(head + i) & (kCapacity - 1)]);
    }
    head_.store(head + n, std::memory_order_release);
    return n;
  }

  /// Either thread; a snapshot.
  bool empty() const {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }

 private:
  // Producer line: its index and its cached view of the consumer.
  alignas(64) std::atomic<size_t> tail_{0};
  size_t head_cache_ = 0;
  // Consumer line.
  alignas(64) std::atomic<size_t> head_{0};
  size_t tail_cache_ = 0;
  alignas(64) T slots_[kCapacity];
};

/// Intrusive multi-producer/single-consumer queue (Vyukov). Used only for
/// work arriving from threads that are not shards (the embedding API);
/// shards talk to each other through SpscRing. push() is wait-free;
/// pop() may briefly see an in-progress push and return nullptr, in which
/// case the item appears on a later call.
struct MpscNode {
  std::atomic<MpscNode*> next{nullptr};
};

class MpscQueue {
 public:
  MpscQueue() : head_(&stub_), tail_(&stub_) {}
  void push(MpscNode* n) {
    n->next.store(nullptr, std::memory_order_relaxed);
    MpscNode* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->next.store(n, std::memory_order_release);
  }
  /// Consumer only.
  MpscNode* pop() {
    MpscNode* tail = tail_;
    MpscNode* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) {
        return nullptr;
      }
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire)) {
      return nullptr;  // a push is in progress
    }
    push(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    return nullptr;
  }
  bool maybe_nonempty() const {
    return tail_->next.load(std::memory_order_acquire) != nullptr ||
           head_.load(std::memory_order_acquire) != tail_;
  }

 private:
  alignas(64) std::atomic<MpscNode*> head_;
  alignas(64) MpscNode* tail_;
  MpscNode stub_;
};

}  // namespace ringmail::engine
