/* Compiles ringmail/version.h alone, as C11 (tests/embedding/meson.build). */
#include <ringmail/version.h>

unsigned header_version_check(void);
unsigned header_version_check(void) {
  return RINGMAIL_VERSION_NUMBER;
}
