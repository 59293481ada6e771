#!/usr/bin/env bash
# Times the Rust and the Python hello guests in the real host: size, launch
# with a cold and a warm precompile cache, and one guest call (SetConfig)
# against a host-only RPC (PluginInfo). See measure/main.go.
#
# Usage: guests/hello-py/measure.sh [-cold N] [-warm N] [-calls N] [GUEST.wasm ...]
# Env:   NOMAD_WASM_HOST (default target/debug/nomad-driver-wasm).
# Needs the conformance harness's Go packages (scripts/setup.sh) and the
# guests built (scripts/build.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

flags=()
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do
	flags+=("$1" "$2")
	shift 2
done
guests=("$@")
if [ "${#guests[@]}" -eq 0 ]; then
	guests=(target/wasm32-wasip2/guest/hello.wasm target/wasm32-wasip2/guest/hello_py.wasm)
fi

# The generated Nomad protocol stubs, as the conformance harness builds them.
tests/conformance/run.sh --generate-only >/dev/null
gopath="$repo/target/conformance-gopath"
bin="$repo/target/hello-py/measure"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
	GOCACHE="${GOCACHE:-$repo/target/conformance-gocache}" \
	go build -o "$bin" "$here/measure/main.go"

echo "host: ${NOMAD_WASM_HOST:-target/debug/nomad-driver-wasm}; cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" -host "${NOMAD_WASM_HOST:-target/debug/nomad-driver-wasm}" "${flags[@]}" "${guests[@]}"
