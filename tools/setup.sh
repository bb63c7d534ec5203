#!/usr/bin/env bash
# setup.sh — installs what ringmail needs on Debian 12 and builds it.
#
#   tools/setup.sh [--mode release|debug|asan] [--test-deps] [--no-build] [--builddir DIR]
#
# Idempotent: only missing packages are installed (apt-get, as root; sudo is
# used when not root). --test-deps adds the real peers the test suite runs
# against (Postfix smtp-sink/smtp-source, dnsmasq, swaks, aiosmtpd, dkimpy,
# openssl), the checkers of the shipped service files (systemd-analyze,
# logrotate) and clang's libFuzzer runtime. The build goes to build/ (release
# with debug info) unless --mode/--builddir say otherwise.
set -euo pipefail

mode=release
test_deps=0
build=1
builddir=
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode=$2; shift 2 ;;
    --test-deps) test_deps=1; shift ;;
    --no-build) build=0; shift ;;
    --builddir) builddir=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(g++ clang meson ninja-build pkg-config liburing-dev libwolfssl-dev libc-ares-dev
          libmimalloc-dev libtomlplusplus-dev libgtest-dev libgmock-dev libbenchmark-dev)
if [ "$test_deps" = 1 ]; then
  packages+=(postfix dnsmasq-base swaks python3-aiosmtpd python3-dkim python3-dnslib openssl
             libclang-rt-14-dev clang-format iproute2 procps)
  # swaks's TLS: a Recommends, which --no-install-recommends skips.
  packages+=(libnet-ssleay-perl)
  # The HTTP listener's tests: curl as the client, and Prometheus's own
  # text-format parser (prometheus_client) to read /metrics.
  packages+=(curl python3-prometheus-client)
  # tools/ringmaild.service (systemd-analyze verify), tools/ringmail.logrotate.
  packages+=(systemd logrotate)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  # Postfix asks how to configure itself: ringmail only uses its smtp-sink
  # and smtp-source, so "No configuration" (no system mail service).
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ "$build" = 1 ] || exit 0

case "$mode" in
  release) opts=(--buildtype=debugoptimized); : "${builddir:=build}" ;;
  debug)   opts=(--buildtype=debug); : "${builddir:=build-debug}" ;;
  asan)    opts=(--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false); : "${builddir:=build-asan}" ;;
  *) echo "setup.sh: unknown mode $mode" >&2; exit 2 ;;
esac
if [ -f "$builddir/build.ninja" ]; then
  meson configure "$builddir" "${opts[@]}" >/dev/null
else
  meson setup "$builddir" "${opts[@]}"
fi
ninja -C "$builddir" -j"$(nproc)"
echo "setup.sh: built into $builddir"
