#!/usr/bin/env bash
# test.sh — set up and run ringmail's test suite on a fresh Debian 12 machine.
#
# 1. installs the build and test dependencies (tools/setup.sh --test-deps);
# 2. builds with AddressSanitizer + UndefinedBehaviorSanitizer (gcc) and runs
#    every suite: proto, engine, e2e (against ringmail-sink, Postfix's
#    smtp-sink/smtp-source and the other real peers on loopback);
# 3. builds proto/ alone (it must not depend on anything but the standard
#    library) and runs its tests;
# 4. builds with clang (-Werror too) with libFuzzer targets and runs each
#    fuzzer briefly over its seed corpus (FUZZ_SECONDS, default 10).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
"$top/tools/setup.sh" --test-deps --mode asan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
meson test -C build-asan --print-errorlogs --num-processes 2

if [ -f build-proto/build.ninja ]; then
  meson configure build-proto -Dproto_only=true >/dev/null
else
  meson setup build-proto -Dproto_only=true >/dev/null
fi
ninja -C build-proto -j"$(nproc)"
meson test -C build-proto --print-errorlogs

if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzzers=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dtests=false -Dbenchmarks=false >/dev/null
fi
# Only the fuzz targets (and what they link): the tools are built above.
mapfile -t fuzzers < <(cd build-fuzz && ninja -t targets all |
  grep -oE '^tests/fuzz/[a-z_]+_fuzz:' | tr -d ':' | sort -u)
ninja -C build-fuzz -j"$(nproc)" "${fuzzers[@]}"
tests/fuzz/run-all.sh build-fuzz "${FUZZ_SECONDS:-10}"
echo "test.sh: all suites passed"
