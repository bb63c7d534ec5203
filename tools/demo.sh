#!/usr/bin/env bash
# demo.sh — ringmail's main job on a fresh Debian 12 machine: set up and
# build, start ringmail-sink on 127.0.0.1:2525 and ringmaild with its
# embedded default configuration, inject a sample batch (one message to
# 10,000 recipients) and a stream of 50,000 single-recipient 2 KB messages,
# and print what was delivered and how fast. Everything stays on loopback
# and is stopped at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tools/setup.sh"
bin="$top/build/tools"

work=$(mktemp -d /tmp/ringmail-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

if ss -ltnH 'sport = :2525' 2>/dev/null | grep -q .; then
  echo "demo.sh: 127.0.0.1:2525 is busy (the default route points there); stop what listens there" >&2
  exit 1
fi
"$bin/ringmail-sink" --listen 127.0.0.1:2525 --stats-file "$work/sink.json" >"$work/sink.out" &
sink_pid=$!
pids+=($sink_pid)
cd "$work"
"$bin/ringmaild" 2>"$work/ringmaild.log" &
pids+=($!)
for _ in $(seq 200); do [ -S "$work/ringmail.sock" ] && break; sleep 0.05; done
[ -S "$work/ringmail.sock" ] || { cat "$work/ringmaild.log" >&2; exit 1; }

cat >"$work/sample.eml" <<'MSG'
From: Ringmail Demo <demo@example.test>
Subject: Hello from ringmail
Date: Thu, 26 Nov 2026 10:00:00 +0000
Message-ID: <demo-1@example.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

This message was delivered by ringmail to a local sink.
MSG
for i in $(seq 0 9999); do echo "reader$i@d$((i % 50)).example.test"; done >"$work/rcpts.txt"

echo "== sample batch: one message, 10,000 recipients at 50 domains"
"$bin/ringmail-inject" --eml "$work/sample.eml" --rcpts "$work/rcpts.txt" --batch 10000 --wait --timeout 120
echo
echo "== stream: 50,000 messages of 2 KB, one recipient each"
"$bin/ringmail-inject" --count 50000 --size 2048 --batch 1 --domains 16 --wait --timeout 300 --quiet
echo
echo "== what the sink received"
# Stopping the sink makes it print its final counts (and rewrite the
# stats file) after every connection has been accounted for.
kill -TERM "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
tail -n 1 "$work/sink.out"
echo "== events: $(wc -l <"$work/ringmail-events.jsonl") lines in $work/ringmail-events.jsonl"
head -n 1 "$work/ringmail-events.jsonl"
