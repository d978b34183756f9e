#!/usr/bin/env bash
# Python client -> Python worker `echo` throughput: argon_tasks on an Argon
# manager next to Celery on Redis, same machine, same minutes.
#
# Both sides run TASKS echo tasks with CONCURRENCY in flight from one
# blocking Python client, results taken in input order and checked, against
# one Python worker process. Runs alternate (argon, celery, argon, ...),
# REPS of each; the table gives the median tasks/s with the min-max spread.
#
#   Argon:  argon manager (release build) --queue-factor QUEUE_FACTOR, one
#           `python -m argon_tasks worker` of CAPACITY slots (a plain `def echo`
#           on its thread pool), client `Client.map(...)` (bench/py/argon_echo.py).
#   Celery: redis-server (no persistence) as broker and result backend, one
#           `celery worker` (prefork, CELERY_CONCURRENCY processes), client
#           `echo.delay(i)` with a sliding window and `.get()` (bench/py/celery_echo.py).
#
# Knobs (environment): TASKS (20000), CONCURRENCY (100), REPS (3),
# CAPACITY (16), QUEUE_FACTOR (250), CELERY_CONCURRENCY (2),
# ARGON_BIN (default target/release/argon, built when missing),
# VENV (/tmp/argon-bench-venv: argon-tasks, celery and redis get installed
# there), KEEP=1 keeps the logs.
#
# Installs redis-server with apt-get when missing and running as root.
# Every process it starts is stopped by PID on exit; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TASKS=${TASKS:-20000}
CONCURRENCY=${CONCURRENCY:-100}
REPS=${REPS:-3}
CAPACITY=${CAPACITY:-16}
QUEUE_FACTOR=${QUEUE_FACTOR:-250}
CELERY_CONCURRENCY=${CELERY_CONCURRENCY:-2}
VENV=${VENV:-/tmp/argon-bench-venv}
ARGON_BIN=${ARGON_BIN:-$ROOT/target/release/argon}

WORK=$(mktemp -d /tmp/argon-vs-celery.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

die() { echo "python_vs_celery.sh: $*" >&2; exit 1; }

# wait_for FILE REGEX SECONDS: waits until a line of FILE matches.
wait_for() {
  local deadline=$((SECONDS + $3))
  until grep -qE "$2" "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { cat "$1" >&2; die "no line matching '$2' in $1 within $3 s"; }
    sleep 0.05
  done
}

# --- what it needs -----------------------------------------------------------

command -v python3 >/dev/null || die "python3 is missing"
if [ ! -x "$ARGON_BIN" ]; then
  echo "# building the release binary (cargo build --release)" >&2
  cargo build --release >&2
  ARGON_BIN=$ROOT/target/release/argon
fi
if ! command -v redis-server >/dev/null; then
  [ "$(id -u)" = 0 ] || die "redis-server is missing (apt-get install redis-server)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# kombu's Redis transport imports packaging without depending on it.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ./python celery redis packaging
PY=$VENV/bin/python
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- Argon: manager and one Python worker -----------------------------------

"$ARGON_BIN" keygen "$WORK/key" >/dev/null
"$ARGON_BIN" manager --host 127.0.0.1 --port 0 --key "$WORK/key" --queue-factor "$QUEUE_FACTOR" -q \
  >"$WORK/manager.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/manager.log" "listening on" 10
MGR=$(sed -n 's/^argon manager listening on //p' "$WORK/manager.log")
export ARGON_MGR=$MGR ARGON_KEY=$WORK/key
(cd bench/py && BENCH_CAPACITY=$CAPACITY exec "$PY" -m argon_tasks worker argon_echo:worker) \
  >"$WORK/argon-worker.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/argon-worker.log" "registered with the manager" 20

# --- Celery: redis and one worker -------------------------------------------

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no \
  >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/redis.log" "Ready to accept connections" 10
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
# WARNING, not INFO: INFO writes a line per task. Each client run's first
# task (60 s bound) waits for the worker to be up.
(cd bench/py && exec "$VENV/bin/celery" -A celery_echo worker --pool prefork \
  --concurrency "$CELERY_CONCURRENCY" --loglevel WARNING --without-gossip --without-mingle --without-heartbeat) \
  >"$WORK/celery-worker.log" 2>&1 &
PIDS+=($!)

# --- the runs -----------------------------------------------------------------

for rep in $(seq 1 "$REPS"); do
  for side in argon celery; do
    echo "# run $rep/$REPS: $side" >&2
    (cd bench/py && timeout 600 "$PY" "${side}_echo.py" "$TASKS" "$CONCURRENCY") >>"$WORK/results.jsonl" \
      || die "the $side run failed"
  done
done

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSIONS=$("$PY" -c 'import sys, celery, argon_tasks; print(f"python {sys.version.split()[0]}, argon-tasks {argon_tasks.__version__}, celery {celery.__version__}")')
REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
"$PY" - "$WORK/results.jsonl" <<EOF
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {s: sorted(r["per_s"] for r in runs if r["system"] == s) for s in ("argon", "celery")}
med = {s: statistics.median(v) for s, v in by.items()}
print("# $(date -u +%F), commit $COMMIT; $VERSIONS, redis $REDIS_VERSION; $(nproc) cpus")
print("# $TASKS echo tasks, $CONCURRENCY in flight, one blocking Python client, one Python worker; $REPS runs each, alternating")
print("# argon: release manager, queue factor $QUEUE_FACTOR, argon_tasks worker with $CAPACITY slots (threads)")
print("# celery: redis-server broker + result backend, prefork worker with $CELERY_CONCURRENCY processes")
print(f"{'':8} {'median tasks/s':>15} {'min-max':>17}   runs")
for s in ("argon", "celery"):
    v = by[s]
    print(f"{s:8} {med[s]:>15,.0f} {f'{v[0]:,.0f}-{v[-1]:,.0f}':>17}   " + " ".join(f"{x:,.0f}" for x in v))
print(f"ratio    {med['argon'] / med['celery']:>14.1f}x   (argon median / celery median)")
EOF
