#!/usr/bin/env bash
# The yardstick the data-plane targets are stated against: "a bare net/http +
# encoding/json handler", served by its own process and measured by
# envplane-load's REST client, as scripts/bench_process.sh measures envplane
# serve. Read envplane's figures against this one, from the same run: the
# same kind of machine measures up to 2x apart from one day to the next.
# Usage: scripts/bench_baseline.sh [envplane-load flags]
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/envplane-load ./cmd/envplane-load
port=${BENCH_BASELINE_PORT:-18092}
addr=127.0.0.1:$port
bin/envplane-load --serve-baseline "$addr" >/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
bin/envplane-load --baseline-url "http://$addr" "$@"
