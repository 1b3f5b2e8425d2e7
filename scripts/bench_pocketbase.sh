#!/usr/bin/env bash
# The data plane's targets are "3x what PocketBase v0.36 reaches on these
# machines". This measures both here, the same way: PocketBase (built from
# the Go module proxy into bin/, never committed) and `envplane serve`, each
# as its own process with an empty data directory, an object of three fields
# (text, number, select) seeded with 100 records, then driven by hey (the
# load generator, installed into bin/) with 16 clients over REST: get one
# record, list a page of 20, create records. PocketBase runs as a superuser,
# envplane with its admin token, both at their default log levels (each logs
# every request). hey asks for gzip: envplane compresses answers over 1 KiB
# (a page of 20), PocketBase never compresses, so a page costs envplane a
# compression and hey (on the same two cores) a decompression that
# PocketBase's pages do not; "list-plain" is the same list with hey asking
# for no compression, the two servers' work alone.
#
# Both servers run side by side (the idle one costs nothing) and each
# scenario alternates between them in BENCH_ROUNDS slices of BENCH_SLICE:
# these machines drift by tens of percent within a minute, and run one after
# the other the two servers met different machines (the same script read
# get at 3.23x, then 2.50x with PocketBase alone 45% faster). With four
# slices the same code read 2.88x to 3.31x on one afternoon; ten narrow it.
# Usage: scripts/bench_pocketbase.sh   (BENCH_SLICE=1s, BENCH_ROUNDS=10, BENCH_CONCURRENCY=16)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
slice=${BENCH_SLICE:-1s}
rounds=${BENCH_ROUNDS:-10}
concurrency=${BENCH_CONCURRENCY:-16}
pocketbase_version=v0.36.8
hey_version=v0.1.5

mkdir -p bin
GOBIN=$root/bin go install "github.com/rakyll/hey@$hey_version"
pocketbase=bin/pocketbase-$pocketbase_version
if [ ! -x "$pocketbase" ]; then
  # A module of its own, outside the workspace: main only starts PocketBase.
  src=$root/bin/pocketbase-src
  mkdir -p "$src"
  cat >"$src/main.go" <<'EOF'
package main

import (
	"log"

	"github.com/pocketbase/pocketbase"
)

func main() {
	if err := pocketbase.New().Start(); err != nil {
		log.Fatal(err)
	}
}
EOF
  (
    cd "$src"
    export GOWORK=off
    [ -f go.mod ] || go mod init pocketbase-bench >/dev/null 2>&1
    go get "github.com/pocketbase/pocketbase@$pocketbase_version" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    go build -o "$root/$pocketbase" .
  )
fi
go build -o bin/envplane ./cmd/envplane

pids=()
dirs=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "${dirs[@]}"
  exit "$status"
}
trap cleanup EXIT

# free PORT: nothing may answer there yet (a server left behind would be
# measured instead).
free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "bench_pocketbase: something already listens on 127.0.0.1:$1" >&2
    return 1
  fi
}

wait_for() { # url
  for _ in $(seq 100); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "bench_pocketbase: $1 does not answer" >&2
  return 1
}

# hey_slice NAME AUTH URL [hey flags]: one slice of a scenario, printed as
# "RESPONSES SECONDS"; every answer must be 200.
hey_slice() {
  local name=$1 auth=$2 url=$3
  shift 3
  local out
  out=$(bin/hey -z "$slice" -c "$concurrency" -T application/json -H "Authorization: $auth" "$@" "$url")
  # The status lines: "  [200]	30782 responses".
  local codes
  codes=$(echo "$out" | sed -n '/Status code distribution/,$p' | awk '/\[[0-9]+\]/ {printf "%s %s ", $1, $2}')
  if [ -z "$codes" ] || [ "${codes%% *}" != "[200]" ] || [ "$(echo "$codes" | wc -w)" -ne 2 ]; then
    echo "bench_pocketbase: $name: answers $codes" >&2
    return 1
  fi
  echo "$(echo "$codes" | awk '{print $2}') $(echo "$out" | awk '/Total:/ {print $2; exit}')"
}

record='{"name":"item-x","n":7,"tag":"red"}'

# seed URL AUTH: creates 100 records and prints the last one's id.
seed() {
  local id
  for i in $(seq 100); do
    id=$(curl -fsS "$1" -H "Authorization: $2" -H 'Content-Type: application/json' \
      -d "{\"name\":\"item-$i\",\"n\":$i,\"tag\":\"green\"}" | jq -r .id)
  done
  echo "$id"
}

# PocketBase.
pbdir=$(mktemp -d)
dirs+=("$pbdir")
pb=http://127.0.0.1:${BENCH_POCKETBASE_PORT:-18190}
free "${pb##*:}"
"$pocketbase" superuser upsert --dir "$pbdir" bench@example.com bench-password >/dev/null
"$pocketbase" serve --dir "$pbdir" --http "${pb#http://}" >/dev/null 2>&1 &
pids+=($!)
wait_for "$pb/api/health"
pbtoken=$(curl -fsS "$pb/api/collections/_superusers/auth-with-password" -H 'Content-Type: application/json' \
  -d '{"identity":"bench@example.com","password":"bench-password"}' | jq -r .token)
curl -fsS -o /dev/null "$pb/api/collections" -H "Authorization: $pbtoken" -H 'Content-Type: application/json' \
  -d '{"name":"items","type":"base","fields":[{"name":"name","type":"text","required":true,"max":200},{"name":"n","type":"number"},{"name":"tag","type":"select","values":["red","green","blue"],"maxSelect":1}]}'
pbid=$(seed "$pb/api/collections/items/records" "$pbtoken")

# envplane.
epdir=$(mktemp -d)
dirs+=("$epdir")
ep=http://127.0.0.1:${BENCH_PORT:-18191}
free "${ep##*:}"
bin/envplane serve --listen "${ep#http://}" --data-dir "$epdir" 2>/dev/null &
pids+=($!)
wait_for "$ep/healthz"
eptoken="Bearer $(cat "$epdir/admin.token")"
org=$(curl -fsS "$ep/api/v1/cloud/organizations" -H "Authorization: $eptoken" -d '{"slug":"bench"}' | jq -r .id)
env=$(curl -fsS "$ep/api/v1/cloud/environments" -H "Authorization: $eptoken" \
  -d "{\"organizationId\":\"$org\",\"slug\":\"dev\",\"driver\":\"sqlite\"}" | jq -r .id)
curl -fsS -o /dev/null -X PUT "$ep/api/v1/environments/$env/meta/objects/items" -H "Authorization: $eptoken" \
  -d '{"name":"items","fields":[{"name":"name","type":"text","required":true,"maxLength":200},{"name":"n","type":"integer"},{"name":"tag","type":"select","options":["red","green","blue"]}]}'
epid=$(seed "$ep/api/v1/environments/$env/data/items" "$eptoken")

# scenario NAME: alternates PocketBase and envplane slices of scenario NAME
# and sets pb_NAME and ep_NAME (a "-" in NAME becomes "_") to their
# requests/s over all the slices.
scenario() {
  local pb_args ep_args
  case $1 in
  get)
    pb_args=("$pb/api/collections/items/records/$pbid")
    ep_args=("$ep/api/v1/environments/$env/data/items/$epid") ;;
  list)
    pb_args=("$pb/api/collections/items/records?perPage=20")
    ep_args=("$ep/api/v1/environments/$env/data/items?pageSize=20") ;;
  list-plain)
    pb_args=(-disable-compression "$pb/api/collections/items/records?perPage=20")
    ep_args=(-disable-compression "$ep/api/v1/environments/$env/data/items?pageSize=20") ;;
  create)
    pb_args=("$pb/api/collections/items/records" -m POST -d "$record")
    ep_args=("$ep/api/v1/environments/$env/data/items" -m POST -d "$record") ;;
  esac
  local pb_slices="" ep_slices=""
  for _ in $(seq "$rounds"); do
    pb_slices+="$(hey_slice "PocketBase $1" "$pbtoken" "${pb_args[@]}")"$'\n'
    ep_slices+="$(hey_slice "envplane $1" "$eptoken" "${ep_args[@]}")"$'\n'
  done
  printf -v "pb_${1//-/_}" '%s' "$(echo -n "$pb_slices" | awk '{n += $1; t += $2} END {printf "%.0f", n / t}')"
  printf -v "ep_${1//-/_}" '%s' "$(echo -n "$ep_slices" | awk '{n += $1; t += $2} END {printf "%.0f", n / t}')"
}
for s in get list list-plain create; do
  scenario "$s"
done

echo "hey -c $concurrency, requests/s over $rounds alternating slices of $slice each; PocketBase $pocketbase_version and envplane side by side on this machine"
printf '%-10s %12s %10s %8s\n' scenario pocketbase envplane ratio
for s in get list list-plain create; do
  p="pb_${s//-/_}" e="ep_${s//-/_}"
  printf '%-10s %12s %10s %7sx\n' "$s" "${!p}" "${!e}" "$(awk -v e="${!e}" -v p="${!p}" 'BEGIN {printf "%.2f", e / p}')"
done
