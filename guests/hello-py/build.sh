#!/usr/bin/env bash
# Builds the Python hello guest: target/wasm32-wasip2/guest/hello_py.wasm.
#
# Installs the pinned tools first if they are missing (PyPI must be
# reachable): componentize-py into a venv under target/hello-py/, and
# msgpack, pure Python (its C extension cannot run inside the component),
# into target/hello-py/deps/. Then runs componentize-py against wit/.
#
# Env: PYTHON (default python3, >= 3.10 for componentize-py's wheel),
#      HELLO_PY_OUT (default target/wasm32-wasip2/guest/hello_py.wasm),
#      HELLO_PY_WIT (default wit/: the WIT package to build against),
#      HELLO_PY_TOOLS_ONLY=1: install the tools, build nothing (test.sh).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
MSGPACK_VERSION=1.2.4

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$repo/target/hello-py"
venv="$work/venv"
deps="$work/deps"
out="${HELLO_PY_OUT:-$repo/target/wasm32-wasip2/guest/hello_py.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
python="${PYTHON:-python3}"
wit="$(cd "${HELLO_PY_WIT:-$repo/wit}" && pwd)"

mkdir -p "$work" "$(dirname "$out")"

installed_version() { # <pip> <package>
	"$1" show "$2" 2>/dev/null | sed -n 's/^Version: //p'
}

if [ ! -x "$venv/bin/pip" ]; then
	echo "hello-py: creating $venv"
	"$python" -m venv "$venv"
fi
if [ "$(installed_version "$venv/bin/pip" componentize-py)" != "$COMPONENTIZE_PY_VERSION" ]; then
	echo "hello-py: installing componentize-py==$COMPONENTIZE_PY_VERSION"
	"$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# msgpack from its source distribution with MSGPACK_PUREPYTHON=1, which
# leaves out the C extension: only msgpack/fallback.py does the work.
stamp="$deps/.msgpack-$MSGPACK_VERSION-pure"
if [ ! -f "$stamp" ]; then
	echo "hello-py: installing msgpack==$MSGPACK_VERSION (pure Python) into $deps"
	rm -rf "$deps"
	MSGPACK_PUREPYTHON=1 "$venv/bin/pip" install -q --disable-pip-version-check \
		--no-binary msgpack --no-deps --no-compile --target "$deps" "msgpack==$MSGPACK_VERSION"
	if find "$deps" -name '*.so' | grep -q .; then
		echo "hello-py: msgpack was built with its C extension; the component needs pure Python" >&2
		exit 1
	fi
	touch "$stamp"
fi

if [ -n "${HELLO_PY_TOOLS_ONLY:-}" ]; then
	exit 0
fi

echo "hello-py: componentize-py $COMPONENTIZE_PY_VERSION -> $out"
# The component embeds CPython with the modules the app imports, already
# imported (componentize-py snapshots the initialised interpreter). Run
# from target/ so nothing of the caller's current directory is picked up.
cd "$work"
"$venv/bin/componentize-py" -q -d "$wit" -w driver-guest componentize \
	-p "$here" -p "$deps" app -o "$out.tmp"
mv "$out.tmp" "$out"
ls -l "$out"
