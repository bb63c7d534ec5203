#include "engine/events.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/log.h"
#include "proto/json.h"

namespace ringmail::engine {

std::string_view event_type_name(EventType t) {
  switch (t) {
    case EventType::kDelivered:
      return "delivered";
    case EventType::kDeferred:
      return "deferred";
    case EventType::kBounced:
      return "bounced";
    case EventType::kDropped:
      return "dropped";
    case EventType::kBackoff:
      return "backoff";
    case EventType::kResume:
      return "resume";
  }
  return "?";
}

void format_event_json(std::string& out, const OutcomeRecord& rec) {
  using proto::append_json_key;
  using proto::append_json_string;
  using proto::append_json_uint;
  out.push_back('{');
  append_json_key(out, "type");
  append_json_string(out, event_type_name(rec.type));
  out.push_back(',');
  append_json_key(out, "ts");
  out.push_back('"');
  append_rfc3339_ms(out, rec.wall_ms);
  out.push_back('"');
  out.push_back(',');
  append_json_key(out, "batch");
  append_json_string(out, rec.msg->batch_id());
  out.push_back(',');
  append_json_key(out, "recipient");
  append_json_string(out, rec.recipient);
  out.push_back(',');
  append_json_key(out, "sender");
  append_json_string(out, rec.msg->sender());
  out.push_back(',');
  append_json_key(out, "code");
  append_json_uint(out, rec.reply->code);
  out.push_back(',');
  append_json_key(out, "enhanced_code");
  append_json_string(out, rec.reply->enhanced.str());
  out.push_back(',');
  append_json_key(out, "response");
  append_json_string(out, rec.reply->summary());
  out.push_back(',');
  append_json_key(out, "stage");
  append_json_string(out, stage_name(rec.stage));
  out.push_back(',');
  append_json_key(out, "peer");
  append_json_string(out, rec.peer);
  out.push_back(',');
  append_json_key(out, "mx");
  append_json_string(out, rec.mx);
  out.push_back(',');
  if (!rec.peer.empty()) {
    // Outcomes from an SMTP connection say whether it was encrypted.
    append_json_key(out, "tls");
    append_json_string(out, rec.tls.empty() ? std::string_view("none") : rec.tls);
    out.push_back(',');
  }
  append_json_key(out, "attempt");
  append_json_uint(out, rec.attempt);
  out.push_back(',');
  append_json_key(out, "queue_ms");
  append_json_uint(out, rec.queue_ms < 0 ? 0 : static_cast<uint64_t>(rec.queue_ms));
  out.push_back(',');
  append_json_key(out, "shard");
  append_json_uint(out, rec.shard);
  if (!rec.failure_class.empty()) {
    out.push_back(',');
    append_json_key(out, "class");
    append_json_string(out, rec.failure_class);
  }
  if (rec.unknown) {
    out.push_back(',');
    append_json_key(out, "unknown_outcome");
    out.append("true");
  }
  if (!rec.note.empty()) {
    out.push_back(',');
    append_json_key(out, "note");
    append_json_string(out, rec.note);
  }
  if (!rec.msg->auth_user().empty()) {
    out.push_back(',');
    append_json_key(out, "auth_user");
    append_json_string(out, rec.msg->auth_user());
  }
  out.push_back('}');
}

void format_destination_json(std::string& out, const DestinationRecord& rec) {
  using proto::append_json_key;
  using proto::append_json_string;
  using proto::append_json_uint;
  out.push_back('{');
  append_json_key(out, "type");
  append_json_string(out, event_type_name(rec.type));
  out.push_back(',');
  append_json_key(out, "ts");
  out.push_back('"');
  append_rfc3339_ms(out, rec.wall_ms);
  out.append("\",");
  append_json_key(out, "destination");
  append_json_string(out, rec.domain);
  out.push_back(',');
  append_json_key(out, "pool");
  append_json_string(out, rec.pool);
  out.push_back(',');
  append_json_key(out, "source");
  append_json_string(out, rec.source);
  out.push_back(',');
  append_json_key(out, "max_connections");
  append_json_uint(out, rec.max_connections);
  if (rec.type == EventType::kBackoff) {
    out.push_back(',');
    append_json_key(out, "reason");
    append_json_string(out, rec.reason);
    out.append(",");
    append_json_key(out, "until");
    out.push_back('"');
    append_rfc3339_ms(out, rec.until_wall_ms);
    out.append("\",");
    append_json_key(out, "hold");
    out.append(rec.hold ? "true" : "false");
  }
  out.push_back(',');
  append_json_key(out, "shard");
  append_json_uint(out, rec.shard);
  out.push_back('}');
}

Result<std::shared_ptr<EventFile>> EventFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return make_error(Errc::kIo, "events.file: cannot open " + path + ": " + std::strerror(errno));
  }
  return std::shared_ptr<EventFile>(new EventFile(fd, path));
}

EventFile::~EventFile() {
  ::close(fd_);
}

EventLog::EventLog(Ring& ring, std::shared_ptr<EventFile> file) : ring_(ring) {
  files_.push_back(Target{std::move(file), {}, {}});
}

EventLog::~EventLog() = default;

void EventLog::append_line(std::string_view json) {
  Target& t = files_.back();
  if (t.file == nullptr) {
    return;
  }
  t.pending.append(json);
  t.pending.push_back('\n');
}

void EventLog::reopen(std::shared_ptr<EventFile> file, std::function<void()> written) {
  RM_ASSERT(files_.back().file != nullptr);
  files_.back().written = std::move(written);
  files_.push_back(Target{std::move(file), {}, {}});
}

void EventLog::flush() {
  if (writing_) {
    return;
  }
  // A previous file whose lines are all written is done with: it closes
  // when no shard holds it any more.
  while (files_.size() > 1 && files_.front().pending.empty()) {
    std::function<void()> written = std::move(files_.front().written);
    files_.pop_front();
    if (written) {
      written();
    }
  }
  Target& t = files_.front();
  if (t.file == nullptr || t.pending.empty()) {
    return;
  }
  writing_buf_.swap(t.pending);
  t.pending.clear();
  written_ = 0;
  writing_ = true;
  // Offset is ignored for O_APPEND files: the kernel appends each write
  // whole, so lines of different shards never interleave.
  ring_.write(t.file->fd(), writing_buf_.data(), writing_buf_.size(), 0, this);
}

void EventLog::complete(int res, uint32_t /*flags*/) {
  if (res < 0) {
    ++write_errors_;
    if (!error_logged_) {
      RM_LOG_ERROR("event file write failed: %s (events still reach subscribers)",
                   std::strerror(-res));
      error_logged_ = true;
    }
    writing_ = false;
    writing_buf_.clear();
    return;
  }
  written_ += static_cast<size_t>(res);
  if (written_ < writing_buf_.size() && res > 0) {
    ring_.write(files_.front().file->fd(), writing_buf_.data() + written_,
                writing_buf_.size() - written_, 0, this);
    return;
  }
  error_logged_ = false;
  writing_ = false;
  writing_buf_.clear();
}

}  // namespace ringmail::engine
