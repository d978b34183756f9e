#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify`, against a built
# `argon` binary (the units name /usr/local/bin/argon; a copy of each names
# the binary given here). Any warning fails the check. Skips, saying so, on a
# machine without systemd-analyze.
#
#   deploy/systemd/verify.sh target/debug/argon
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:?usage: verify.sh PATH_OF_ARGON_BINARY}")
[ -x "$bin" ] || { echo "verify.sh: $bin is not an executable" >&2; exit 2; }
if ! command -v systemd-analyze >/dev/null; then
  echo "verify.sh: SKIPPED: systemd-analyze is not installed" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/argon#$bin#" "$here/argon-manager.service" >"$tmp/argon-manager.service"
sed "s#/usr/local/bin/argon#$bin#" "$here/argon-worker@.service" >"$tmp/argon-worker@main.service"
out=$(systemd-analyze verify "$tmp/argon-manager.service" "$tmp/argon-worker@main.service" 2>&1) || true
if [ -n "$out" ]; then
  printf 'systemd-analyze verify found problems:\n%s\n' "$out" >&2
  exit 1
fi
echo "unit files verified"
