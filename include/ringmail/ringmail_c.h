/// ringmail_c.h — ringmail as a library: the C API, for programs in C and
/// for other languages' foreign-function interfaces.
///
/// The same engine as ringmail.hpp: start it from TOML text, submit
/// batches, receive per-recipient events through a callback, drain, stop.
///
/// Threads: every function may be called from any thread, concurrently,
/// except ringmail_stop(), which must not race other calls on the same
/// engine. Event callbacks run on the engine's shard threads, several at
/// once; they must be quick and must not wait for the engine (see
/// ringmail_subscribe()).
///
/// Memory: strings the library returns (errors, control replies) are
/// released with ringmail_free_string(); an acknowledgement with
/// ringmail_ack_free(). Everything an event points to is valid only during
/// the callback. Input structs and strings are only read during the call.
///
/// Errors: functions return NULL, 0 or a negative ringmail_result; none
/// aborts on bad input (NULL pointers are reported as
/// RINGMAIL_ERR_ARGUMENT), none lets a C++ exception through.
///
/// ABI (docs/embedding.md): within one RINGMAIL_VERSION_MAJOR, functions
/// are only added and structs only grow at their end. Structs the caller
/// fills carry their size in `struct_size` (use the *_INIT macros), so a
/// newer library knows which fields an older program set; structs the
/// library fills carry it too, so a newer program can tell which fields an
/// older library knew.
///
/// Plain C11; no header but the C standard library's.
#ifndef RINGMAIL_C_H
#define RINGMAIL_C_H

#include <stddef.h>
#include <stdint.h>

#include "ringmail/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Results of the functions that return int.
typedef enum ringmail_result {
  RINGMAIL_OK = 0,
  RINGMAIL_ERR_ARGUMENT = -1,     // a NULL engine, struct or string, or a struct_size too small
  RINGMAIL_ERR_TIMEOUT = -2,      // ringmail_drain(): recipients still queued
  RINGMAIL_ERR_NOMEM = -3,        // memory ran out
  RINGMAIL_ERR_IN_CALLBACK = -4,  // would wait for the shard running this callback
} ringmail_result;

/// A byte string that is not NUL-terminated: print it with "%.*s",
/// (int)s.len, s.ptr. ptr is never NULL (an empty string points to "").
typedef struct ringmail_str {
  const char* ptr;
  size_t len;
} ringmail_str;

/// A running engine (opaque).
typedef struct ringmail_engine ringmail_engine;

/// Initialiser of a caller-filled struct: every field zero, struct_size
/// set (a designated initialiser in C; in C++, where one naming a single
/// field draws -Wmissing-field-initializers, a value-initialised copy).
#ifdef __cplusplus
#define RINGMAIL_STRUCT_INIT_(type) \
  ([] {                             \
    type v_{};                      \
    v_.struct_size = sizeof v_;     \
    return v_;                      \
  }())
#else
#define RINGMAIL_STRUCT_INIT_(type) \
  { .struct_size = sizeof(type) }
#endif

/// Starts an engine from TOML text (docs/configuration.md) over the
/// built-in defaults ("" means the defaults). Returns NULL on failure, and
/// then, when `error` is not NULL, sets *error to a message naming the
/// problem (release it with ringmail_free_string()). The configuration's
/// log_level becomes the process's; log lines go to stderr.
RINGMAIL_API ringmail_engine* ringmail_start(const char* toml, char** error);
/// The same, reading the TOML from the file at `path`.
RINGMAIL_API ringmail_engine* ringmail_start_file(const char* path, char** error);

/// Stops accepting, gives queued mail up to `grace_ms` to finish (a
/// negative value: the configuration's engine.shutdown_grace), closes every
/// connection, joins the shard threads and frees the engine. When it
/// returns no callback runs any more. With the spool off, what is still
/// queued is not kept. NULL is ignored. From an event callback it stops
/// the process with a message (the engine cannot join its own thread).
RINGMAIL_API void ringmail_stop(ringmail_engine* engine, int64_t grace_ms);

/// A batch: one message, many recipients (docs/protocol.md, BATCH).
typedef struct ringmail_batch {
  size_t struct_size;    // sizeof(ringmail_batch): RINGMAIL_BATCH_INIT sets it
  const char* batch_id;  // NULL or "": one is assigned (see the ack)
  const char* sender;    // bare address; NULL or "": null reverse-path
  const char* message;   // raw RFC 5322 bytes
  size_t message_len;
  const char* const* recipients;  // NUL-terminated bare addresses
  size_t recipient_count;
  const char* pool;            // egress pool by name; NULL or "": rules or default
  const char* const* options;  // "name=value" (dkim_domain, personalise, …)
  size_t option_count;
  /// personalise=true: each recipient's encoded variables, parallel to
  /// `recipients` (may be shorter; the encoding is in docs/protocol.md).
  const ringmail_str* recipient_vars;
  size_t recipient_var_count;
  const char* const* unsubscribed;  // addresses the platform reports as unsubscribed
  size_t unsubscribed_count;
} ringmail_batch;

#define RINGMAIL_BATCH_INIT RINGMAIL_STRUCT_INIT_(ringmail_batch)

/// ringmail_ack.status; the values of the batch protocol's ACK.
typedef enum ringmail_ack_status {
  RINGMAIL_ACK_ACCEPTED = 0,           // some or all recipients accepted
  RINGMAIL_ACK_REJECTED = 1,           // the whole batch was refused (reason says why)
  RINGMAIL_ACK_TRY_LATER = 2,          // back-pressure or shutting down: send again later
  RINGMAIL_ACK_SPOOL_UNAVAILABLE = 3,  // the spool cannot make it durable now
} ringmail_ack_status;

/// ringmail_rejection.reason.
typedef enum ringmail_reject_reason {
  RINGMAIL_REJECT_INVALID_ADDRESS = 1,
  RINGMAIL_REJECT_DUPLICATE = 2,
  RINGMAIL_REJECT_SUPPRESSED = 3,
  RINGMAIL_REJECT_POLICY = 4,
  RINGMAIL_REJECT_TEMPLATE = 5,  // personalisation: a missing or malformed variable
} ringmail_reject_reason;

typedef struct ringmail_rejection {
  uint32_t index;    // position of the recipient in the batch
  int32_t reason;    // ringmail_reject_reason
  const char* text;  // NUL-terminated
} ringmail_rejection;

/// A batch's acknowledgement, allocated by the library (one block): free
/// it with ringmail_ack_free(). Strings are NUL-terminated.
typedef struct ringmail_ack {
  size_t struct_size;  // bytes of this struct the library filled
  int32_t status;      // ringmail_ack_status
  uint32_t accepted;   // recipients that will get a final event
  uint64_t seq;
  const char* batch_id;  // the batch's, or the one assigned
  const char* reason;    // why, when status is not RINGMAIL_ACK_ACCEPTED; else ""
  const ringmail_rejection* rejections;
  size_t rejection_count;
} ringmail_ack;

/// Validates and queues a batch. Each recipient counted in `accepted` gets
/// events ending in exactly one final one, unless the engine stops first.
/// With the spool on, returns once the batch is durable; from an event
/// callback it then answers RINGMAIL_ACK_TRY_LATER. A batch whose pointers
/// do not match its counts, or whose struct_size does not even cover
/// struct_size, is answered RINGMAIL_ACK_REJECTED with the reason. Returns
/// NULL only when an argument is NULL or memory runs out.
RINGMAIL_API ringmail_ack* ringmail_submit(ringmail_engine* engine, const ringmail_batch* batch);
RINGMAIL_API void ringmail_ack_free(ringmail_ack* ack);

/// ringmail_event.type.
typedef enum ringmail_event_type {
  RINGMAIL_EVENT_DELIVERED = 0,
  RINGMAIL_EVENT_DEFERRED = 1,  // will be retried; the only non-final recipient event
  RINGMAIL_EVENT_BOUNCED = 2,
  RINGMAIL_EVENT_DROPPED = 3,  // by an operator
  RINGMAIL_EVENT_BACKOFF = 4,  // a destination entered backoff (domain is set)
  RINGMAIL_EVENT_RESUME = 5,   // a destination left backoff
} ringmail_event_type;

/// One event. Valid only during the callback; copy what you keep.
typedef struct ringmail_event {
  size_t struct_size;  // bytes of this struct the library filled
  int32_t type;        // ringmail_event_type
  uint16_t code;       // reply code (ringmail's for failures without one; 0: backoff, resume)
  uint32_t attempt;
  uint64_t origin;  // ingest connection the batch came from (0: this API)
  ringmail_str batch;
  ringmail_str recipient;  // "" for backoff and resume
  ringmail_str sender;
  ringmail_str enhanced_code;
  ringmail_str response;
  ringmail_str peer;  // "ip:port" that answered, or ""
  ringmail_str mx;
  ringmail_str failure_class;
  ringmail_str domain;  // backoff and resume: the destination
  ringmail_str json;    // the complete JSON object (docs/protocol.md), no newline
} ringmail_event;

typedef void (*ringmail_event_fn)(const ringmail_event* event, void* user_data);

/// Calls `fn(event, user_data)` for every event, on the shard thread that
/// produced it, concurrently from several shards. Every event of a batch
/// submitted after this returns reaches it. `fn` must not call
/// ringmail_drain(), ringmail_control() or ringmail_stop() (they would
/// wait for the shard `fn` is holding: they return
/// RINGMAIL_ERR_IN_CALLBACK / NULL, and ringmail_stop() aborts). Returns
/// the subscription's id, or 0 when an argument is NULL or memory runs
/// out.
RINGMAIL_API uint64_t ringmail_subscribe(ringmail_engine* engine, ringmail_event_fn fn,
                                         void* user_data);
/// Removes a subscription. When it returns, `fn` is not running and will
/// not be called again, so `user_data` may be freed — except when called
/// from a callback: then the removal takes effect as each shard finishes
/// its current event. Unknown ids are ignored. RINGMAIL_OK, or
/// RINGMAIL_ERR_ARGUMENT for a NULL engine.
RINGMAIL_API int ringmail_unsubscribe(ringmail_engine* engine, uint64_t subscription);

/// Waits until every accepted recipient is final: RINGMAIL_OK, or
/// RINGMAIL_ERR_TIMEOUT after `timeout_ms` (0: just look).
RINGMAIL_API int ringmail_drain(ringmail_engine* engine, int64_t timeout_ms);

/// Counters summed over the shards.
typedef struct ringmail_engine_stats {
  size_t struct_size;   // set by the caller: RINGMAIL_ENGINE_STATS_INIT
  uint64_t delivered;   // delivered events
  uint64_t deferred;    // deferred events
  uint64_t bounced;     // bounced events
  uint64_t unfinished;  // accepted recipients not yet final
  uint64_t connections_opened;
  uint64_t transactions;
  uint64_t unknown_outcomes;
  uint64_t dropped;
  uint64_t queued_bytes;  // memory charged to limits.max_queued_bytes
  uint64_t spool_damage;
  uint64_t spool_segments;
  uint64_t spool_errors;
  uint64_t submission_auth_checks;
  uint64_t submission_reclaimed;
  uint64_t submission_timeouts;
} ringmail_engine_stats;

#define RINGMAIL_ENGINE_STATS_INIT RINGMAIL_STRUCT_INIT_(ringmail_engine_stats)

/// Fills the first `out->struct_size` bytes of *out, as far as this
/// library knows the struct, and sets struct_size to the bytes it filled.
/// RINGMAIL_ERR_ARGUMENT when a pointer is NULL or struct_size does not
/// even cover struct_size.
RINGMAIL_API int ringmail_stats(ringmail_engine* engine, ringmail_engine_stats* out);

/// Runs an operator command ("list [PATTERN]", "pause PATTERN", "resume
/// PATTERN", "flush PATTERN", "drop-batch ID", "stats", "suppression …")
/// and returns its JSON reply (release it with ringmail_free_string()), or
/// NULL when an argument is NULL or memory runs out. Waits for every
/// shard; from an event callback the reply is {"ok":false,"error":"…"}.
RINGMAIL_API char* ringmail_control(ringmail_engine* engine, const char* command);

/// Applies a new configuration without a restart (Engine::reload in
/// ringmail.hpp says which sections are taken): `toml` is TOML text over
/// the built-in defaults; NULL reads again the file given to
/// ringmail_start_file(). Returns the JSON reply
/// {"ok":true,"command":"reload","applied":[…],"restart_required":[…]}
/// (release it with ringmail_free_string()), or NULL with *error (when
/// `error` is not NULL) saying why; nothing changed then.
RINGMAIL_API char* ringmail_reload(ringmail_engine* engine, const char* toml, char** error);

/// Releases a string returned by the library. NULL is ignored.
RINGMAIL_API void ringmail_free_string(char* s);

#ifdef __cplusplus
}
#endif

#endif  // RINGMAIL_C_H
