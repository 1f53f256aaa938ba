#!/usr/bin/env bash
# Prepares .devrun/ for scripts/gpu-check.sh on a GPU machine that has no Rust: the release
# binary built with --features cuda (stripped) and the tiny fixture's weights, zstd-compressed
# (the working tree copied to that machine is limited to 64 MiB). .devrun/ is git-ignored
# locally through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features cuda
mkdir -p .devrun
cp target/release/llmjp-convert .devrun/llmjp-convert
strip .devrun/llmjp-convert 2>/dev/null || true
zstd -q -19 -f fixtures/models/llmjp-jglue-tiny/model.safetensors -o .devrun/tiny.safetensors.zst
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.devrun/' "$EXCLUDE" 2>/dev/null || echo '/.devrun/' >>"$EXCLUDE"
ls -l .devrun
du -sh --exclude=target --exclude=.git . 2>/dev/null || true
