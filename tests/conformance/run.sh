#!/usr/bin/env bash
# Conformance harness entry point: launches the host the way Nomad's plugin
# loader does (HashiCorp go-plugin client, go-cty msgpack, hcl/v2 hcldec) and
# drives the hello driver through its whole lifecycle.
#
# Usage: tests/conformance/run.sh [extra `go test` flags, e.g. -run TestUnit]
#        tests/conformance/run.sh --generate-only   (just write the Go stubs)
#
# Env:
#   NOMAD_WASM_HOST  host binary  (default target/release/nomad-driver-wasm)
#   HELLO_WASM       hello guest  (default target/wasm32-wasip2/release/hello.wasm)
#   NSPAWN_WASM      nspawn guest (default target/wasm32-wasip2/guest/nspawn.wasm)
#   POT_WASM         pot guest    (default target/wasm32-wasip2/guest/pot.wasm)
#   RKT_WASM         rkt guest    (default target/wasm32-wasip2/guest/rkt.wasm)
#   TRITON_WASM      triton guest (default target/wasm32-wasip2/guest/triton.wasm);
#                    the Triton tests also build tests/triton-sim (Go, module
#                    mode, offline) and need ssh-keygen
#   CONFORMANCE_GOPATH  build dir for the generated Go stubs
#                       (default target/conformance-gopath)
#
# Needs the Debian Go packages listed in README.md; builds offline in GOPATH
# mode. The Go stubs are generated from proto/ at every run and never committed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

abspath() {
	# Resolve relative to the repo root without requiring the file to exist
	# (the harness reports a missing binary as a test failure, not here).
	case "$1" in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$repo/$1" ;;
	esac
}

NOMAD_WASM_HOST="$(abspath "${NOMAD_WASM_HOST:-target/release/nomad-driver-wasm}")"
HELLO_WASM="$(abspath "${HELLO_WASM:-target/wasm32-wasip2/release/hello.wasm}")"
NSPAWN_WASM="$(abspath "${NSPAWN_WASM:-target/wasm32-wasip2/guest/nspawn.wasm}")"
export NOMAD_WASM_HOST HELLO_WASM
export NSPAWN_WASM
POT_WASM="$(abspath "${POT_WASM:-target/wasm32-wasip2/guest/pot.wasm}")"
RKT_WASM="$(abspath "${RKT_WASM:-target/wasm32-wasip2/guest/rkt.wasm}")"
export POT_WASM RKT_WASM
TRITON_WASM="$(abspath "${TRITON_WASM:-target/wasm32-wasip2/guest/triton.wasm}")"
export TRITON_WASM
export CONFORMANCE_REPO="$repo"

gopath="$(abspath "${CONFORMANCE_GOPATH:-target/conformance-gopath}")"
pbroot="$gopath/src/conformancepb"

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "run.sh: '$tool' not found; install the Debian packages listed in tests/conformance/README.md" >&2
		exit 2
	fi
done

# Each proto package gets its own Go package (the protos carry no go_package
# option, so the mapping is given here). go-plugin's own internal services
# (package `plugin`) are not generated: go-plugin already registers them, and
# registering the same proto names twice makes protobuf-go panic.
declare -A gopkg=(
	[nomad/plugins/shared/hclspec/hcl_spec.proto]=conformancepb/hclspec
	[nomad/plugins/shared/structs/attribute.proto]=conformancepb/structs
	[nomad/plugins/shared/structs/recoverable_error.proto]=conformancepb/structs
	[nomad/plugins/shared/structs/stats.proto]=conformancepb/structs
	[nomad/plugins/base/base.proto]=conformancepb/base
	[nomad/plugins/drivers/driver.proto]=conformancepb/drivers
)
go_opts=()
grpc_opts=()
for f in "${!gopkg[@]}"; do
	go_opts+=("--go_opt=M$f=${gopkg[$f]}")
	grpc_opts+=("--go-grpc_opt=M$f=${gopkg[$f]}")
done

rm -rf "$pbroot"
mkdir -p "$gopath/src"
protoc \
	-I "$repo/proto" -I /usr/include \
	--go_out="$gopath/src" "${go_opts[@]}" \
	--go-grpc_out="$gopath/src" "${grpc_opts[@]}" \
	"${!gopkg[@]}"

if [[ "${1:-}" == "--generate-only" ]]; then
	echo "generated Go stubs under $pbroot"
	exit 0
fi

export GOPATH="$gopath:/usr/share/gocode"
export GO111MODULE=off
export GOPROXY=off
export GOFLAGS=
export GOCACHE="${GOCACHE:-$repo/target/conformance-gocache}"

cd "$here"
exec go test -v -count=1 -timeout 10m "$@" .
