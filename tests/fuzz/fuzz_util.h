/// fuzz_util.h — helpers shared by the libFuzzer targets in tests/fuzz.
///
/// FuzzInput hands out the fuzzer's bytes as small integers and slices,
/// returning zeros once exhausted. FUZZ_CHECK aborts (a crash libFuzzer
/// reports) when a property does not hold; it is active in every build mode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace ringmail::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}

  uint8_t byte() {
    if (rest_.empty()) {
      return 0;
    }
    uint8_t b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
      v = (v << 8) | byte();
    }
    return v;
  }
  /// Up to `max` bytes (length taken from the next byte).
  std::string_view slice(size_t max) {
    size_t n = byte();
    n = n > max ? max : n;
    n = n > rest_.size() ? rest_.size() : n;
    std::string_view s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return s;
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

/// Piece lengths for feeding a stream in parts, from a deterministic
/// generator: seed 0 means "everything at once"; otherwise pieces of
/// 1..max_piece bytes, so boundaries land everywhere over many runs.
class Splitter {
 public:
  explicit Splitter(uint32_t seed) : state_(seed), whole_(seed == 0) {
    max_piece_ = 1 + (seed % 97);
  }
  size_t next(size_t remaining) {
    if (whole_) {
      return remaining;
    }
    state_ = state_ * 1103515245u + 12345u;
    size_t n = 1 + (state_ >> 16) % max_piece_;
    return n > remaining ? remaining : n;
  }

 private:
  uint32_t state_;
  bool whole_;
  size_t max_piece_;
};

}  // namespace ringmail::fuzz
