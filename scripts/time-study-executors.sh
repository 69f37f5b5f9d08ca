#!/usr/bin/env bash
# study-smoke's wall time with each executor, side by side on this machine (docs/study.md, "Measured here"):
# one cell after another with 1 thread per cell (the preset) and with every CPU per cell, Ray started by kd,
# and a Ray cluster of a head and a second node with 1 CPU each. ROUNDS rounds (default 2); nothing else
# should run meanwhile. Needs Ray (make setup RAY=1). Usage: scripts/time-study-executors.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
kd=(.venv/bin/python -m cli study)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lscpu | grep "Model name"
echo "CPUs: $(nproc)"
sed 's/^cpus: 1 .*/cpus: null/' kd/studies/study-smoke.yaml > "$work/study-smoke-allcpus.yaml"
timed() {
    local name=$1 started
    shift
    started=$(date +%s.%N)
    "$@" --run-dir "$work/$name" > "$work/$name.log" 2>&1 || { tail -20 "$work/$name.log"; exit 1; }
    printf '%-34s %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $started" | bc)"
    rm -rf "${work:?}/$name"
}
for round in $(seq "$rounds"); do
    echo "round $round"
    timed "local, cpus 1" "${kd[@]}" study-smoke
    timed "local, every CPU per cell" "${kd[@]}" "$work/study-smoke-allcpus.yaml"
    timed "ray started by kd" "${kd[@]}" study-smoke --executor ray
    # a cluster of two 1-CPU nodes on this machine, on a token of its own, stopped after
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
    RAY_AUTH_TOKEN=$(.venv/bin/python -c "import secrets; print(secrets.token_hex(32))")
    port=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    temp=$(mktemp -d /tmp/rayXXXX)
    node=(--node-ip-address 127.0.0.1 --num-cpus 1 --num-gpus 0 --object-store-memory 104857600
          --disable-usage-stats --block)
    setsid .venv/bin/ray start --head --port "$port" --include-dashboard false --temp-dir "$temp" "${node[@]}" \
        > "$work/head.log" 2>&1 &
    head=$!
    sleep 10
    setsid .venv/bin/ray start --address "127.0.0.1:$port" "${node[@]}" > "$work/node.log" 2>&1 &
    second=$!
    sleep 10
    timed "ray cluster, 2 nodes of 1 CPU" "${kd[@]}" study-smoke --executor ray --address "127.0.0.1:$port"
    kill -TERM -- "-$second" "-$head"
    wait "$second" "$head" || true
    rm -rf "$temp"
    unset RAY_AUTH_MODE RAY_AUTH_TOKEN
done
