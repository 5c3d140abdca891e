#!/usr/bin/env bash
# The long form of the crash-under-load harness (tests/crash.rs): kill -9 the
# HTTP server 100 times under concurrent load, in a release build.
#
#   scripts/crash-long.sh                               # 100 kills, ~40 s plus the release build
#   KILLS=300 scripts/crash-long.sh                     # more
#   TOLLGATE_CRASH_SEED=1234 scripts/crash-long.sh      # replay the kill moments of a run
#
# CI runs the short form (20 kills, debug) as part of `cargo test`. Every
# restart must have recovered the killed server's intents within 2 s of
# /readyz (same-host writer locks; no 30 s heartbeat wait), so the run is
# about 0.4 s per kill. Prints the per-kill lines and the summary; the full
# log is kept in $LOG. See BENCHMARKS.md, "Crash under load".
set -euo pipefail

cd "$(dirname "$0")/.."
KILLS=${KILLS:-100}
LOG=${LOG:-$(mktemp -t tollgate-crash.XXXXXX.log)}

echo "building (release) ..." >&2
cargo test --release --test crash --no-run

echo "running $KILLS kills; log: $LOG" >&2
status=0
TOLLGATE_CRASH_KILLS=$KILLS cargo test --release --test crash -- --nocapture 2>&1 | tee "$LOG" || status=$?

echo
echo "summary:"
grep -E '^(crash harness|final restart|effects|intents recovered)' "$LOG" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status); see $LOG" >&2
fi
exit "$status"
