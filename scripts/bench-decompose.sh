#!/usr/bin/env bash
# Where does a governed call's cost go? Cut one part out at a time, in the same run.
#
#   scripts/bench-decompose.sh                 # RUNS=5 × 4 s per arm at 32 concurrent calls (~2 min after the builds)
#   OUT=/tmp/d scripts/bench-decompose.sh      # the CSV goes to OUT/decompose.csv (default docs/bench)
#   RUNS=3 SECS=2 CONCURRENCY="1 32" scripts/bench-decompose.sh
#
# Four servers on loopback, each driven by examples/loadgen in turn
# (rep → concurrency → arm, so machine noise hits all arms alike):
#   bare           target/release/examples/bare_echo (the ceiling, as in bench-http.sh)
#   null-pipeline  tollgate, API key checked by the HTTP guard, then echo answered at once:
#                  the cost of tollgate's HTTP front (guard, JSON-RPC check, session owners)
#   no-storage     tollgate, the whole pipeline and the hand-off to the writer thread,
#                  but the writer answers without SQLite: the cost of the stages
#   governed       tollgate as shipped (this build, no stage cut): the receipt commit is the rest
#
# The three tollgate arms are one build with the `bench-decompose` feature
# (src/bench_stage.rs), made in its own target directory (target/decompose;
# the first build takes as long as a clean release build), so
# target/release/tollgate is never a binary that can skip receipts.
# Prints medians of calls/s and server CPU per call, and each arm's
# throughput as a share of bare (median of the per-round ratios).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/bench-lib.sh
RUNS=${RUNS:-5}
SECS=${SECS:-4}
WARMUP=${WARMUP:-0.5s}
CONCURRENCY=${CONCURRENCY:-32}
SESSIONS=${SESSIONS:-4}
PORT=${PORT:-18180}
OUT=${OUT:-docs/bench}
WORK=$(mktemp -d -t tollgate-decompose.XXXXXX)

PIDS=()
cleanup() {
    local status=$?
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # Keep the servers' logs and databases when something went wrong.
    if [[ $status == 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK (logs and databases)" >&2; fi
}
trap cleanup EXIT

echo "== build (release; the feature build goes to target/decompose)"
cargo build --release --locked --quiet --example bare_echo --example loadgen
CARGO_TARGET_DIR=$ROOT/target/decompose \
    cargo build --release --locked --quiet --features bench-decompose --bin tollgate
TOLLGATE=$ROOT/target/decompose/release/tollgate
BARE=$ROOT/target/release/examples/bare_echo
LOADGEN=$ROOT/target/release/examples/loadgen

echo "== setup in $WORK (builds took ${SECONDS}s)"
bench_specs "$WORK" "$ROOT"

ARMS=(bare null-pipeline no-storage governed)
declare -A PID URL TOKEN
"$BARE" --addr "127.0.0.1:$PORT" 2>"$WORK/bare.log" &
PIDS+=($!); PID[bare]=$! URL[bare]=http://127.0.0.1:$PORT/mcp
port=$PORT
for arm in null-pipeline no-storage governed; do
    port=$((port + 1))
    db=$WORK/$arm.db
    TOKEN[$arm]=$(TOLLGATE_DB=$db "$TOLLGATE" keys create --principal alice --note bench 2>"$WORK/$arm-key.log") || {
        echo "could not create an API key for $arm:" >&2
        cat "$WORK/$arm-key.log" >&2
        exit 1
    }
    stage=$arm
    [[ $arm == governed ]] && stage=
    TOLLGATE_BENCH_STAGE=$stage TOLLGATE_DB=$db "$TOLLGATE" serve --http "127.0.0.1:$port" 2>"$WORK/$arm.log" &
    PIDS+=($!); PID[$arm]=$! URL[$arm]=http://127.0.0.1:$port/mcp
done
for arm in "${ARMS[@]}"; do
    probe=${URL[$arm]%/mcp}/healthz
    [[ $arm == bare ]] && probe=${URL[$arm]}
    wait_up "$arm" "$probe" "${PID[$arm]}" "$WORK/$arm.log"
done

mkdir -p "$OUT"
CSV=$OUT/decompose.csv
echo "rep,arm,concurrency,calls_per_s,server_cpu_us_per_call,p99_ms,errors,acknowledged" >"$CSV"
for rep in $(seq "$RUNS"); do
    for c in $CONCURRENCY; do
        for arm in "${ARMS[@]}"; do
            auth=()
            [[ $arm != bare ]] && auth=(--token "${TOKEN[$arm]}")
            # (the ${a[@]+...} form: an empty array under set -u on bash < 4.4)
            "$LOADGEN" --json --tool echo --args '{"message":"hi"}' --concurrency "$c" \
                --sessions $((c < SESSIONS ? c : SESSIONS)) --duration "${SECS}s" --warmup "$WARMUP" \
                --url "${URL[$arm]}" --server-pid "${PID[$arm]}" ${auth[@]+"${auth[@]}"} |
                python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%s,%s,%s,%.1f,%.1f,%.3f,%d,%d" % (sys.argv[1], sys.argv[2], sys.argv[3], r["calls_per_s"],
    r["server_cpu_us_per_call"] or 0, r["p99_ms"] or 0, r["transport_errors"] + r["tool_errors"],
    r["acknowledged"]))
' "$rep" "$arm" "$c" | tee -a "$CSV"
        done
    done
done

echo
python3 - "$CSV" "$WORK" <<'PY'
import csv, sqlite3, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
errors = sum(int(r["errors"]) for r in rows)
# Each arm must have measured what it claims: the cut arms record nothing,
# the governed one records every call it acknowledged.
for arm in ["null-pipeline", "no-storage", "governed"]:
    acked = sum(int(r["acknowledged"]) for r in rows if r["arm"] == arm)
    db = sqlite3.connect(f"file:{sys.argv[2]}/{arm}.db?mode=ro", uri=True)
    n = db.execute("SELECT count(*) FROM receipts WHERE tool = 'echo'").fetchone()[0]
    ok = n >= acked if arm == "governed" else n == 0
    print(f"{arm}: {acked} calls acknowledged, {n} echo receipts" + ("" if ok else
          "  UNEXPECTED: this arm did not measure what it claims; see its log in the kept work directory"))
    errors += 0 if ok else 1
for c in sorted({r["concurrency"] for r in rows}, key=int):
    at = [r for r in rows if r["concurrency"] == c]
    bare = {r["rep"]: float(r["calls_per_s"]) for r in at if r["arm"] == "bare"}
    print(f"concurrency {c}")
    print("| arm | calls/s | server CPU µs/call | p99 ms | share of bare |")
    print("|---|---|---|---|---|")
    for arm in ["bare", "null-pipeline", "no-storage", "governed"]:
        mine = [r for r in at if r["arm"] == arm]
        med = lambda k: st.median(float(r[k]) for r in mine)
        share = st.median(float(r["calls_per_s"]) / max(bare[r["rep"]], 1e-9) for r in mine)
        print(f"| {arm} | {med('calls_per_s'):.0f} | {med('server_cpu_us_per_call'):.0f} | {med('p99_ms'):.2f} | {share:.2f} |")
print(f"errors: {errors}" + ("  (a run with errors is not valid)" if errors else ""))
sys.exit(1 if errors else 0)
PY
echo "CSV: $CSV"
