// Compiles ringmail/ringmail.hpp alone (tests/embedding/meson.build).
#include <ringmail/ringmail.hpp>

bool header_ringmail_check();
bool header_ringmail_check() {
  ringmail::Expected<int> e(ringmail::Failure{ringmail::FailureKind::kConfig, "x"});
  return !e.ok() && ringmail::Batch{}.recipients.empty();
}
