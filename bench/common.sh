# Shared by bench/compare.sh and bench/sweep.sh (sourced, not run): messages,
# a logs folder, processes started here and stopped by PID on exit, the
# release build and key, and starting a manager. The sourcing script sets
# ROOT (the repository) and NAME (its name in messages) first.

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/argon-$NAME.XXXXXX")
FAILED=0

say() { printf '%s\n' "$*" >&2; }
fail() { say "$NAME: $*"; FAILED=1; }

# ---- processes: started here, stopped by PID -------------------------------
LIVE=()
stop_pid() {   # TERM, up to 10 s to leave, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() { local keep=() p; for p in "${LIVE[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; LIVE=("${keep[@]}"); }
cleanup() {
  local p
  for p in "${LIVE[@]}"; do stop_pid "$p"; done
  if [ "${KEEP:-0}" = 1 ] || [ "$FAILED" != 0 ]; then say "logs kept in $LOGS"; else rm -rf "$LOGS"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# build_argon: builds the release binary and sets ARGON, and KEY (a new key
# file in the logs folder); exits on failure.
build_argon() {
  say "building argon (release)..."
  (cd "$ROOT" && timeout 3600 cargo build --release --quiet --bin argon) || { fail "cargo build failed"; exit 1; }
  ARGON=${CARGO_TARGET_DIR:-$ROOT/target}/release/argon
  [ -x "$ARGON" ] || { fail "no binary at $ARGON"; exit 1; }
  KEY=$LOGS/key
  "$ARGON" keygen "$KEY" >/dev/null || { fail "keygen failed"; exit 1; }
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# ---- CPU time from /proc ----------------------------------------------------
CLK_TCK=$(getconf CLK_TCK 2>/dev/null)
[[ ${CLK_TCK:-} =~ ^[1-9][0-9]*$ ]] || { say "$NAME: getconf CLK_TCK failed"; exit 1; }
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
# child_ticks: the same for the children this shell has waited for (fields 16
# and 17 of its own stat): in a fresh subshell, the CPU of what it ran.
child_ticks() {
  local line f
  read -r line 2>/dev/null <"/proc/$BASHPID/stat" || return 1
  read -r -a f <<<"${line##*) }"
  echo $(( f[13] + f[14] ))
}

MGR_PID= MGR_ADDR=
ON_CPU=   # a command prefix for every process started, e.g. "taskset -c 0"
# start_manager QUEUE_FACTOR [MANAGER ARGS...]: sets MGR_PID and MGR_ADDR once it listens (10 s bound)
start_manager() {
  local out=$LOGS/manager.$RANDOM i qf=$1
  shift
  $ON_CPU "$ARGON" manager --host 127.0.0.1 --port 0 --key "$KEY" --queue-factor "$qf" -q "$@" >"$out" 2>"$out.err" &
  MGR_PID=$!; LIVE+=("$MGR_PID"); MGR_ADDR=
  for i in $(seq 100); do
    MGR_ADDR=$(sed -n 's/^argon manager listening on //p' "$out")
    [ -n "$MGR_ADDR" ] && return 0
    kill -0 "$MGR_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "manager did not start (see $out.err)"; return 1
}
# workers_registered: the manager's worker count (empty on failure)
workers_registered() {
  timeout 10 "$ARGON" status --mgr "$MGR_ADDR" --key "$KEY" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"])' 2>/dev/null
}
