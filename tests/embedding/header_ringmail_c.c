/* Compiles ringmail/ringmail_c.h alone, as C11 (tests/embedding/meson.build). */
#include <ringmail/ringmail_c.h>

size_t header_ringmail_c_check(void);
size_t header_ringmail_c_check(void) {
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  ringmail_engine_stats stats = RINGMAIL_ENGINE_STATS_INIT;
  return batch.struct_size + stats.struct_size;
}
