#!/usr/bin/env bash
# One run of the HTTP-side cost check: a manager with `--http` (its /metrics
# and dashboard fetched with curl every 100 ms throughout) or without it, one
# worker x 4 slots, and `argon bench` with 50,000 echo tasks; appends bench's
# JSON line to OUTFILE. Everything on 127.0.0.1; stops what it started.
#
#   bench/http_ab.sh BIN on|off OUTFILE
#
# Paired on and off runs, e.g. with a timer that alternates two commands:
#   farm-bench -n 5 --vs "bench/http_ab.sh BIN off /tmp/off" -- bench/http_ab.sh BIN on /tmp/on
set -u
[ $# = 3 ] || { echo "usage: $0 BIN on|off OUTFILE" >&2; exit 2; }
BIN=$1; MODE=$2; OUT=$3
D=$(mktemp -d); KEY=$D/key; $BIN keygen $KEY >/dev/null
EXTRA=(); [ "$MODE" = on ] && EXTRA=(--http 127.0.0.1:0)
$BIN manager --host 127.0.0.1 --port 0 --key $KEY --queue-factor 250 -q "${EXTRA[@]}" >$D/m.out 2>$D/m.err & M=$!
for i in $(seq 100); do ADDR=$(sed -n 's/^argon manager listening on //p' $D/m.out); [ -n "$ADDR" ] && break; sleep 0.05; done
HTTP=
if [ "$MODE" = on ]; then for i in $(seq 100); do HTTP=$(sed -n 's/^argon manager http on //p' $D/m.out); [ -n "$HTTP" ] && break; sleep 0.05; done; fi
$BIN worker --mgr $ADDR --key $KEY --capacity 4 -q 2>$D/w.err & W=$!
for i in $(seq 100); do $BIN status --mgr $ADDR --key $KEY --json 2>/dev/null | grep -q '"workers":1' && break; sleep 0.05; done
S=
if [ -n "$HTTP" ]; then ( while true; do curl -s http://$HTTP/metrics >/dev/null; curl -s http://$HTTP/ >/dev/null; sleep 0.1; done ) & S=$!; fi
timeout 120 $BIN bench --mgr $ADDR --key $KEY --tasks 50000 --concurrency 1000 --clients 4 --json 2>/dev/null | tail -1 >> $OUT
[ -n "$S" ] && kill $S
kill $W $M; wait $W $M 2>/dev/null; rm -rf $D
