#!/bin/sh
# exports_test.sh LIBRARY SONAME ABI_NAMESPACE
#
# libringmail.so exports the public API and nothing else: its soname is
# SONAME, every defined dynamic symbol is a C API function (ringmail_*) or
# lies in the C++ ABI namespace ringmail::ABI_NAMESPACE, and the entry
# points of both APIs are there, with the RINGMAIL_0 symbol version.
set -eu
lib=$1
want_soname=$2
ns=$3

soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [ "$soname" != "$want_soname" ]; then
  echo "soname is '$soname', expected '$want_soname'"
  exit 1
fi

syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
# The version node itself appears as an absolute symbol.
names=$(printf '%s\n' "$syms" | grep -v '^RINGMAIL_0$' | sed 's/@.*//' | c++filt)
# C++: a public function's own name, right before its parameter list (a
# template instance names its return type first), never an Impl.
stray=$(
  printf '%s\n' "$names" | grep -v -e '^ringmail_[a-z_]*$' -e "^ringmail::$ns::[A-Za-z_:~=]*[[(]" || true
  printf '%s\n' "$names" | grep -e '::Impl' || true
)
if [ -n "$stray" ]; then
  echo "exported beyond the public API ($(printf '%s\n' "$stray" | wc -l) symbols):"
  printf '%s\n' "$stray" | head -40
  exit 1
fi

missing=0
for sym in ringmail_version ringmail_version_number ringmail_start ringmail_start_file \
  ringmail_stop ringmail_submit ringmail_ack_free ringmail_subscribe ringmail_unsubscribe \
  ringmail_drain ringmail_stats ringmail_control ringmail_free_string; do
  if ! printf '%s\n' "$syms" | grep -qx "$sym@@RINGMAIL_0"; then
    echo "missing: $sym@@RINGMAIL_0"
    missing=1
  fi
done
for fn in "Engine::start(" "Engine::submit(" "Engine::subscribe(" "Engine::shutdown(" \
  "Config::parse(" "to_string("; do
  if ! printf '%s\n' "$names" | grep -qF "ringmail::$ns::$fn"; then
    echo "missing: ringmail::$ns::$fn...)"
    missing=1
  fi
done
if [ "$missing" != 0 ]; then
  exit 1
fi
echo "$(printf '%s\n' "$names" | wc -l) symbols exported, soname $soname"
