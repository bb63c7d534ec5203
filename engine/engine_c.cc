// The C API (include/ringmail/ringmail_c.h): a layer over the C++ API that
// owns no engine logic. Every entry point catches C++ exceptions: none may
// cross into C.
#include <ringmail/ringmail_c.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include <ringmail/ringmail.hpp>

#include "engine/runtime.h"

struct ringmail_engine {
  std::unique_ptr<ringmail::Engine> engine;
};

namespace {

static_assert(RINGMAIL_ACK_ACCEPTED == static_cast<int>(ringmail::AckStatus::kAccepted));
static_assert(RINGMAIL_ACK_REJECTED == static_cast<int>(ringmail::AckStatus::kRejected));
static_assert(RINGMAIL_ACK_TRY_LATER == static_cast<int>(ringmail::AckStatus::kTryLater));
static_assert(RINGMAIL_ACK_SPOOL_UNAVAILABLE ==
              static_cast<int>(ringmail::AckStatus::kSpoolUnavailable));
static_assert(RINGMAIL_REJECT_INVALID_ADDRESS ==
              static_cast<int>(ringmail::RejectReason::kInvalidAddress));
static_assert(RINGMAIL_REJECT_DUPLICATE == static_cast<int>(ringmail::RejectReason::kDuplicate));
static_assert(RINGMAIL_REJECT_SUPPRESSED == static_cast<int>(ringmail::RejectReason::kSuppressed));
static_assert(RINGMAIL_REJECT_POLICY == static_cast<int>(ringmail::RejectReason::kPolicy));
static_assert(RINGMAIL_REJECT_TEMPLATE == static_cast<int>(ringmail::RejectReason::kTemplate));
static_assert(RINGMAIL_EVENT_DELIVERED == static_cast<int>(ringmail::EventType::kDelivered));
static_assert(RINGMAIL_EVENT_DEFERRED == static_cast<int>(ringmail::EventType::kDeferred));
static_assert(RINGMAIL_EVENT_BOUNCED == static_cast<int>(ringmail::EventType::kBounced));
static_assert(RINGMAIL_EVENT_DROPPED == static_cast<int>(ringmail::EventType::kDropped));
static_assert(RINGMAIL_EVENT_BACKOFF == static_cast<int>(ringmail::EventType::kBackoff));
static_assert(RINGMAIL_EVENT_RESUME == static_cast<int>(ringmail::EventType::kResume));
// The acknowledgement block puts the rejections right after the header.
static_assert(sizeof(ringmail_ack) % alignof(ringmail_rejection) == 0);

// Non-zero on a shard thread inside a C callback (drain would wait for it).
thread_local int t_c_callback_depth = 0;

/// A malloc'd NUL-terminated copy (released by ringmail_free_string), or
/// NULL when memory runs out.
char* dup_string(std::string_view s) {
  auto* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p == nullptr) {
    return nullptr;
  }
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

void set_error(char** error, std::string_view message) {
  if (error != nullptr) {
    *error = dup_string(message);
  }
}

ringmail_str str_of(std::string_view s) {
  return ringmail_str{s.empty() ? "" : s.data(), s.size()};
}

ringmail_engine* start_with(ringmail::Expected<std::unique_ptr<ringmail::Engine>> e, char** error) {
  if (!e.ok()) {
    set_error(error, e.error().message);
    return nullptr;
  }
  return new ringmail_engine{std::move(*e)};
}

/// The caller's batch with the fields its struct_size does not cover set
/// to zero (an older program's struct is shorter).
bool read_batch(const ringmail_batch* in, ringmail_batch* out) {
  if (in->struct_size < sizeof(in->struct_size)) {
    return false;
  }
  *out = ringmail_batch{};
  std::memcpy(static_cast<void*>(out), in, std::min(in->struct_size, sizeof *out));
  return true;
}

/// Copies the C batch into `out`; an error message naming the field when
/// a pointer the counts promise is NULL.
std::string to_batch(const ringmail_batch& b, ringmail::Batch* out) {
  auto list = [](const char* const* items, size_t n, const char* what,
                 std::vector<std::string>* to) -> std::string {
    if (n > 0 && items == nullptr) {
      return std::string(what) + " is NULL with a count of " + std::to_string(n);
    }
    to->reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (items[i] == nullptr) {
        return std::string(what) + "[" + std::to_string(i) + "] is NULL";
      }
      to->emplace_back(items[i]);
    }
    return "";
  };
  if (b.message == nullptr && b.message_len > 0) {
    return "message is NULL with a length of " + std::to_string(b.message_len);
  }
  out->batch_id = b.batch_id != nullptr ? b.batch_id : "";
  out->sender = b.sender != nullptr ? b.sender : "";
  out->message.assign(b.message != nullptr ? b.message : "", b.message_len);
  out->pool = b.pool != nullptr ? b.pool : "";
  std::string why = list(b.recipients, b.recipient_count, "recipients", &out->recipients);
  if (why.empty()) {
    why = list(b.options, b.option_count, "options", &out->options);
  }
  if (why.empty()) {
    why = list(b.unsubscribed, b.unsubscribed_count, "unsubscribed", &out->unsubscribed);
  }
  if (!why.empty()) {
    return why;
  }
  if (b.recipient_var_count > 0 && b.recipient_vars == nullptr) {
    return "recipient_vars is NULL with a count of " + std::to_string(b.recipient_var_count);
  }
  out->recipient_vars.reserve(b.recipient_var_count);
  for (size_t i = 0; i < b.recipient_var_count; ++i) {
    const ringmail_str& v = b.recipient_vars[i];
    if (v.ptr == nullptr && v.len > 0) {
      return "recipient_vars[" + std::to_string(i) + "] is NULL with a length";
    }
    out->recipient_vars.emplace_back(v.ptr != nullptr ? v.ptr : "", v.len);
  }
  return "";
}

/// One malloc'd block: the ack, its rejections, then every string.
ringmail_ack* make_ack(const ringmail::Ack& a) {
  const size_t head = sizeof(ringmail_ack) + a.rejections.size() * sizeof(ringmail_rejection);
  size_t bytes = head + a.batch_id.size() + 1 + a.reason.size() + 1;
  for (const auto& r : a.rejections) {
    bytes += r.text.size() + 1;
  }
  auto* block = static_cast<char*>(std::malloc(bytes));
  if (block == nullptr) {
    return nullptr;
  }
  char* strings = block + head;
  auto put = [&](std::string_view s) {
    char* at = strings;
    std::memcpy(at, s.data(), s.size());
    at[s.size()] = '\0';
    strings += s.size() + 1;
    return static_cast<const char*>(at);
  };
  auto* ack = new (block) ringmail_ack{};
  ack->struct_size = sizeof(ringmail_ack);
  ack->status = static_cast<int32_t>(a.status);
  ack->accepted = a.accepted;
  ack->seq = a.seq;
  ack->batch_id = put(a.batch_id);
  ack->reason = put(a.reason);
  ack->rejection_count = a.rejections.size();
  ringmail_rejection* rej = nullptr;
  for (size_t i = 0; i < a.rejections.size(); ++i) {
    const auto& r = a.rejections[i];
    auto* slot = new (block + sizeof(ringmail_ack) + i * sizeof(ringmail_rejection))
        ringmail_rejection{r.index, static_cast<int32_t>(r.reason), put(r.text)};
    if (i == 0) {
      rej = slot;
    }
  }
  ack->rejections = rej;
  return ack;
}

ringmail_ack* refused_ack(std::string_view batch_id, std::string_view why) {
  ringmail::Ack a;
  a.batch_id = batch_id;
  a.status = ringmail::AckStatus::kRejected;
  a.reason = "ringmail_submit: ";
  a.reason += why;
  return make_ack(a);
}

void deliver_event(ringmail_event_fn fn, void* user_data, const ringmail::EventView& v) {
  ringmail_event e;
  std::memset(&e, 0, sizeof e);
  e.struct_size = sizeof e;
  e.type = static_cast<int32_t>(v.type);
  e.code = v.code;
  e.attempt = v.attempt;
  e.origin = v.origin;
  e.batch = str_of(v.batch);
  e.recipient = str_of(v.recipient);
  e.sender = str_of(v.sender);
  e.enhanced_code = str_of(v.enhanced_code);
  e.response = str_of(v.response);
  e.peer = str_of(v.peer);
  e.mx = str_of(v.mx);
  e.failure_class = str_of(v.failure_class);
  e.domain = str_of(v.domain);
  e.json = str_of(v.json);
  ++t_c_callback_depth;
  fn(&e, user_data);
  --t_c_callback_depth;
}

}  // namespace

extern "C" {

const char* ringmail_version(void) {
  return RINGMAIL_VERSION_STRING;
}

unsigned ringmail_version_number(void) {
  return RINGMAIL_VERSION_NUMBER;
}

ringmail_engine* ringmail_start(const char* toml, char** error) {
  if (error != nullptr) {
    *error = nullptr;
  }
  if (toml == nullptr) {
    set_error(error, "ringmail_start: toml is NULL");
    return nullptr;
  }
  try {
    return start_with(ringmail::Engine::start_toml(toml), error);
  } catch (const std::exception& ex) {
    set_error(error, ex.what());
  } catch (...) {
    set_error(error, "ringmail_start: unknown exception");
  }
  return nullptr;
}

ringmail_engine* ringmail_start_file(const char* path, char** error) {
  if (error != nullptr) {
    *error = nullptr;
  }
  if (path == nullptr) {
    set_error(error, "ringmail_start_file: path is NULL");
    return nullptr;
  }
  try {
    return start_with(ringmail::Engine::start_file(path), error);
  } catch (const std::exception& ex) {
    set_error(error, ex.what());
  } catch (...) {
    set_error(error, "ringmail_start_file: unknown exception");
  }
  return nullptr;
}

void ringmail_stop(ringmail_engine* engine, int64_t grace_ms) {
  if (engine == nullptr) {
    return;
  }
  try {
    if (grace_ms < 0) {
      engine->engine->shutdown();
    } else {
      engine->engine->shutdown(std::chrono::milliseconds(grace_ms));
    }
    delete engine;
  } catch (...) {
    // Only a failing thread join or condition variable could get here; the
    // shards' state is unknown, and no exception may reach C.
    std::abort();
  }
}

ringmail_ack* ringmail_submit(ringmail_engine* engine, const ringmail_batch* batch) {
  if (engine == nullptr || batch == nullptr) {
    return nullptr;
  }
  try {
    ringmail_batch b;
    if (!read_batch(batch, &b)) {
      return refused_ack("", "struct_size is " + std::to_string(batch->struct_size));
    }
    ringmail::Batch cxx;
    std::string why = to_batch(b, &cxx);
    if (!why.empty()) {
      return refused_ack(cxx.batch_id, why);
    }
    return make_ack(engine->engine->submit(cxx));
  } catch (...) {
    return nullptr;
  }
}

void ringmail_ack_free(ringmail_ack* ack) {
  std::free(ack);
}

uint64_t ringmail_subscribe(ringmail_engine* engine, ringmail_event_fn fn, void* user_data) {
  if (engine == nullptr || fn == nullptr) {
    return 0;
  }
  try {
    return engine->engine->subscribe(
        [fn, user_data](const ringmail::EventView& v) { deliver_event(fn, user_data, v); });
  } catch (...) {
    return 0;
  }
}

int ringmail_unsubscribe(ringmail_engine* engine, uint64_t subscription) {
  if (engine == nullptr) {
    return RINGMAIL_ERR_ARGUMENT;
  }
  try {
    engine->engine->unsubscribe(subscription);
    return RINGMAIL_OK;
  } catch (...) {
    return RINGMAIL_ERR_NOMEM;
  }
}

int ringmail_drain(ringmail_engine* engine, int64_t timeout_ms) {
  if (engine == nullptr) {
    return RINGMAIL_ERR_ARGUMENT;
  }
  if (t_c_callback_depth > 0) {
    return RINGMAIL_ERR_IN_CALLBACK;
  }
  try {
    return engine->engine->drain(std::chrono::milliseconds(std::max<int64_t>(timeout_ms, 0)))
               ? RINGMAIL_OK
               : RINGMAIL_ERR_TIMEOUT;
  } catch (...) {
    return RINGMAIL_ERR_NOMEM;
  }
}

int ringmail_stats(ringmail_engine* engine, ringmail_engine_stats* out) {
  if (engine == nullptr || out == nullptr || out->struct_size < sizeof(out->struct_size)) {
    return RINGMAIL_ERR_ARGUMENT;
  }
  const ringmail::Stats s = engine->engine->stats();
  ringmail_engine_stats full;
  std::memset(&full, 0, sizeof full);
  full.struct_size = std::min(out->struct_size, sizeof full);
  full.delivered = s.delivered;
  full.deferred = s.deferred;
  full.bounced = s.bounced;
  full.unfinished = s.unfinished;
  full.connections_opened = s.connections_opened;
  full.transactions = s.transactions;
  full.unknown_outcomes = s.unknown_outcomes;
  full.dropped = s.dropped;
  full.queued_bytes = s.queued_bytes;
  full.spool_damage = s.spool_damage;
  full.spool_segments = s.spool_segments;
  full.spool_errors = s.spool_errors;
  full.submission_auth_checks = s.submission_auth_checks;
  full.submission_reclaimed = s.submission_reclaimed;
  full.submission_timeouts = s.submission_timeouts;
  std::memcpy(static_cast<void*>(out), &full, full.struct_size);
  return RINGMAIL_OK;
}

char* ringmail_control(ringmail_engine* engine, const char* command) {
  if (engine == nullptr || command == nullptr) {
    return nullptr;
  }
  try {
    return dup_string(engine->engine->control(command));
  } catch (...) {
    return nullptr;
  }
}

char* ringmail_reload(ringmail_engine* engine, const char* toml, char** error) {
  if (error != nullptr) {
    *error = nullptr;
  }
  if (engine == nullptr) {
    set_error(error, "ringmail_reload: engine is NULL");
    return nullptr;
  }
  try {
    ringmail::Expected<ringmail::ReloadResult> r = ringmail::ReloadResult{};
    if (toml == nullptr) {
      r = engine->engine->reload();
    } else {
      auto c = ringmail::Config::parse(toml);
      if (!c.ok()) {
        set_error(error, c.error().message);
        return nullptr;
      }
      r = engine->engine->reload(std::move(*c));
    }
    if (!r.ok()) {
      set_error(error, r.error().message);
      return nullptr;
    }
    ringmail::engine::Runtime::ReloadReport report{r->applied, r->restart_required};
    return dup_string(ringmail::engine::Runtime::reload_json(report));
  } catch (const std::exception& ex) {
    set_error(error, ex.what());
  } catch (...) {
    set_error(error, "ringmail_reload: unknown exception");
  }
  return nullptr;
}

void ringmail_free_string(char* s) {
  std::free(s);
}

}  // extern "C"
