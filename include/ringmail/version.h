/// version.h — ringmail's version and the symbol export macro, shared by
/// the C++ API (ringmail.hpp) and the C API (ringmail_c.h).
///
/// The macros give the version of the headers a program was compiled
/// against; ringmail_version() and ringmail_version_number() give the
/// version of the library it runs with. docs/embedding.md states what may
/// change between versions (the ABI rules).
///
/// Thread safety: the functions may be called from any thread at any time.
/// C11 and C++20; no other header is needed.
#ifndef RINGMAIL_VERSION_H
#define RINGMAIL_VERSION_H

#define RINGMAIL_VERSION_MAJOR 0
#define RINGMAIL_VERSION_MINOR 1
#define RINGMAIL_VERSION_PATCH 0
#define RINGMAIL_VERSION_STRING "0.1.0"
/// MAJOR << 16 | MINOR << 8 | PATCH, for compile-time comparisons.
#define RINGMAIL_VERSION_NUMBER \
  ((RINGMAIL_VERSION_MAJOR << 16) | (RINGMAIL_VERSION_MINOR << 8) | RINGMAIL_VERSION_PATCH)

/// Marks a declaration as part of libringmail's exported interface. The
/// library is built with hidden visibility and a linker version script,
/// so only what carries this mark (and matches the script) is exported.
#if defined(__GNUC__) || defined(__clang__)
#define RINGMAIL_API __attribute__((visibility("default")))
#else
#define RINGMAIL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/// The library's version as "MAJOR.MINOR.PATCH" (static storage; never
/// NULL).
RINGMAIL_API const char* ringmail_version(void);
/// The library's version as RINGMAIL_VERSION_NUMBER computes it.
RINGMAIL_API unsigned ringmail_version_number(void);

#ifdef __cplusplus
}
#endif

#endif  // RINGMAIL_VERSION_H
