#!/usr/bin/env bash
# Every test: formatting, lints, unit and integration tests (host, SDK,
# guests), the Go conformance harness against the real host binary and
# guest, and a short fuzz run of the cty-msgpack decoder.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== fmt"
cargo fmt --all --check
echo "== clippy (host, proto, SDK, testkit, guests and their tests: native)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== clippy (guests: wasm32-wasip2)"
cargo clippy -p hello-guest -p misbehave-guest -p nomad-driver-sdk -p nspawn-guest -p pot-guest -p rkt-guest -p triton-guest --target wasm32-wasip2 -- -D warnings

scripts/build.sh

echo "== cargo test"
cargo test --workspace

echo "== triton-sim (Go: CloudAPI + sdc-docker simulator, signature checks)"
tests/triton-sim/test.sh

echo "== conformance (go-plugin client, hcldec, go-cty msgpack)"
NOMAD_WASM_HOST="$PWD/target/debug/nomad-driver-wasm" \
HELLO_WASM="$PWD/target/wasm32-wasip2/guest/hello.wasm" \
    tests/conformance/run.sh

echo "== hello in Python: native tests, then the conformance hello tests against it"
guests/hello-py/test.sh
NOMAD_WASM_HOST="$PWD/target/debug/nomad-driver-wasm" \
HELLO_WASM="$PWD/target/wasm32-wasip2/guest/hello_py.wasm" \
    guests/hello-py/conformance.sh

echo "== fuzz (cty-msgpack decoder)"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" .ci/fuzz.sh
echo "test-all: every check passed"
