#!/usr/bin/env bash
# Runs every built libFuzzer target for N seconds over a temporary copy of
# its seed corpus (the checked-in corpus is never modified).
#
#   tests/fuzz/run-all.sh <build-dir> [seconds-per-target=20]
#
# Build first: CXX=clang++ meson setup build-fuzz -Dfuzzers=true \
#   -Db_sanitize=address,undefined -Dtests=false -Dbenchmarks=false
# Exit status: 0 when every target ran clean, 1 when any crashed, leaked,
# timed out or ran out of memory (its artifacts are kept and listed), 2 on
# usage errors or when no target was built.
set -u

if [[ $# -lt 1 ]]; then
  echo "usage: $0 <build-dir> [seconds-per-target]" >&2
  exit 2
fi
build=$1
seconds=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
targets=(
  address_fuzz
  batch_wire_fuzz
  config_fuzz
  data_reader_fuzz
  delivery_session_fuzz
  dkim_canon_fuzz
  dns_answer_fuzz
  dot_stuff_fuzz
  esmtp_caps_fuzz
  http_request_fuzz
  json_fuzz
  json_reader_fuzz
  smtp_command_parser_fuzz
  smtp_command_writer_fuzz
  smtp_reply_fuzz
  smtp_server_fuzz
  shaping_rules_fuzz
  spool_record_fuzz
  template_fuzz
)

work=$(mktemp -d "${TMPDIR:-/tmp}/ringmail-fuzz.XXXXXX")
ran=0
failed=()
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/$t"
  if [[ ! -x $exe ]]; then
    echo "skip  $t (not built: $exe)"
    continue
  fi
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp "$here/corpus/$t/"* "$work/$t/corpus/" 2>/dev/null || true
  dict=()
  case $t in
    smtp_* | delivery_session_fuzz) dict=("-dict=$here/smtp.dict") ;;
    dns_answer_fuzz) dict=("-dict=$here/dns.dict") ;;
    config_fuzz) dict=("-dict=$here/config.dict") ;;
  esac
  echo "run   $t for ${seconds}s"
  "$exe" "$work/$t/corpus" "${dict[@]}" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=5 \
    -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 \
    >"$work/$t/log" 2>&1
  rc=$?
  ran=$((ran + 1))
  if [[ $rc -ne 0 ]]; then
    failed+=("$t")
    echo "FAIL  $t (exit $rc); log: $work/$t/log"
    ls "$work/$t/artifacts" | sed 's/^/      artifact: /'
    tail -n 30 "$work/$t/log" | sed 's/^/      | /'
  else
    echo "ok    $t: $(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$work/$t/log" | awk '{print $2}') runs," \
      "corpus $(ls "$work/$t/corpus" | wc -l) inputs"
  fi
done

if [[ $ran -eq 0 ]]; then
  echo "no fuzz target found under $build/tests/fuzz" >&2
  exit 2
fi
if [[ ${#failed[@]} -ne 0 ]]; then
  echo "failed: ${failed[*]} (work dir kept: $work)"
  exit 1
fi
rm -rf "$work"
echo "all $ran targets clean"
