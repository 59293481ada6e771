#!/usr/bin/env bash
# Runs the simulator's own Go tests and builds target/triton-sim.
# Standard library only: builds offline in module mode (go.mod has no requirements).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
export GOPROXY=off GOFLAGS= GO111MODULE=on
export GOCACHE="${GOCACHE:-$repo/target/triton-sim-gocache}"
export GOPATH="${GOPATH:-$repo/target/triton-sim-gopath}"
go vet .
go test -count=1 "$@" .
go build -o "$repo/target/triton-sim" .
