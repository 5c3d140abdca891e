# Shared by scripts/bench-http.sh and scripts/bench-decompose.sh (sourced, not run).

# bench_specs WORK ROOT: copy tool-specs/ to WORK/specs with echo's rate limit
# raised, so the limiter still runs on every call but never refuses one (with
# the shipped 600/minute, every call after the first 100 would be a refusal),
# and point tollgate at that copy and ROOT's principals.yaml.
bench_specs() {
    local work=$1 root=$2
    mkdir -p "$work/specs"
    cp "$root"/tool-specs/*.yaml "$work/specs/"
    sed -i 's|^\(\s*per_principal:\).*|\1 { rate: 1000000/second, burst: 1000000 }|' "$work/specs/echo.yaml"
    grep -q 'rate: 1000000/second' "$work/specs/echo.yaml" || {
        echo "could not raise echo's rate limit in $work/specs/echo.yaml" >&2
        exit 1
    }
    export TOLLGATE_SPECS=$work/specs TOLLGATE_PRINCIPALS=$root/principals.yaml TOLLGATE_LOG=warn
    unset TOLLGATE_CONFIG TOLLGATE_PRINCIPAL TOLLGATE_BENCH_STAGE
}

# wait_up NAME URL PID LOG: wait up to 10 s until URL answers; stop the
# script, showing LOG, if the server at PID exits first or never answers
# (a taken port, for example).
wait_up() {
    local name=$1 url=$2 pid=$3 log=$4
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        curl -s -o /dev/null "$url" && return 0
        sleep 0.1
    done
    echo "$name did not come up at $url (port taken?); its log:" >&2
    cat "$log" >&2
    exit 1
}
