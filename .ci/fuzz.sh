#!/usr/bin/env bash
# Fuzz the guest SDK's cty-msgpack decoder (guests/sdk/fuzz) for FUZZ_SECONDS (default 30).
# Fails when the target crashes; the crashing input is left in guests/sdk/fuzz/artifacts/.
#
# Runs on stable Rust: `--sanitizer none` because AddressSanitizer needs the nightly-only
# `-Zsanitizer` flag. libFuzzer's coverage instrumentation uses stable `-C` flags, and
# cargo-fuzz still builds with debug assertions and overflow checks. The decoder is
# `unsafe`-free Rust, so ASan would add little; what we hunt is panics and runaway memory.
#
# Reproduce a crash: cargo fuzz run --fuzz-dir guests/sdk/fuzz --sanitizer none cty_decode <artifact>
set -euo pipefail

cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
# 0.13.2 is the newest cargo-fuzz that was checked to build on Rust 1.95 with --locked.
CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR=guests/sdk/fuzz
TARGET=cty_decode

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# libFuzzer writes new inputs into the first corpus directory: keep them out of the
# committed seeds (corpus/$TARGET/seed-*) by giving it a scratch one first.
work_corpus="$FUZZ_DIR/target/corpus/$TARGET"
mkdir -p "$work_corpus"

echo "fuzz: running $TARGET for ${FUZZ_SECONDS}s"
cargo fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer none "$TARGET" \
    "$work_corpus" "$FUZZ_DIR/corpus/$TARGET" \
    -- -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
