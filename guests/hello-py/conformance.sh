#!/usr/bin/env bash
# Runs the conformance harness's hello tests (tests/conformance/) against
# the Python hello guest: the same tests, unchanged, that run against the
# Rust hello guest.
#
# The hello tests are every Test* function of the package except the
# harness's checks of itself, which run no guest (TestUnit*, TestXcheck*),
# and the tests of the other drivers, named after their guest directory
# (TestNspawn*, TestPot*, ...): a new hello test is picked up without
# editing this file.
#
# Env: NOMAD_WASM_HOST (default target/debug/nomad-driver-wasm),
#      HELLO_WASM (default target/wasm32-wasip2/guest/hello_py.wasm).
# Extra arguments go to `go test` (e.g. -v is already on; -run is set here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

# Capitalised names of the other guests: nspawn -> Nspawn, hello-py -> HelloPy.
others=()
for dir in guests/*/; do
	name="$(basename "$dir")"
	case "$name" in hello | hello-py) continue ;; esac
	others+=("$(sed -E 's/(^|[-_])([a-z])/\U\2/g' <<<"$name")")
done

tests=()
while read -r name; do
	skip=0
	for other in Unit Xcheck "${others[@]}"; do
		case "$name" in "Test$other"*) skip=1 ;; esac
	done
	[ "$skip" = 1 ] || tests+=("$name")
done < <(sed -nE 's/^func (Test[A-Za-z0-9_]+)\(t \*testing\.T\).*/\1/p' tests/conformance/*_test.go | sort -u)

if [ "${#tests[@]}" -eq 0 ]; then
	echo "hello-py conformance: found no hello tests in tests/conformance" >&2
	exit 1
fi
pattern="^($(IFS='|'; echo "${tests[*]}"))\$"
echo "hello-py conformance: ${#tests[@]} tests: ${tests[*]}"

export NOMAD_WASM_HOST="${NOMAD_WASM_HOST:-$repo/target/debug/nomad-driver-wasm}"
export HELLO_WASM="${HELLO_WASM:-$repo/target/wasm32-wasip2/guest/hello_py.wasm}"
exec tests/conformance/run.sh -run "$pattern" "$@"
