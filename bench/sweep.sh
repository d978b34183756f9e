#!/usr/bin/env bash
# The degradation curve of one manager on this machine.
#
#   bench/sweep.sh              # from the repository root (or anywhere)
#
# Builds `argon` (release), starts on 127.0.0.1 a manager and WORKERS worker
# processes of SLOTS slots each, runs `argon bench --sweep` against them,
# and writes OUT.json and OUT.svg. It also samples the manager's resident
# memory once a second and prints the largest value. Every process it
# starts is stopped by PID on exit; every wait is bounded.
#
# Knobs (environment): WORKERS (2), SLOTS (8), QUEUE_FACTOR (3),
# OUT (docs/degradation: writes docs/degradation.json and .svg),
# SWEEP_ARGS (extra flags for the sweep, e.g. "--step-secs 6 --loads 1,10").
# KEEP=1 keeps the logs folder. Exits non-zero if anything failed.
set -uo pipefail

WORKERS=${WORKERS:-2}
SLOTS=${SLOTS:-8}
QUEUE_FACTOR=${QUEUE_FACTOR:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/docs/degradation}
SWEEP_ARGS=${SWEEP_ARGS:-}
NAME=sweep
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
build_argon

start_manager "$QUEUE_FACTOR" || exit 1

for i in $(seq "$WORKERS"); do
  "$ARGON" worker --mgr "$MGR_ADDR" --key "$KEY" --capacity "$SLOTS" -q \
    >"$LOGS/worker$i.out" 2>"$LOGS/worker$i.err" &
  LIVE+=("$!")
done
have=0
for _ in $(seq 100); do
  have=$(workers_registered)
  [ "${have:-0}" -ge "$WORKERS" ] && break
  sleep 0.1
done
[ "${have:-0}" -ge "$WORKERS" ] || { fail "only ${have:-0} of $WORKERS workers registered"; exit 1; }

rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$MGR_PID/status" 2>/dev/null; }
say "manager $MGR_ADDR (pid $MGR_PID), $WORKERS x $SLOTS slots, queue factor $QUEUE_FACTOR; RSS $(rss_kib) KiB"
(
  peak=0
  while kill -0 "$MGR_PID" 2>/dev/null; do
    r=$(rss_kib); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$LOGS/rss.peak"
    sleep 1
  done
) &
LIVE+=("$!")

# shellcheck disable=SC2086
timeout 1800 "$ARGON" bench --mgr "$MGR_ADDR" --key "$KEY" --sweep \
  --out "$OUT.json" --svg "$OUT.svg" $SWEEP_ARGS || fail "the sweep failed"
say "manager RSS: peak $(cat "$LOGS/rss.peak" 2>/dev/null) KiB during the sweep, $(rss_kib) KiB after"
say "wrote $OUT.json and $OUT.svg"
exit "$FAILED"
