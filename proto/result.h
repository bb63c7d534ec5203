/// result.h — the error type and `Result<T>` used everywhere a peer, DNS,
/// TLS, the network, the disk or a configuration file can cause a failure.
///
/// Thread safety: plain values; no shared state.
/// Policy (see docs/architecture.md, "errors"): no exceptions on the data
/// path. Functions whose failure is caused by input they do not control
/// return `Result<T>`, which must be inspected (`[[nodiscard]]`). Invariant
/// violations inside ringmail use RM_ASSERT / RM_PANIC instead.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ringmail {

/// Broad error classes. The message carries the details for humans; the
/// class is what code branches on.
enum class Errc : uint8_t {
  kInvalidArgument,  // caller-supplied value is malformed (address, option)
  kSyntax,           // peer or file bytes do not follow the grammar
  kLimit,            // a documented bound was exceeded
  kUnsupported,      // feature not available (kernel, peer)
  kIo,               // an operating-system call failed
  kTimeout,
  kClosed,           // the peer closed the connection
  kProtocol,         // a peer broke the protocol state machine
  kConfig,
  kNotFound,
  kBusy,             // temporary: try later (back-pressure)
  kInternal,
};

std::string_view errc_name(Errc c);

struct Error {
  Errc code = Errc::kInternal;
  std::string message;
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }
  Error&& take_error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  Error&& take_error() && { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> ok_result() { return Result<void>(); }

[[noreturn]] void panic(const char* file, int line, const char* what);

}  // namespace ringmail

/// Propagates the error of a Result-returning expression.
#define RM_TRY(expr)                                 \
  do {                                               \
    auto rm_try_result_ = (expr);                    \
    if (!rm_try_result_.ok()) {                      \
      return std::move(rm_try_result_).take_error(); \
    }                                                \
  } while (0)

/// Invariant checks: never on anything a remote peer controls.
#define RM_PANIC(what) ::ringmail::panic(__FILE__, __LINE__, what)
#define RM_ASSERT(cond)                        \
  do {                                         \
    if (!(cond)) [[unlikely]] {                \
      ::ringmail::panic(__FILE__, __LINE__, #cond); \
    }                                          \
  } while (0)
