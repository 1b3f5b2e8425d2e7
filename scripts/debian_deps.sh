#!/usr/bin/env bash
# Installs the Debian packages the tests and `make generate` need, when any is
# missing: protoc and the grpc plugin for the Python client, grpcio and
# protobuf for its test (run with /usr/bin/python3), chromium for the browser
# console's test, jq and curl for the README walkthrough and the benchmark
# scripts. A no-op once they are there.
set -euo pipefail
packages=(protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf chromium jq curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "debian_deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "debian_deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
