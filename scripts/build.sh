#!/usr/bin/env bash
# Builds the host and the guests. PROFILE=release for an optimised host
# (default: dev, which is what the tests use). Guests are always built with
# the small `guest` profile into target/wasm32-wasip2/guest/.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-dev}"
cargo build -p nomad-wasm-host --profile "$profile"
cargo build -p hello-guest -p misbehave-guest --target wasm32-wasip2 --profile guest
cargo build -p nspawn-guest --target wasm32-wasip2 --profile guest
cargo build -p pot-guest -p rkt-guest --target wasm32-wasip2 --profile guest
cargo build -p triton-guest --target wasm32-wasip2 --profile guest
# The hello driver in Python (componentize-py; installs its pinned tools from
# PyPI). SKIP_HELLO_PY=1 leaves it out.
[ "${SKIP_HELLO_PY:-0}" = 1 ] || guests/hello-py/build.sh
