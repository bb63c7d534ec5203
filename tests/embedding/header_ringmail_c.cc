// Compiles ringmail/ringmail_c.h alone, as C++20 (tests/embedding/meson.build).
#include <ringmail/ringmail_c.h>

size_t header_ringmail_c_cxx_check();
size_t header_ringmail_c_cxx_check() {
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  return batch.struct_size;
}
