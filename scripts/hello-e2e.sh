#!/usr/bin/env bash
# The hello driver end to end on a fresh machine: set up, build, then launch
# the host the way Nomad does (HashiCorp's go-plugin client, Nomad's
# handshake), decode examples/hello/example.nomad's task config through
# hcldec and go-cty msgpack, and run the task: StartTask -> the greeting on
# the task's stdout FIFO -> WaitTask (exit 0) -> StopTask -> DestroyTask.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
PROFILE=release scripts/build.sh

export NOMAD_WASM_HOST="$PWD/target/release/nomad-driver-wasm"
export HELLO_WASM="$PWD/target/wasm32-wasip2/guest/hello.wasm"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! tests/conformance/run.sh -run 'TestHelloJobLifecycle$' >"$out" 2>&1; then
    cat "$out"
    echo "hello-e2e: FAILED" >&2
    exit 1
fi
grep -E 'stdout FIFO|stderr FIFO|exit: |--- PASS' "$out" | sed 's/^ *//' || true
echo "hello-e2e: the hello job ran end to end through the Wasm guest"
