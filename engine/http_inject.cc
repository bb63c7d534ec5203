// POST /api/inject/v1: KumoMTA's injection request shape onto a batch
// (see http_server.h and docs/http.md).
//
// Request: {"envelope_sender": "...", "content": "<RFC 5322 message>",
//           "recipients": [{"email": "...", "name": "...",
//                           "substitutions": {"k": "v", ...}}, ...],
//           "substitutions": {...}}
// Substitutions (per recipient over the request's own, the recipient's
// winning) become the batch's recipient variables and make it personalised:
// {{name}} placeholders in the content (proto/template.h). Values are
// strings, numbers (their JSON text) or booleans.
#include <memory>
#include <string>
#include <vector>

#include "engine/http_server.h"
#include "engine/runtime.h"
#include "engine/shard.h"
#include "proto/json.h"
#include "proto/json_reader.h"
#include "proto/template.h"

namespace ringmail::engine {
namespace {

/// JSON values per request. Threat: a body of "[0,0,0,…" costs 20 bytes of
/// nodes per 2 bytes; this caps the reader at 80 MiB, enough for a million
/// recipients without substitutions.
constexpr uint32_t kMaxJsonNodes = 1u << 22;
constexpr uint32_t kMaxJsonDepth = 8;

using Vars = std::vector<std::pair<std::string, std::string>>;

std::string error_body(std::string_view why) {
  std::string out = "{\"success_count\":0,\"fail_count\":0,\"failed_recipients\":[],\"errors\":[";
  proto::append_json_string(out, why);
  out += "]}";
  return out;
}

InjectResponse bad_request(std::string_view why) {
  return InjectResponse{400, error_body(why), ""};
}

/// Reads a substitutions object into `out` (replacing same-named entries).
/// Empty on success, else why not.
std::string read_vars(const proto::JsonValue& v, std::string_view where, Vars* out) {
  if (!v.is_object()) {
    return std::string(where) + ": must be an object";
  }
  for (const auto& [k, val] : v.members()) {
    std::string name = k.str();
    if (!proto::valid_var_name(name)) {
      return std::string(where) + ": \"" + name +
             "\" is not a variable name (1-64 of A-Z a-z 0-9 _ . -)";
    }
    std::string value;
    switch (val.type()) {
      case proto::JsonType::kString:
        value = val.str();
        break;
      case proto::JsonType::kNumber:
        value = std::string(val.raw());
        break;
      case proto::JsonType::kTrue:
        value = "true";
        break;
      case proto::JsonType::kFalse:
        value = "false";
        break;
      default:
        return std::string(where) + "." + name + ": must be a string, number or boolean";
    }
    bool replaced = false;
    for (auto& [n, old] : *out) {
      if (n == name) {
        if (v.count(name) > 1) {
          return std::string(where) + ": \"" + name + "\" given twice";
        }
        old = std::move(value);
        replaced = true;
        break;
      }
    }
    if (!replaced) {
      out->emplace_back(std::move(name), std::move(value));
    }
  }
  return "";
}

/// The parsed request, owning every string the batch points at.
struct InjectRequest {
  std::string sender;
  std::string content;
  std::vector<std::string> emails;
  std::vector<std::string> vars;  // encoded (proto::append_var), parallel to emails
  bool personalise = false;
};

/// Fills `r` from the JSON body; empty on success, else why not (400).
std::string parse_request(std::string_view body, InjectRequest* r) {
  proto::JsonLimits limits;
  limits.max_depth = kMaxJsonDepth;
  limits.max_nodes = kMaxJsonNodes;
  auto doc = proto::JsonDocument::parse(body, limits);
  if (!doc.ok()) {
    return "malformed JSON: " + doc.error().message;
  }
  proto::JsonValue root = doc->root();
  if (!root.is_object()) {
    return "the body must be a JSON object";
  }
  for (const auto& [k, v] : root.members()) {
    std::string key = k.str();
    if (key != "envelope_sender" && key != "content" && key != "recipients" &&
        key != "substitutions") {
      return "unknown field \"" + key +
             "\" (ringmail takes envelope_sender, content, recipients, substitutions)";
    }
    if (root.count(key) > 1) {
      return "field \"" + key + "\" given twice";
    }
  }
  auto sender = root.find("envelope_sender");
  if (!sender || !sender->is_string()) {
    return "envelope_sender: required, a string (the envelope sender address)";
  }
  r->sender = sender->str();
  auto content = root.find("content");
  if (!content || !content->is_string()) {
    return content && content->is_object()
               ? "content: must be the raw RFC 5322 message as a string (the builder form is "
                 "not supported)"
               : "content: required, a string (the raw RFC 5322 message)";
  }
  r->content = content->str();
  Vars common;
  if (auto subs = root.find("substitutions")) {
    if (std::string e = read_vars(*subs, "substitutions", &common); !e.empty()) {
      return e;
    }
    r->personalise = true;
  }
  auto rcpts = root.find("recipients");
  if (!rcpts || !rcpts->is_array() || rcpts->size() == 0) {
    return "recipients: required, a non-empty array of {\"email\": ...} objects";
  }
  std::vector<proto::JsonValue> items = rcpts->items();
  r->emails.reserve(items.size());
  std::vector<Vars> own(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    std::string where = "recipients[" + std::to_string(i) + "]";
    const proto::JsonValue& item = items[i];
    if (!item.is_object()) {
      return where + ": must be an object with an \"email\"";
    }
    for (const auto& [k, v] : item.members()) {
      std::string key = k.str();
      if (key != "email" && key != "name" && key != "substitutions") {
        return where + ": unknown field \"" + key + "\" (email, name, substitutions)";
      }
      if (item.count(key) > 1) {
        return where + ": field \"" + key + "\" given twice";
      }
    }
    auto email = item.find("email");
    if (!email || !email->is_string()) {
      return where + ".email: required, a string";
    }
    if (auto name = item.find("name"); name && !name->is_string()) {
      return where + ".name: must be a string";
    }
    r->emails.push_back(email->str());
    if (auto subs = item.find("substitutions")) {
      if (std::string e = read_vars(*subs, where + ".substitutions", &own[i]); !e.empty()) {
        return e;
      }
      r->personalise = true;
    }
  }
  if (r->personalise) {
    r->vars.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      Vars merged = common;
      for (auto& [n, v] : own[i]) {
        bool replaced = false;
        for (auto& [mn, mv] : merged) {
          if (mn == n) {
            mv = std::move(v);
            replaced = true;
          }
        }
        if (!replaced) {
          merged.emplace_back(n, std::move(v));
        }
      }
      for (const auto& [n, v] : merged) {
        proto::append_var(r->vars[i], n, v);
      }
    }
  }
  return "";
}

InjectResponse response_for(const proto::Ack& ack, const InjectRequest& r) {
  InjectResponse out;
  switch (ack.status) {
    case proto::AckStatus::kAccepted:
      out.status = 200;
      break;
    case proto::AckStatus::kRejected:
      out.status = 422;
      break;
    case proto::AckStatus::kTryLater:
      out.status = 429;
      out.extra_headers = "Retry-After: " + std::to_string(HttpServer::kRetryAfterBusy) + "\r\n";
      break;
    case proto::AckStatus::kSpoolUnavailable:
      out.status = 503;
      out.extra_headers = "Retry-After: " + std::to_string(HttpServer::kRetryAfterSpool) + "\r\n";
      break;
  }
  bool accepted = ack.status == proto::AckStatus::kAccepted;
  uint64_t success = accepted ? ack.accepted : 0;
  std::string& b = out.body;
  b = "{\"success_count\":";
  proto::append_json_uint(b, success);
  b += ",\"fail_count\":";
  proto::append_json_uint(b, r.emails.size() - success);
  b += ",\"failed_recipients\":[";
  bool first = true;
  if (accepted) {
    for (const proto::Rejection& rj : ack.rejections) {
      if (rj.index < r.emails.size()) {
        b += first ? "" : ",";
        first = false;
        proto::append_json_string(b, r.emails[rj.index]);
      }
    }
  } else {
    for (const std::string& e : r.emails) {
      b += first ? "" : ",";
      first = false;
      proto::append_json_string(b, e);
    }
  }
  b += "],\"errors\":[";
  first = true;
  if (!ack.reason.empty()) {
    proto::append_json_string(b, ack.reason);
    first = false;
  }
  for (const proto::Rejection& rj : ack.rejections) {
    if (rj.index >= r.emails.size()) {
      continue;
    }
    b += first ? "" : ",";
    first = false;
    std::string e = r.emails[rj.index] + ": " + std::string(proto::reject_reason_name(rj.reason));
    if (!rj.text.empty()) {
      e += " (" + rj.text + ")";
    }
    proto::append_json_string(b, e);
  }
  b += "]}";
  return out;
}

}  // namespace

void submit_inject(Shard& shard, std::string_view body, std::function<void(InjectResponse)> done) {
  auto req = std::make_shared<InjectRequest>();
  if (std::string e = parse_request(body, req.get()); !e.empty()) {
    done(bad_request(e));
    return;
  }
  BatchInput in;
  in.sender = req->sender;
  in.message = req->content;
  in.recipients.reserve(req->emails.size());
  for (const std::string& e : req->emails) {
    in.recipients.push_back(e);
  }
  if (req->personalise) {
    in.options.push_back("personalise=true");
    for (const std::string& v : req->vars) {
      in.recipient_vars.push_back(v);
    }
  }
  ShardStats* stats = &shard.stats();
  // Validation runs now; the answer may come after the spool's fsync.
  shard.runtime().submit_batch(
      in, static_cast<int>(shard.id()), [req, stats, done = std::move(done)](proto::Ack ack) {
        stats->batches[static_cast<size_t>(BatchSource::kHttp)][static_cast<size_t>(ack.status)]
            .fetch_add(1, std::memory_order_relaxed);
        done(response_for(ack, *req));
      });
}

}  // namespace ringmail::engine
