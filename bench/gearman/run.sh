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
#            warm-up; then N_LAT jobs one at a time, p50/p90/p99 in
#            microseconds (N_LAT=0 skips them). Around every timed
#            throughput run it reads the user and system CPU ticks of
#            gearmand and of every worker from /proc/PID/stat (fields 14
#            and 15) and, for the client, those of the subshell that waited
#            for it (fields 16 and 17, its children's), and prints them
#            summed over the REPS runs, with the jobs done, as one JSON line.
#   durable  gearmand with its sqlite queue (a fresh db in WORKDIR); per run
#            N_BG background jobs, WINDOW unacknowledged at most (FILL as
#            above, counting acknowledgements): accept rate (until every
#            submission is acknowledged, so stored) and complete rate (first
#            submission until gearmand holds none of them), medians of REPS
#            runs after a warm-up.
# Output: one "# " header line, then "gearman ...: ..." result lines; in the
# default mode one of them is machine-readable:
#   gearman cpu: {"clk_tck": 100, "jobs": J, "ticks": {"server": S,
#     "workers": W, "client": C}, "runs": [[S, W, C, J], ...]}
# (ticks over the REPS timed runs; CPU per job = ticks / clk_tck / jobs).
#
# Knobs (environment): MODE (default|durable), FILL (sliding|batch), WORKDIR
# (else a new temporary folder, removed afterwards unless KEEP=1 or a step
# failed), N_TPUT (20000), WINDOW (1000), REPS (3), N_LAT (2000; 0: none), WORKERS (4),
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
for v in N_TPUT WINDOW REPS WORKERS N_BG GM_THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $N_LAT =~ ^(0|[1-9][0-9]*)$ ]] || die "N_LAT must be a whole number (got '$N_LAT')"
CLK_TCK=$(getconf CLK_TCK) && [[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK failed"
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
# ticks PID...: user + system CPU ticks (fields 14 and 15 of /proc/PID/stat)
# summed over the PIDs; fails if one of them is gone. Builtins only.
ticks() {
  local pid line f sum=0
  for pid in "$@"; do
    read -r line 2>/dev/null <"/proc/$pid/stat" || return 1
    read -r -a f <<<"${line##*) }"   # from field 3 on: field N is f[N-3]
    sum=$(( sum + f[11] + f[12] ))
  done
  echo "$sum"
}
# child_ticks: the same for the children this shell has waited for (fields
# 16 and 17 of its own stat): in a fresh subshell, the CPU of what it ran.
child_ticks() {
  local line f
  read -r line 2>/dev/null <"/proc/$BASHPID/stat" || return 1
  read -r -a f <<<"${line##*) }"
  echo $(( f[13] + f[14] ))
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
WPIDS=()
for i in $(seq "$WORKERS"); do
  "$BIN/echo_worker" 127.0.0.1 "$PORT" 2>>"$WORKDIR/workers.err" &
  PIDS+=("$!"); WPIDS+=("$!")
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
# tput_run: one timed throughput run, bounded; the client's line on stdout and
# in runs.log, and "SERVER WORKERS CLIENT JOBS" (CPU ticks during the run,
# jobs answered) appended to cpu.runs
tput_run() {
  local g0 w0 g1 w1 c line jobs
  g0=$(ticks "$GPID") && w0=$(ticks "${WPIDS[@]}") || { say "gearmand or a worker is gone"; return 1; }
  c=$(timeout 200 "$CLIENT" 127.0.0.1 "$PORT" tput "$N_TPUT" "$WINDOW" $FILL_ARG \
        >"$WORKDIR/run.out" 2>>"$WORKDIR/client.err" || exit 1
      child_ticks) || return 1
  g1=$(ticks "$GPID") && w1=$(ticks "${WPIDS[@]}") || { say "gearmand or a worker is gone"; return 1; }
  line=$(<"$WORKDIR/run.out")
  printf '%s\n' "$line" >>"$WORKDIR/runs.log"
  jobs=$(sed -n 's/^tput: \([0-9]*\) jobs in .*/\1/p' <<<"$line")
  [ -n "$jobs" ] || { say "no job count in the client's line: $line"; return 1; }
  echo "$(( g1 - g0 )) $(( w1 - w0 )) $c $jobs" >>"$WORKDIR/cpu.runs"
  printf '%s\n' "$line"
}

if [ "$MODE" = default ]; then
  client tput 1000 "$WINDOW" $FILL_ARG >/dev/null || die "warm-up failed (see $WORKDIR/client.err)"
  RATES=()
  : >"$WORKDIR/cpu.runs"
  for r in $(seq "$REPS"); do
    line=$(tput_run) || die "throughput run $r failed (see $WORKDIR/client.err)"
    RATES+=("$(sed -n 's/.* = \([0-9]*\) jobs\/s.*/\1/p' <<<"$line")")
  done
  echo "gearman throughput: median $(median "${RATES[@]}") jobs/s over $REPS runs [${RATES[*]}] of $N_TPUT echo jobs, $WINDOW in flight ($FILL), $WORKERS workers"
  awk -v hz="$CLK_TCK" '
    { s += $1; w += $2; c += $3; j += $4; runs = runs (NR > 1 ? ", " : "") "[" $1 ", " $2 ", " $3 ", " $4 "]" }
    END { printf "gearman cpu: {\"clk_tck\": %d, \"jobs\": %d, \"ticks\": {\"server\": %d, \"workers\": %d, \"client\": %d}, \"runs\": [%s]}\n", hz, j, s, w, c, runs }
  ' "$WORKDIR/cpu.runs"
  if [ "$N_LAT" -gt 0 ]; then client lat "$N_LAT" || die "latency run failed (see $WORKDIR/client.err)"; fi
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
