#!/usr/bin/env bash
# Governed vs bare MCP calls: throughput and latency, Streamable HTTP and stdio.
#
#   scripts/bench-http.sh                 # ~5 min on 2 cores, plus the release build
#   RUNS=3 SECS=2 scripts/bench-http.sh   # a quick look
#
# Builds release, then starts on loopback:
#   bare      target/release/examples/bare_echo: rmcp + axum, one echo tool, nothing else
#   governed  tollgate serve --http, API key auth (the real thing)
#   noauth    tollgate serve --http --insecure-no-auth: governed minus authentication
# and runs examples/loadgen against each at concurrency 1, 8 and 32, RUNS
# times, interleaved (rep → concurrency → target) so machine noise hits all
# alike (closed loop: capacity). Then the same three at one fixed rate, RATE
# calls/s, open loop (transport `http-open`: latency at equal work). Then
# stdio: one client, concurrency 1, tollgate vs bare_echo --stdio.
# Prints medians, governed/bare ratios and p99 added latency; writes
# docs/bench/results.csv and docs/bench/throughput.svg (OUT=DIR to change). See BENCHMARKS.md.
#
# tollgate serves the example tool-specs/ and principals.yaml, with one change:
# echo's rate limit (600/minute) is raised to 1000000/second in a temporary copy,
# so the limiter still runs on every call but never refuses.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/bench-lib.sh
RUNS=${RUNS:-5}
SECS=${SECS:-4}
WARMUP=${WARMUP:-0.5s}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
# Open-loop phase: every server gets the same RATE calls/s, at most 32 in
# flight, so the added latency is read at equal work (0: skip the phase).
RATE=${RATE:-1500}
SESSIONS=${SESSIONS:-4}
PORT_BARE=${PORT_BARE:-18090}
PORT_GOV=${PORT_GOV:-18080}
PORT_NOAUTH=${PORT_NOAUTH:-18081}
WORK=$(mktemp -d -t tollgate-bench.XXXXXX)
OUT=${OUT:-docs/bench}
PLOT=${PLOT:-$OUT/throughput.svg}

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== build (release)"
cargo build --release --locked --quiet --bin tollgate --example bare_echo --example loadgen
TOLLGATE=$ROOT/target/release/tollgate
BARE=$ROOT/target/release/examples/bare_echo
LOADGEN=$ROOT/target/release/examples/loadgen

echo "== setup in $WORK (build took ${SECONDS}s)"
mkdir -p "$OUT"
bench_specs "$WORK" "$ROOT"
TOKEN=$(TOLLGATE_DB=$WORK/governed.db "$TOLLGATE" keys create --principal alice --note bench 2>/dev/null)

"$BARE" --addr "127.0.0.1:$PORT_BARE" 2>"$WORK/bare.log" &
PIDS+=($!); PID_BARE=$!
TOLLGATE_DB=$WORK/governed.db "$TOLLGATE" serve --http "127.0.0.1:$PORT_GOV" 2>"$WORK/governed.log" &
PIDS+=($!); PID_GOV=$!
TOLLGATE_DB=$WORK/noauth.db "$TOLLGATE" serve --http "127.0.0.1:$PORT_NOAUTH" \
    --insecure-no-auth --principal alice 2>"$WORK/noauth.log" &
PIDS+=($!); PID_NOAUTH=$!
wait_up bare "http://127.0.0.1:$PORT_BARE/mcp" "$PID_BARE" "$WORK/bare.log"
wait_up governed "http://127.0.0.1:$PORT_GOV/healthz" "$PID_GOV" "$WORK/governed.log"
wait_up noauth "http://127.0.0.1:$PORT_NOAUTH/healthz" "$PID_NOAUTH" "$WORK/noauth.log"

CSV=$OUT/results.csv
echo "rep,transport,target,concurrency,calls_per_s,p50_ms,p99_ms,p999_ms,server_cpu_us_per_call,client_cpu_us_per_call,transport_errors,tool_errors" >"$CSV"

# run REP TRANSPORT TARGET CONCURRENCY LOADGEN-ARGS... : one loadgen run → one CSV row
run() {
    local rep=$1 transport=$2 target=$3 c=$4
    shift 4
    local sessions=$((c < SESSIONS ? c : SESSIONS))
    "$LOADGEN" --json --tool echo --args '{"message":"hi"}' --concurrency "$c" \
        --sessions "$sessions" --duration "${SECS}s" --warmup "$WARMUP" --label "$target" "$@" \
        | python3 -c '
import json, sys
r = json.load(sys.stdin)
f = lambda k: "" if r.get(k) is None else ("%.3f" % r[k])
print(",".join([sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], "%.1f" % r["calls_per_s"],
    f("p50_ms"), f("p99_ms"), f("p999_ms"), f("server_cpu_us_per_call"),
    f("client_cpu_us_per_call"), str(r["transport_errors"]), str(r["tool_errors"])]))
if r["first_error"]:
    print("   ", sys.argv[3], "c=" + sys.argv[4], r["first_error"], file=sys.stderr)
with open(sys.argv[5], "a") as acks:
    print(sys.argv[2] + "-" + sys.argv[3], r["acknowledged"], file=acks)
' "$rep" "$transport" "$target" "$c" "$WORK/acks" | tee -a "$CSV"
}

echo "== Streamable HTTP: $RUNS runs × concurrency {$CONCURRENCY} × {bare, governed, noauth}, ${SECS}s each"
for rep in $(seq "$RUNS"); do
    for c in $CONCURRENCY; do
        run "$rep" http bare "$c" --url "http://127.0.0.1:$PORT_BARE/mcp" --server-pid "$PID_BARE"
        run "$rep" http governed "$c" --url "http://127.0.0.1:$PORT_GOV/mcp" --token "$TOKEN" --server-pid "$PID_GOV"
        run "$rep" http noauth "$c" --url "http://127.0.0.1:$PORT_NOAUTH/mcp" --server-pid "$PID_NOAUTH"
    done
done
if [[ "$RATE" != 0 ]]; then
    echo "== Streamable HTTP, open loop: $RUNS runs × $RATE calls/s, at most 32 in flight, × {bare, governed, noauth}"
    for rep in $(seq "$RUNS"); do
        run "$rep" http-open bare 32 --rate "$RATE" --url "http://127.0.0.1:$PORT_BARE/mcp" --server-pid "$PID_BARE"
        run "$rep" http-open governed 32 --rate "$RATE" --url "http://127.0.0.1:$PORT_GOV/mcp" --token "$TOKEN" --server-pid "$PID_GOV"
        run "$rep" http-open noauth 32 --rate "$RATE" --url "http://127.0.0.1:$PORT_NOAUTH/mcp" --server-pid "$PID_NOAUTH"
    done
fi
cleanup
PIDS=()

echo "== stdio: $RUNS runs × one client, concurrency 1, ${SECS}s each"
for rep in $(seq "$RUNS"); do
    run "$rep" stdio bare 1 -- "$BARE" --stdio
    run "$rep" stdio governed 1 -- env TOLLGATE_DB="$WORK/stdio.db" "$TOLLGATE" serve --principal alice
done

echo "== receipts of the governed servers (${SECONDS}s so far)"
# Every call a client saw acknowledged must have its receipt committed.
# (A server's keys: its closed- and open-loop runs, comma-separated.)
for db in governed:http-governed,http-open-governed noauth:http-noauth,http-open-noauth stdio:stdio-governed; do
    file=${db%%:*} key=${db#*:}
    python3 - "$WORK/$file.db" "$WORK/acks" "$key" <<'PY'
import sqlite3, sys
db, acks, key = sys.argv[1:4]
keys = key.split(",")
acked = sum(int(n) for k, n in (l.split() for l in open(acks)) if k in keys)
n = sqlite3.connect(db).execute(
    "SELECT count(*) FROM receipts WHERE tool = 'echo' AND decision = 'allowed' AND outcome = 'ok'").fetchone()[0]
print(f"{key}: {acked} calls acknowledged, {n} receipts committed" + ("" if n >= acked else "  MISSING RECEIPTS"))
sys.exit(0 if n >= acked else 1)
PY
done
TOLLGATE_DB=$WORK/governed.db "$TOLLGATE" receipts verify

echo
python3 scripts/bench-summary.py "$CSV"
mkdir -p "$(dirname "$PLOT")"
python3 scripts/bench-plot.py "$CSV" "$PLOT"
echo "CSV: $CSV   plot: $PLOT"
