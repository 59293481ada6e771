#!/usr/bin/env bash
# Native tests of the Python hello guest: its sources under CPython, with
# the pure msgpack and componentize-py's Python bindings for wit/ (the host's
# imports replaced by fakes in the tests). Needs the tools build.sh installs;
# installs them the same way if missing (without building the component).
#
# The component itself is tested by the conformance harness:
#   HELLO_WASM=target/wasm32-wasip2/guest/hello_py.wasm tests/conformance/run.sh -run ...
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$repo/target/hello-py"
wit="$(cd "${HELLO_PY_WIT:-$repo/wit}" && pwd)"

HELLO_PY_TOOLS_ONLY=1 "$here/build.sh"

rm -rf "$work/bindings"
(cd "$work" && "$work/venv/bin/componentize-py" -q -d "$wit" -w driver-guest bindings "$work/bindings")

cd "$here"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$here:$work/deps:$work/bindings" \
	"$work/venv/bin/python" -m unittest discover -s "$here/tests" -v
