#!/usr/bin/env bash
# The [proof] speed targets, in process: writer, verify, list, startup, limiter.
#
#   scripts/bench-proof.sh                 # release binary + every section, RUNS=5
#   scripts/bench-proof.sh writer verify   # some sections
#   RUNS=3 scripts/bench-proof.sh writer   # fewer rounds
#   PROFILE=writer scripts/bench-proof.sh  # also: perf record of that section
#
# The `list` section builds a 10,000,000-receipt database once (a few minutes,
# ~4 GB) and keeps it in target/proof-bench/ for later runs; delete that
# directory to rebuild. Output: Markdown tables on stdout, progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

# `list` and `startup` also time the real binary.
cargo build --release --bin tollgate
cargo bench --bench proof --no-run
cargo bench --bench proof -- "$@"

if [[ -n "${PROFILE:-}" ]]; then
  bin=$(ls -t target/release/deps/proof-* | grep -v '\.d$' | head -1)
  # Software clock: this VM has no hardware counters.
  perf record -e cpu-clock -F 2000 -g -o "target/proof-bench/perf-$PROFILE.data" \
    -- "$bin" --bench "$PROFILE" >/dev/null
  perf report -i "target/proof-bench/perf-$PROFILE.data" --no-children --percent-limit 1.5 \
    --stdio 2>/dev/null | grep -v '^$' | head -80
fi
