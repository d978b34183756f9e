#!/usr/bin/env bash
# Argon next to gearmand on this machine, in one run, as ratios.
#
#   bench/compare.sh            # from the repository root (or anywhere)
#
# 1. builds `argon` (release);
# 2. runs the gearmand baseline, bench/gearman/run.sh (gearmand, 4 C echo
#    workers and a C client on libgearman; it installs gearmand and its client
#    library if they are missing);
# 3. measures Argon on 127.0.0.1 (every process started here is stopped by
#    PID on exit):
#    - throughput: manager + 1 worker x 4 slots + `argon bench`, TASKS echo
#      tasks, INFLIGHT in flight over 4 connections, median of REPS runs; once
#      with a queue factor sized for the load (queue bound >= INFLIGHT) and
#      once with the default factor 3 (most offers are then denied and retried:
#      that is the design);
#    - sequential round trip: one task in flight, N_LAT tasks;
#    - manager RSS idle, and holding IDLE idle authenticated client connections;
#    - throughput with 1, 10, 100 and 1000 registered workers of 1 slot each
#      (one `argon worker --instances N` process);
# 4. the best configuration of each system: the slot count among BEST_SLOTS
#    that gives it the most throughput here, found with one run per count
#    (gearmand: N worker processes; Argon: one worker process of N slots, and
#    N one-slot workers in one process), then REPS runs of each system at its
#    best, next to each other (SKIP_BEST=1 skips this step);
# 5. runs the throughput and latency comparison again with every process of
#    both systems on CPU 0 (taskset), the steadier comparison on a VM;
# 6. durable submissions: gearmand with its sqlite queue and background jobs
#    (`MODE=durable bench/gearman/run.sh`) next to a manager with
#    `--persist` (a fresh store folder per run) and `argon bench --detach`,
#    N_BG jobs per run with INFLIGHT unacknowledged, REPS runs each: accepts/s
#    and completions/s. Skipped for an argon without `manager --persist`;
# 7. prints a table with the ratios.
#
# CPU per task: around every timed throughput run it reads the user and
# system CPU ticks (fields 14 and 15 of /proc/PID/stat) of the manager and the
# worker process, and of gearmand and each of its workers; a client's are
# read as the children's ticks (fields 16 and 17) of the subshell that waited
# for it. Each system's ticks, summed over its REPS runs and divided by the
# tasks done in them, are printed as us per task, by process kind and in all
# (a tick is 1/CLK_TCK s, 10 ms here, and each reading is within a tick: over
# 3 runs of 20,000 tasks a process kind's figure is within about 0.5 us).
#
# On this machine (2 vCPUs) a run takes about 1.5 to 2 minutes after the
# build, of which the best-configuration step takes about 40 s.
#
# Knobs (environment): TASKS (20000), INFLIGHT (1000), REPS (3), N_LAT (2000),
# IDLE (1000), SCALE ("1 10 100 1000"), PAYLOAD (8: bytes per task, about
# the baseline's "job-N" strings), N_BG (2000: durable jobs per run),
# BEST_SLOTS ("1 2 4 8 16 32 64", each at most 64), BEST_LAYOUTS ("capacity
# instances": Argon's layouts searched), GEARMAN_RUN (the baseline script,
# bench/gearman/run.sh by default), SKIP_GEARMAN=1, SKIP_BEST=1,
# SKIP_ONE_CPU=1, SKIP_DURABLE=1, KEEP=1 (keep the logs folder). Exits
# non-zero if anything failed to start or a measurement failed.
set -uo pipefail

TASKS=${TASKS:-20000}
INFLIGHT=${INFLIGHT:-1000}
REPS=${REPS:-3}
N_LAT=${N_LAT:-2000}
IDLE=${IDLE:-1000}
SCALE=${SCALE:-"1 10 100 1000"}
PAYLOAD=${PAYLOAD:-8}
N_BG=${N_BG:-2000}
BEST_SLOTS=${BEST_SLOTS:-"1 2 4 8 16 32 64"}
BEST_LAYOUTS=${BEST_LAYOUTS:-"capacity instances"}
for n in $BEST_SLOTS; do
  [[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 64 ] || { echo "compare: BEST_SLOTS holds 1 to 64 (got '$n')" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEARMAN_RUN=${GEARMAN_RUN:-$ROOT/bench/gearman/run.sh}
NAME=compare
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
build_argon

# ---- helpers ---------------------------------------------------------------
WRK_PID=
# start_workers CAPACITY INSTANCES: one worker process; waits (60 s bound) until all registered
start_workers() {
  local n i have
  $ON_CPU "$ARGON" worker --mgr "$MGR_ADDR" --key "$KEY" --capacity "$1" --instances "$2" -q \
    >"$LOGS/worker.out" 2>"$LOGS/worker.err" &
  WRK_PID=$!; LIVE+=("$WRK_PID")
  for i in $(seq 300); do
    have=$(workers_registered)
    [ "${have:-0}" -ge "$2" ] && return 0
    kill -0 "$WRK_PID" 2>/dev/null || break
    sleep 0.2
  done
  fail "only ${have:-0} of $2 workers registered (see $LOGS/worker.err)"; return 1
}
stop_all() {
  local p
  for p in $WRK_PID $MGR_PID; do stop_pid "$p"; forget_pid "$p"; done
  WRK_PID= MGR_PID= MGR_ADDR=
}
# bench ARGS...: one `argon bench --json` run (120 s bound), its JSON on
# stdout with the CPU it cost added: "cpu_ticks" {manager, worker, client},
# user + system ticks during the run from /proc (the client's as the children
# ticks of the subshell that waited for it), and "clk_tck". Fails if the run
# failed or the manager or worker process is gone.
bench() {
  local m0 w0 m1 w1 c
  m0=$(ticks "$MGR_PID") && w0=$(ticks "$WRK_PID") || { say "$NAME: the manager or worker process is gone"; return 1; }
  c=$(timeout 120 $ON_CPU "$ARGON" bench --mgr "$MGR_ADDR" --key "$KEY" --payload "$PAYLOAD" --json "$@" \
        >"$LOGS/bench.out" 2>>"$LOGS/bench.err" || exit 1
      child_ticks) || { say "$NAME: argon bench $* failed (see $LOGS/bench.err)"; return 1; }
  m1=$(ticks "$MGR_PID") && w1=$(ticks "$WRK_PID") || { say "$NAME: the manager or worker process is gone"; return 1; }
  tail -n 1 "$LOGS/bench.out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["cpu_ticks"] = dict(zip(("manager", "worker", "client"), map(int, sys.argv[1:4])))
r["clk_tck"] = int(sys.argv[4])
print(json.dumps(r))' "$(( m1 - m0 ))" "$(( w1 - w0 ))" "$c" "$CLK_TCK"
}
# median_run ARGS...: REPS bench runs, prints the JSON of the median-throughput
# one (see median_json); fails if any run failed
median_run() {
  local r out=$LOGS/runs.out
  : >"$out"
  for r in $(seq "$REPS"); do
    bench "$@" >>"$out" || return 1
  done
  median_json <"$out"
}
# median_json: JSON reports on stdin, one a line; prints the median-throughput
# one with every run's throughput added as all_throughputs and, when the runs
# carry cpu_ticks, the CPU per task over all of them (ticks summed over the
# runs, divided by the tasks done in them) as cpu_us_per_task {manager, worker,
# client, total} and each run's total as cpu_runs_us
median_json() {
  python3 -c '
import json, sys
rs = []
for line in sys.stdin:
    try: rs.append(json.loads(line))
    except ValueError: pass
if not rs: sys.exit(1)
done = lambda r: r["completed"] if "completed" in r else r["tasks"] - r.get("failed", 0)
if all("cpu_ticks" in r for r in rs) and all(done(r) > 0 for r in rs):
    us = lambda ticks: ticks * 1e6 / rs[0]["clk_tck"] / sum(map(done, rs))
    cpu = {k: us(sum(r["cpu_ticks"][k] for r in rs)) for k in ("manager", "worker", "client")}
    cpu["total"] = sum(cpu.values())
    runs = [sum(r["cpu_ticks"].values()) * 1e6 / r["clk_tck"] / done(r) for r in rs]
else:
    cpu = runs = None
rs.sort(key=lambda r: r["throughput"])
m = rs[(len(rs) - 1) // 2] if len(rs) % 2 else rs[len(rs) // 2 - 1]
m["all_throughputs"] = [round(r["throughput"]) for r in rs]
if cpu:
    m["cpu_us_per_task"] = cpu
    m["cpu_runs_us"] = [round(x, 1) for x in runs]
print(json.dumps(m))'
}
# field JSON NAME
field() { python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])[sys.argv[2]]))' "$1" "$2" 2>/dev/null; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
qf_for() { echo $(( ($INFLIGHT + $1 - 1) / $1 )); }   # queue factor so capacity x factor >= INFLIGHT

# ---- gearmand --------------------------------------------------------------
# gearman_run NAME [VAR=VALUE...]: one run of the baseline script (600 s
# bound; its work folder $LOGS/NAME unless WORKDIR is given) with this run's
# TASKS, INFLIGHT, REPS and N_LAT unless given, every process under $ON_CPU;
# its output in $LOGS/NAME.out and .err
gearman_run() {
  local name=$1; shift
  env WORKDIR="$LOGS/$name" N_TPUT="$TASKS" WINDOW="$INFLIGHT" REPS="$REPS" N_LAT="$N_LAT" "$@" \
    timeout 600 $ON_CPU bash "$GEARMAN_RUN" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
}
# gm_tput NAME: the median jobs/s the run printed
gm_tput() { sed -n 's/^gearman throughput: median \([0-9]*\) jobs.*/\1/p' "$LOGS/$1.out"; }
# gm_cpu NAME: true if the run printed its CPU line
gm_cpu() { grep -q '^gearman cpu: {' "$LOGS/$1.out"; }

GM_TPUT= GM_P50= GM_P99= GM_HEAD=
if [ "${SKIP_GEARMAN:-0}" != 1 ]; then
  if [ -f "$GEARMAN_RUN" ]; then
    say "gearmand baseline ($GEARMAN_RUN)..."
    if gearman_run gearman; then
      GM_HEAD=$(sed -n 's/^# //p' "$LOGS/gearman.out")
      GM_TPUT=$(gm_tput gearman)
      GM_P50=$(sed -n 's/^gearman latency: p50 \([0-9.]*\) us.*/\1/p' "$LOGS/gearman.out")
      GM_P99=$(sed -n 's/^gearman latency: .*p99 \([0-9.]*\) us.*/\1/p' "$LOGS/gearman.out")
    fi
    [ -n "$GM_TPUT" ] && [ -n "$GM_P50" ] && gm_cpu gearman || fail "gearman baseline failed (see $LOGS/gearman.err)"
  else
    fail "no gearman baseline script at $GEARMAN_RUN (set GEARMAN_RUN)"
  fi
fi

# ---- Argon: throughput, latency --------------------------------------------
# Each result is one JSON object in $LOGS/NAME.json, read by the report below.
SIZED_QF=$(qf_for 4)
say "argon throughput, queue factor $SIZED_QF (sized for $INFLIGHT in flight on 4 slots)..."
if start_manager "$SIZED_QF" && start_workers 4 1; then
  bench --tasks 1000 --concurrency 100 --clients 4 >/dev/null || fail "warm-up failed"
  median_run --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/sized.json" ||
    fail "throughput run failed"
  say "argon sequential round trip..."
  bench --tasks "$N_LAT" --concurrency 1 --clients 1 >"$LOGS/latency.json" || fail "latency run failed"
fi
stop_all
say "argon throughput, default queue factor 3..."
if start_manager 3 && start_workers 4 1; then
  median_run --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/default.json" ||
    fail "default-factor run failed"
fi
stop_all

# ---- Argon: manager memory -------------------------------------------------
RSS_IDLE= RSS_HELD=
say "manager memory, idle and with $IDLE idle client connections..."
if start_manager 3; then
  sleep 0.5
  RSS_IDLE=$(rss_kib "$MGR_PID")
  "$ARGON" bench --mgr "$MGR_ADDR" --key "$KEY" --idle-clients "$IDLE" --hold 60s \
    >"$LOGS/idle.out" 2>"$LOGS/idle.err" &
  IDLE_PID=$!; LIVE+=("$IDLE_PID")
  for i in $(seq 300); do
    grep -q "idle connections open" "$LOGS/idle.out" && break
    kill -0 "$IDLE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "idle connections open" "$LOGS/idle.out"; then
    sleep 1
    RSS_HELD=$(rss_kib "$MGR_PID")
  else
    fail "the idle clients did not all connect (see $LOGS/idle.err)"
  fi
  stop_pid "$IDLE_PID"; forget_pid "$IDLE_PID"
fi
stop_all

# ---- Argon: registered workers ---------------------------------------------
for n in $SCALE; do
  say "argon throughput with $n registered worker(s) of 1 slot..."
  if start_manager "$(qf_for "$n")" && start_workers 1 "$n"; then
    median_run --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/workers-$n.json" ||
      fail "run with $n workers failed"
  fi
  stop_all
done

# ---- best configuration: each system at its best slot count ---------------
# The rows above give both systems 4 slots. Here each gets the slot count
# that gives it the most throughput on this machine: gearmand with N worker
# processes, Argon with one worker process of N slots (layout "capacity") or
# N one-slot workers in one process (layout "instances"), N from BEST_SLOTS.
# The search takes one run per (layout, N) after a warm-up; the best of each
# system is then measured afresh, REPS runs, median, next to each other.
BEST_GM= BEST_AR= BEST_AR_LAYOUT=
if [ "${SKIP_BEST:-0}" != 1 ]; then
  : >"$LOGS/search.txt"
  if [ "${SKIP_GEARMAN:-0}" != 1 ] && [ -f "$GEARMAN_RUN" ]; then
    for n in $BEST_SLOTS; do
      say "best-configuration search: gearmand with $n worker(s)..."
      if gearman_run "gm-search-$n" WORKDIR="$LOGS/gm-search" WORKERS="$n" REPS=1 N_LAT=0 &&
          t=$(gm_tput "gm-search-$n") && [ -n "$t" ]; then
        echo "gearmand $n $t" >>"$LOGS/search.txt"
      else
        fail "gearman search run with $n workers failed (see $LOGS/gm-search-$n.err)"
      fi
    done
  fi
  for layout in $BEST_LAYOUTS; do
    for n in $BEST_SLOTS; do
      say "best-configuration search: argon, layout $layout, $n slot(s)..."
      case $layout in capacity) c=$n i=1 ;; instances) c=1 i=$n ;; *) fail "unknown layout $layout"; continue ;; esac
      if start_manager "$(qf_for "$n")" && start_workers "$c" "$i" &&
          bench --tasks 1000 --concurrency 100 --clients 4 >/dev/null &&
          bench --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/search-$layout-$n.json" &&
          t=$(field "$(cat "$LOGS/search-$layout-$n.json")" throughput) && [ -n "$t" ]; then
        echo "argon-$layout $n $t" >>"$LOGS/search.txt"
      else
        fail "argon search run, layout $layout, $n slots, failed"
      fi
      stop_all
    done
  done
  # best SYSTEM-PATTERN: "NAME N" of the highest jobs/s among the search lines
  best() { grep "^$1 " "$LOGS/search.txt" | sort -k3,3nr | head -n 1 | cut -d' ' -f1,2; }
  if [ "${SKIP_GEARMAN:-0}" != 1 ] && [ -f "$GEARMAN_RUN" ]; then
    BEST_GM=$(best gearmand | cut -d' ' -f2)
    if [ -n "$BEST_GM" ]; then
      say "gearmand at its best, $BEST_GM worker(s), $REPS runs..."
      gearman_run gm-best WORKDIR="$LOGS/gm-search" WORKERS="$BEST_GM" N_LAT=0 && [ -n "$(gm_tput gm-best)" ] &&
        gm_cpu gm-best || fail "gearman run at its best failed (see $LOGS/gm-best.err)"
    fi
  fi
  read -r BEST_AR_LAYOUT BEST_AR <<<"$(best 'argon-[a-z]*')"
  BEST_AR_LAYOUT=${BEST_AR_LAYOUT#argon-}
  if [ -n "$BEST_AR" ]; then
    say "argon at its best, layout $BEST_AR_LAYOUT, $BEST_AR slot(s), $REPS runs..."
    case $BEST_AR_LAYOUT in capacity) c=$BEST_AR i=1 ;; *) c=1 i=$BEST_AR ;; esac
    if start_manager "$(qf_for "$BEST_AR")" && start_workers "$c" "$i"; then
      bench --tasks 1000 --concurrency 100 --clients 4 >/dev/null || fail "warm-up at the best failed"
      median_run --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/best.json" ||
        fail "argon run at its best failed"
    fi
    stop_all
  else
    fail "the argon search gave no result"
  fi
fi

# ---- both again, every process on CPU 0 ------------------------------------
# On this kind of VM a wake-up across CPUs is costly, and where the scheduler
# puts the manager and its worker swings the unpinned figures by ~1.5x from
# run to run. With every process of both systems on one CPU they compete on
# equal, steadier terms.
GM1_TPUT= GM1_P50= GM1_P99=
if [ "${SKIP_ONE_CPU:-0}" != 1 ] && command -v taskset >/dev/null; then
  ON_CPU="taskset -c 0"
  if [ "${SKIP_GEARMAN:-0}" != 1 ] && [ -f "$GEARMAN_RUN" ]; then
    say "gearmand baseline, every process on CPU 0..."
    if gearman_run gearman1; then
      GM1_TPUT=$(gm_tput gearman1)
      GM1_P50=$(sed -n 's/^gearman latency: p50 \([0-9.]*\) us.*/\1/p' "$LOGS/gearman1.out")
      GM1_P99=$(sed -n 's/^gearman latency: .*p99 \([0-9.]*\) us.*/\1/p' "$LOGS/gearman1.out")
    fi
    [ -n "$GM1_TPUT" ] && gm_cpu gearman1 || fail "gearman baseline on one CPU failed (see $LOGS/gearman1.err)"
  fi
  say "argon, every process on CPU 0..."
  if start_manager "$SIZED_QF" && start_workers 4 1; then
    bench --tasks 1000 --concurrency 100 --clients 4 >/dev/null || fail "one-CPU warm-up failed"
    median_run --tasks "$TASKS" --concurrency "$INFLIGHT" --clients 4 >"$LOGS/one-cpu.json" ||
      fail "one-CPU throughput run failed"
    bench --tasks "$N_LAT" --concurrency 1 --clients 1 >"$LOGS/one-cpu-latency.json" ||
      fail "one-CPU latency run failed"
  fi
  stop_all
  ON_CPU=
fi

# ---- durable: gearmand's sqlite queue, argon --persist -----------------------
# Both acknowledge a submission once it is stored; both then run it on the
# same workers as above. Every Argon run gets a fresh store folder and a fresh
# manager, and a 200-task warm-up as the gearmand script does. gearmand's
# queue has no bound, so the manager's is sized to hold all N_BG at once:
# denials would measure the workers, not the store.
DURABLE_QF=$(( SIZED_QF > (N_BG + 3) / 4 ? SIZED_QF : (N_BG + 3) / 4 ))
GMD_ACCEPT= GMD_ACCEPT_RUNS= GMD_COMPLETE= GMD_HEAD= DURABLE_NOTE=
if [ "${SKIP_DURABLE:-0}" != 1 ]; then
  if [ "${SKIP_GEARMAN:-0}" != 1 ] && [ -f "$GEARMAN_RUN" ]; then
    say "gearmand durable (sqlite queue, background jobs)..."
    mkdir -p "$LOGS/gearman-durable"
    if MODE=durable WORKDIR=$LOGS/gearman-durable N_BG=$N_BG WINDOW=$INFLIGHT REPS=$REPS \
        timeout 900 bash "$GEARMAN_RUN" >"$LOGS/gearman-durable.out" 2>"$LOGS/gearman-durable.err"; then
      GMD_HEAD=$(sed -n 's/^# //p' "$LOGS/gearman-durable.out")
      GMD_ACCEPT=$(sed -n 's/^gearman durable accept: median \([0-9]*\) jobs.*/\1/p' "$LOGS/gearman-durable.out")
      GMD_ACCEPT_RUNS=$(sed -n 's/^gearman durable accept: .*\[\([0-9 ]*\)\].*/\1/p' "$LOGS/gearman-durable.out")
      GMD_COMPLETE=$(sed -n 's/^gearman durable complete: median \([0-9]*\) jobs.*/\1/p' "$LOGS/gearman-durable.out")
    fi
    [ -n "$GMD_ACCEPT" ] || fail "gearman durable baseline failed (see $LOGS/gearman-durable.err)"
  fi
  if "$ARGON" manager --help 2>/dev/null | grep -q -- --persist; then
    say "argon durable (--persist, detached submissions), $REPS runs..."
    for r in $(seq "$REPS"); do
      rm -rf "$LOGS/store.$r"
      if start_manager "$DURABLE_QF" --persist "$LOGS/store.$r" && start_workers 4 1; then
        bench --detach --tasks 200 --concurrency 100 --clients 4 >/dev/null
        bench --detach --tasks "$N_BG" --concurrency "$INFLIGHT" --clients 4 >>"$LOGS/durable.runs"
      fi
      stop_all
      rm -rf "$LOGS/store.$r"
    done
    median_json <"$LOGS/durable.runs" >"$LOGS/durable.json" 2>/dev/null || fail "argon durable runs failed"
  else
    DURABLE_NOTE="skipped: this argon has no --persist"
    say "argon durable: $DURABLE_NOTE"
  fi
fi

# ---- report ----------------------------------------------------------------
python3 - "$LOGS" "$GM_TPUT" "$GM_P50" "$GM_P99" "${RSS_IDLE:-}" "${RSS_HELD:-}" "$IDLE" \
  "$SIZED_QF" "$TASKS" "$INFLIGHT" "$REPS" "$N_LAT" "$SCALE" "$PAYLOAD" "$GM_HEAD" \
  "$GM1_TPUT" "$GM1_P50" "$GM1_P99" "$GMD_HEAD" "$GMD_ACCEPT" "$GMD_ACCEPT_RUNS" "$GMD_COMPLETE" \
  "$N_BG" "$DURABLE_NOTE" "${SKIP_DURABLE:-0}" "$(stat -f -c %T "$LOGS")" \
  "${SKIP_BEST:-0}" "$BEST_GM" "$BEST_AR_LAYOUT" "$BEST_AR" "$CLK_TCK" <<'PY' | tee "$LOGS/report.txt" ||
import json, os, re, sys
(logs, gm_tput, gm_p50, gm_p99, rss_idle, rss_held, idle, qf, tasks, inflight, reps, n_lat,
 scale, payload, gm_head, gm1_tput, gm1_p50, gm1_p99, gmd_head, gmd_accept, gmd_accept_runs,
 gmd_complete, n_bg, durable_note, skip_durable, store_fs,
 skip_best, best_gm, best_ar_layout, best_ar, clk_tck) = sys.argv[1:]
num = lambda s: float(s) if s else None
gm_tput, gm_p50, gm_p99 = num(gm_tput), num(gm_p50), num(gm_p99)
gm1_tput, gm1_p50, gm1_p99 = num(gm1_tput), num(gm1_p50), num(gm1_p99)
gmd_accept, gmd_complete = num(gmd_accept), num(gmd_complete)

def result(name):
    try:
        with open(os.path.join(logs, name + ".json")) as fh:
            return json.loads(fh.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
def f(v):
    return "-" if v is None else f"{v:,.0f}"
def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"
def row(what, gm, ar, r="", note=""):
    print(f"{what:<46} {gm:>9} {ar:>9} {r:>7}   {note}")
def runs(r):
    return "runs " + " ".join(f"{x:,}" for x in r["all_throughputs"]) if r else ""
def gm_out(name):
    try:
        with open(os.path.join(logs, name + ".out")) as fh:
            return fh.read()
    except OSError:
        return ""
def gm_cpu(name):
    """us of CPU per job of a baseline run: server, workers, client, total, runs"""
    m = re.search(r"^gearman cpu: (\{.*\})$", gm_out(name), re.M)
    if not m:
        return None
    c = json.loads(m.group(1))
    us = lambda t, jobs: t * 1e6 / c["clk_tck"] / jobs
    out = {k: us(v, c["jobs"]) for k, v in c["ticks"].items()}
    out["total"] = out["server"] + out["workers"] + out["client"]
    out["runs"] = [us(s + w + cl, j) for s, w, cl, j in c["runs"]]
    return out
def gm_runs(name):
    m = re.search(r"^gearman throughput: .*\[([0-9 ]*)\]", gm_out(name), re.M)
    return ("gearmand runs " + " ".join(f"{int(x):,}" for x in m.group(1).split())) if m else ""
def f1(v):
    return "-" if v is None else f"{v:.1f}"
def cpu_note(r):
    c = r and r.get("cpu_us_per_task")
    return f"; CPU {c['total']:.1f} us/task" if c else ""
def cpu_rows(what, gm, ar, ar_workers, gm_workers, aim=""):
    """CPU per task, all processes and by kind, gearmand against argon"""
    a = ar and ar.get("cpu_us_per_task")
    g = gm
    pick = lambda d, k: d[k] if d else None
    note = "user + system from /proc/PID/stat over the timed runs / tasks done"
    each = [" ".join(f1(x) for x in xs) + f" ({who})"
            for xs, who in (((ar or {}).get("cpu_runs_us", []), "argon"), ((g or {}).get("runs", []), "gearmand"))
            if xs]
    if each:
        note += "; runs " + ", ".join(each)
    row(what, f1(pick(g, "total")), f1(pick(a, "total")), ratio(pick(a, "total"), pick(g, "total")),
        (aim + "; " if aim else "") + note)
    row("    manager / gearmand, us", f1(pick(g, "server")), f1(pick(a, "manager")),
        ratio(pick(a, "manager"), pick(g, "server")))
    row("    worker processes, us", f1(pick(g, "workers")), f1(pick(a, "worker")),
        ratio(pick(a, "worker"), pick(g, "workers")), f"argon: {ar_workers}; gearmand: {gm_workers}")
    row("    client, us", f1(pick(g, "client")), f1(pick(a, "client")),
        ratio(pick(a, "client"), pick(g, "client")), "argon bench; load_client (libgearman)")

print()
print(f"# {gm_head or 'gearmand: not measured'}")
print(f"# argon: {tasks} echo tasks of {payload} B, {inflight} in flight over 4 connections, "
      f"median of {reps}; latency: {n_lat} tasks one at a time; all on 127.0.0.1")
row("", "gearmand", "argon", "ratio", "(argon / gearmand, same run)")
sized, default, lat = result("sized"), result("default"), result("latency")
t = sized and sized["throughput"]
row("throughput, jobs/s", f(gm_tput), f(t), ratio(t, gm_tput),
    f"1 worker x 4 slots, queue factor {qf}; {runs(sized)}")
cpu_rows("  CPU per task, all processes, us", gm_cpu("gearman"), sized,
         "1 process x 4 slots", "4 processes", "aim: <= 0.33x")
t = default and default["throughput"]
row("  same, default queue factor 3", "", f(t), ratio(t, gm_tput),
    f"{default['denied']:,} denials retried; {runs(default)}{cpu_note(default)}" if default else "")
if skip_best != "1":
    best = result("best")
    m = re.search(r"^gearman throughput: median ([0-9]+)", gm_out("gm-best"), re.M)
    gb = num(m and m.group(1))
    t = best and best["throughput"]
    layout = (f"1 worker x {best_ar} slots" if best_ar_layout == "capacity"
              else f"{best_ar} workers x 1 slot (one process)") if best_ar else "-"
    row("throughput, best configuration, jobs/s", f(gb), f(t), ratio(t, gb),
        f"aim: >= 3x; gearmand: {best_gm or '-'} worker processes; argon: {layout}, "
        f"queue factor sized; {runs(best)}; {gm_runs('gm-best')}")
    cpu_rows("  CPU per task at the best, us", gm_cpu("gm-best"), best, layout,
             f"{best_gm or '-'} processes")
    try:
        with open(os.path.join(logs, "search.txt")) as fh:
            found = [l.split() for l in fh if l.strip()]
    except OSError:
        found = []
    for name, label in (("gearmand", "gearmand, N worker processes"),
                        ("argon-capacity", "argon, 1 worker x N slots"),
                        ("argon-instances", "argon, N workers x 1 slot")):
        pts = [f"{n}: {float(v):,.0f}" for k, n, v in found if k == name]
        if pts:
            print(f"#   search, one run each, {label}: " + ", ".join(pts))
for key, gm, name in (("p50_us", gm_p50, "p50"), ("p99_us", gm_p99, "p99")):
    v = lat and lat[key]
    row(f"sequential round trip {name}, us", f(gm), f(v), ratio(v, gm), "lower is better")
one, one_lat = result("one-cpu"), result("one-cpu-latency")
if one or gm1_tput:
    t = one and one["throughput"]
    row("throughput, all on CPU 0, jobs/s", f(gm1_tput), f(t), ratio(t, gm1_tput),
        f"taskset -c 0 for every process of both; {runs(one)}")
    cpu_rows("  CPU per task, all on CPU 0, us", gm_cpu("gearman1"), one,
             "1 process x 4 slots", "4 processes")
    for key, gm, name in (("p50_us", gm1_p50, "p50"), ("p99_us", gm1_p99, "p99")):
        v = one_lat and one_lat[key]
        row(f"  sequential {name}, all on CPU 0, us", f(gm), f(v), ratio(v, gm), "lower is better")
ri, rh = num(rss_idle), num(rss_held)
row("manager RSS idle, MiB", "", "-" if ri is None else f"{ri / 1024:.1f}")
if rh is not None and ri is not None:
    row(f"manager RSS, {idle} idle clients, MiB", "", f"{rh / 1024:.1f}", "",
        f"+{(rh - ri) / 1024:.1f} MiB = {(rh - ri) / int(idle):.1f} KiB per connection")
for n in scale.split():
    r = result(f"workers-{n}")
    t = r and r["throughput"]
    row(f"throughput, {n} worker(s) x 1 slot, jobs/s", "", f(t), ratio(t, gm_tput),
        f"one `worker --instances {n}` process; {runs(r)}{cpu_note(r)}")
if skip_durable != "1":
    d = result("durable")
    print(f"# durable: {n_bg} jobs per run, {inflight} unacknowledged at most, median of {reps}; "
          f"gearmand: {gmd_head or 'not measured'}; argon: manager --persist (store on {store_fs}), "
          f"bench --detach, denials retried: {d['denied'] if d else '-'}")
    a = d and d["accept_rate"]
    gm_runs = "gearmand runs " + ", ".join(gmd_accept_runs.split()) if gmd_accept_runs else ""
    note = durable_note or f"aim: >= 10x; argon {runs(d)}" + (f"; {gm_runs}" if gm_runs else "")
    row("durable accept, jobs/s", f(gmd_accept), f(a), ratio(a, gmd_accept), note)
    c = d and d["complete_rate"]
    row("  durable complete, jobs/s", f(gmd_complete), f(c), ratio(c, gmd_complete),
        "" if durable_note else "until every result is read (argon), none held (gearmand)")
PY
  fail "the report failed"
[ "$FAILED" = 0 ] || say "compare: some measurements failed"
exit "$FAILED"
