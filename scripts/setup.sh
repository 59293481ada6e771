#!/usr/bin/env bash
# One-time machine set-up for building and testing (Debian 12, root or sudo):
# the wasm32-wasip2 Rust target, and the Go toolchain + HashiCorp libraries
# (from Debian's packages) that the conformance harness is built from.
set -euo pipefail

need_apt=0
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
[ -d /usr/share/gocode/src/github.com/hashicorp/go-plugin ] || need_apt=1
[ -d /usr/share/gocode/src/github.com/hashicorp/hcl/v2 ] || need_apt=1
# The nspawn guest's end-to-end tests: systemd-nspawn and a static busybox.
command -v systemd-nspawn >/dev/null 2>&1 || need_apt=1
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need_apt=1
# The http capability's cross-checks (host/tests/http_cap.rs): openssl, ssh-keygen.
command -v openssl >/dev/null 2>&1 || need_apt=1
command -v ssh-keygen >/dev/null 2>&1 || need_apt=1
command -v node >/dev/null 2>&1 || need_apt=1
command -v npm >/dev/null 2>&1 || need_apt=1

# node and npm: only when missing. A machine with NodeSource's nodejs (which
# bundles npm) cannot take Debian's npm package: the two conflict.
node_pkgs=""
command -v node >/dev/null 2>&1 || node_pkgs="nodejs"
command -v npm >/dev/null 2>&1 || node_pkgs="$node_pkgs npm"

if [ "$need_apt" = 1 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing Debian packages (Go, go-plugin, go-cty, hcl/v2, protoc)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev \
        golang-github-zclconf-go-cty-dev golang-github-hashicorp-hcl-v2-dev \
        golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev \
        protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-github-hashicorp-go-hclog-dev \
        bash ca-certificates systemd-container busybox-static openssl openssh-client $node_pkgs >/dev/null
fi

# node's http-signature (CloudAPI's own verifier), for host/tests/http_cap.rs.
node_sig="$(cd "$(dirname "$0")/.." && pwd)/target/node-http-signature"
if [ ! -d "$node_sig/node_modules/http-signature" ]; then
    echo "setup: installing http-signature@1.4.0 from npm into $node_sig"
    mkdir -p "$node_sig"
    npm install --silent --no-audit --no-fund --prefix "$node_sig" http-signature@1.4.0
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi
for comp in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
done
echo "setup: done"
