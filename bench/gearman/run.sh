#!/usr/bin/env bash
# gearmand baseline for bench/compare.sh: the same kind of load Argon is
# measured with, against gearmand on this machine.
#
#   bench/gearman/run.sh                 # throughput and sequential latency
#   MODE=durable bench/gearman/run.sh    # sqlite queue, background jobs
#
# Starts gearmand on 127.0.0.1 (a free port, GM_THREADS I/O threads) and
# WORKERS processes of echo_worker.c, builds the C programs with gcc -O2 into
# WORKDIR, then measures with load_client.c:
#   default  throughput: N_TPUT echo jobs, WINDOW in flight (a sliding window
#            like `argon bench`'s; FILL=batch waits for each WINDOW jobs to be
#            answered before sending more), median of REPS runs after a
#            warm-up; then N_LAT jobs one at a time, p50/p90/p99 in microseconds.
#   durable  gearmand with its sqlite queue (a fresh db in WORKDIR); per run
#            N_BG background jobs, WINDOW unacknowledged at most (FILL as
#            above, counting acknowledgements): accept rate (until every
#            submission is acknowledged, so stored) and complete rate (first
#            submission until gearmand holds none of them), medians of REPS
#            runs after a warm-up.
# Output: one "# " header line, then "gearman ...: ..." result lines.
#
# Knobs (environment): MODE (default|durable), FILL (sliding|batch), WORKDIR
# (else a new temporary folder, removed afterwards unless KEEP=1 or a step
# failed), N_TPUT (20000), WINDOW (1000), REPS (3), N_LAT (2000), WORKERS (4),
# N_BG (2000), GM_THREADS (2), TIME_LIMIT (600 s for the whole script). Installs gearman-job-server,
# gearman-tools, libgearman-dev and gcc with apt-get when missing (as root
# only). Every process it starts is stopped by PID on exit.
set -uo pipefail

if [ -z "${GMBASE_BOUNDED:-}" ]; then
  GMBASE_BOUNDED=1 exec timeout -k 10 "${TIME_LIMIT:-600}" bash "$0" "$@"
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=${MODE:-default}
FILL=${FILL:-sliding}
N_TPUT=${N_TPUT:-20000}
WINDOW=${WINDOW:-1000}
REPS=${REPS:-3}
N_LAT=${N_LAT:-2000}
WORKERS=${WORKERS:-4}
N_BG=${N_BG:-2000}
GM_THREADS=${GM_THREADS:-2}

say() { printf 'gearman/run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "$MODE" in default|durable) ;; *) die "MODE must be default or durable" ;; esac
case "$FILL" in sliding) FILL_ARG= ;; batch) FILL_ARG=batch ;; *) die "FILL must be sliding or batch" ;; esac
for v in N_TPUT WINDOW REPS N_LAT WORKERS N_BG GM_THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
OWN_WORKDIR=0
if [ -z "${WORKDIR:-}" ]; then WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/gearman-base.XXXXXX"); OWN_WORKDIR=1; fi
mkdir -p "$WORKDIR" && WORKDIR=$(cd "$WORKDIR" && pwd) || die "cannot use $WORKDIR as work folder"

# ---- processes: started here, stopped by PID --------------------------------
PIDS=()
stop_pid() {   # TERM, up to 5 s to leave, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
STATUS=1
finish() {
  local i
  for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do stop_pid "${PIDS[i]}"; done   # workers before gearmand
  if [ "$OWN_WORKDIR" = 1 ] && [ "${KEEP:-0}" != 1 ] && [ "$STATUS" = 0 ]; then rm -rf "$WORKDIR"
  elif [ "$STATUS" != 0 ]; then say "logs in $WORKDIR"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- gearmand, libgearman, gcc ----------------------------------------------
GEARMAND=$(command -v gearmand || echo /usr/sbin/gearmand)
have_all() { [ -x "$GEARMAND" ] && [ -f /usr/include/libgearman/gearman.h ] && command -v gcc >/dev/null; }
if ! have_all; then
  PKGS="gearman-job-server gearman-tools libgearman-dev gcc"
  [ "$(id -u)" = 0 ] || die "gearmand, libgearman-dev or gcc is missing; install them as root: apt-get install $PKGS"
  command -v apt-get >/dev/null || die "gearmand, libgearman-dev or gcc is missing and there is no apt-get; install them ($PKGS)"
  say "installing $PKGS..."
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q $PKGS >"$WORKDIR/apt.log" 2>&1 ||
    { timeout 300 apt-get update -q >>"$WORKDIR/apt.log" 2>&1 &&
      timeout 300 apt-get install -y -q $PKGS >>"$WORKDIR/apt.log" 2>&1; } ||
    die "apt-get failed (see $WORKDIR/apt.log)"
  GEARMAND=$(command -v gearmand || echo /usr/sbin/gearmand)
  have_all || die "still missing gearmand, libgearman-dev or gcc after apt-get"
fi

BIN=$WORKDIR/bin
mkdir -p "$BIN"
for prog in load_client echo_worker; do
  if [ ! "$BIN/$prog" -nt "$HERE/$prog.c" ]; then
    gcc -O2 -Wall -o "$BIN/$prog" "$HERE/$prog.c" -lgearman -lm 2>"$WORKDIR/gcc-$prog.log" ||
      die "gcc failed on $prog.c (see $WORKDIR/gcc-$prog.log)"
  fi
done
CLIENT=$BIN/load_client

# ---- start ------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
  die "no free port found"
QUEUE=() QUEUE_NOTE=
if [ "$MODE" = durable ]; then
  DB=$WORKDIR/queue.sqlite
  rm -f "$DB" "$DB"-journal "$DB"-wal "$DB"-shm
  QUEUE=(-q libsqlite3 --libsqlite3-db "$DB")
  QUEUE_NOTE=", sqlite queue on $(stat -f -c %T "$WORKDIR")"
fi
"$GEARMAND" -L 127.0.0.1 -p "$PORT" -t "$GM_THREADS" -l "$WORKDIR/gearmand.log" ${QUEUE[@]+"${QUEUE[@]}"} \
  >"$WORKDIR/gearmand.out" 2>&1 &
GPID=$!; PIDS+=("$GPID")
for i in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$GPID" 2>/dev/null || die "gearmand exited (see $WORKDIR/gearmand.log)"
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "gearmand does not listen on $PORT after 10 s"
for i in $(seq "$WORKERS"); do
  "$BIN/echo_worker" 127.0.0.1 "$PORT" 2>>"$WORKDIR/workers.err" &
  PIDS+=("$!")
done
timeout 30 "$CLIENT" 127.0.0.1 "$PORT" workers "$WORKERS" 2>>"$WORKDIR/client.err" ||
  die "the $WORKERS workers did not all register (see $WORKDIR/workers.err)"

VERSION=$("$GEARMAND" --version 2>/dev/null | awk '$1 == "gearmand" { print $2; exit }')
echo "# gearmand ${VERSION:-?} on 127.0.0.1:$PORT, $GM_THREADS io threads, $WORKERS echo worker processes, $(nproc) cpus, libgearman C client$QUEUE_NOTE"

# ---- measure ----------------------------------------------------------------
# client ARGS...: one load_client run, bounded; its line on stdout and in runs.log
client() {
  timeout 200 "$CLIENT" 127.0.0.1 "$PORT" "$@" 2>>"$WORKDIR/client.err" | tee -a "$WORKDIR/runs.log"
  [ "${PIPESTATUS[0]}" = 0 ]
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

if [ "$MODE" = default ]; then
  client tput 1000 "$WINDOW" $FILL_ARG >/dev/null || die "warm-up failed (see $WORKDIR/client.err)"
  RATES=()
  for r in $(seq "$REPS"); do
    line=$(client tput "$N_TPUT" "$WINDOW" $FILL_ARG) || die "throughput run $r failed (see $WORKDIR/client.err)"
    RATES+=("$(sed -n 's/.* = \([0-9]*\) jobs\/s.*/\1/p' <<<"$line")")
  done
  echo "gearman throughput: median $(median "${RATES[@]}") jobs/s over $REPS runs [${RATES[*]}] of $N_TPUT echo jobs, $WINDOW in flight ($FILL), $WORKERS workers"
  client lat "$N_LAT" || die "latency run failed (see $WORKDIR/client.err)"
else
  client bg 200 "$WINDOW" $FILL_ARG >/dev/null || die "warm-up failed (see $WORKDIR/client.err)"
  ACCEPT=() COMPLETE=()
  for r in $(seq "$REPS"); do
    line=$(client bg "$N_BG" "$WINDOW" $FILL_ARG) || die "background run $r failed (see $WORKDIR/client.err)"
    ACCEPT+=("$(sed -n 's/.*accept \([0-9]*\) jobs\/s.*/\1/p' <<<"$line")")
    COMPLETE+=("$(sed -n 's/.*complete \([0-9]*\) jobs\/s.*/\1/p' <<<"$line")")
  done
  echo "gearman durable accept: median $(median "${ACCEPT[@]}") jobs/s over $REPS runs [${ACCEPT[*]}] of $N_BG background jobs, $WINDOW unacknowledged at most ($FILL), $WORKERS workers, sqlite queue"
  echo "gearman durable complete: median $(median "${COMPLETE[@]}") jobs/s over $REPS runs [${COMPLETE[*]}] (first submission until gearmand holds none of the $N_BG)"
fi
STATUS=0
