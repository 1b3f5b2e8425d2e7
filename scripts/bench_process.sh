#!/usr/bin/env bash
# The load tool against `envplane serve` running as its own process, as a
# deployment runs it: two processes on one machine, like any load generator
# next to the server it measures. (The load tool's default, a server in its
# own process, shares one Go runtime with the clients: it profiles well but
# flatters throughput.) Usage: scripts/bench_process.sh [envplane-load flags]
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/envplane ./cmd/envplane
go build -o bin/envplane-load ./cmd/envplane-load
dir=$(mktemp -d)
addr=127.0.0.1:${BENCH_PORT:-18090}
bin/envplane serve --listen "$addr" --data-dir "$dir" --log-level warn &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  bin/envplane healthcheck --url "http://$addr/healthz" 2>/dev/null && break
  sleep 0.1
done
echo "envplane serve (pid $pid) on $addr, data in $dir"
bin/envplane-load --url "http://$addr" --token "$(cat "$dir/admin.token")" "$@"
