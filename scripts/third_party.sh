#!/usr/bin/env bash
# Copies the third-party protos that codegen needs from the Go module cache into
# third_party/ (git-ignored: never commit another project's source).
set -euo pipefail
cd "$(dirname "$0")/.."
copy() { # module@version  source-folder-in-module  destination
  local dir
  dir=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "third_party: cannot download $1" >&2; exit 1; }
  mkdir -p "$3"
  cp -R "$dir/$2/." "$3/"
  chmod -R u+w "$3"
}
if [ ! -f third_party/googleapis/google/api/annotations.proto ]; then
  copy github.com/grpc-ecosystem/grpc-gateway@v1.16.0 third_party/googleapis/google/api third_party/googleapis/google/api
fi
if [ ! -f third_party/protovalidate/buf/validate/validate.proto ]; then
  copy github.com/bufbuild/protovalidate@v1.2.2 proto/protovalidate/buf/validate third_party/protovalidate/buf/validate
  rm -f third_party/protovalidate/buf/validate/BUILD.bazel
fi
# google/rpc (Status, ErrorInfo, BadRequest) for the TypeScript and Python
# clients, which decode error details themselves. grpc-gateway's copy predates
# ErrorInfo; npm's google-proto-files (a pinned devDependency) has it.
if [ ! -f third_party/googleapis-rpc/google/rpc/error_details.proto ]; then
  [ -d node_modules/google-proto-files ] || { echo "third_party: run npm ci first" >&2; exit 1; }
  mkdir -p third_party/googleapis-rpc/google/rpc
  cp node_modules/google-proto-files/google/rpc/{status,error_details,code}.proto third_party/googleapis-rpc/google/rpc/
  chmod -R u+w third_party/googleapis-rpc
fi
