/// test_util.h — helpers shared by the proto/ unit tests.
///
/// HeapBytes copies an input into an exact-size heap allocation so that
/// AddressSanitizer reports any read past its end (STYLE.md item 12).
#pragma once

#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::proto::test {

class HeapBytes {
 public:
  explicit HeapBytes(std::string_view s) : size_(s.size()), data_(new char[s.size()]) {
    std::copy(s.begin(), s.end(), data_.get());
  }
  std::span<const char> span() const { return {data_.get(), size_}; }
  std::string_view view() const { return {data_.get(), size_}; }

 private:
  size_t size_;
  std::unique_ptr<char[]> data_;
};

/// Cuts `input` into pieces at the given sorted offsets.
inline std::vector<std::string> cut(std::string_view input, const std::vector<size_t>& offsets) {
  std::vector<std::string> pieces;
  size_t prev = 0;
  for (size_t off : offsets) {
    pieces.emplace_back(input.substr(prev, off - prev));
    prev = off;
  }
  pieces.emplace_back(input.substr(prev));
  return pieces;
}

/// Every way to cut `input` once, plus byte by byte.
inline std::vector<std::vector<std::string>> all_splits(std::string_view input) {
  std::vector<std::vector<std::string>> out;
  for (size_t i = 0; i <= input.size(); ++i) {
    out.push_back(cut(input, {i}));
  }
  std::vector<std::string> bytes;
  for (char c : input) {
    bytes.emplace_back(1, c);
  }
  out.push_back(std::move(bytes));
  return out;
}

}  // namespace ringmail::proto::test
