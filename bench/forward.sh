#!/usr/bin/env bash
# Forward-pass speed against llama.cpp on the same GGUF files, in one process: prompt processing
# of 128 tokens (pp128: one batch, logits of the last) and generation of 32 tokens (gen32: single
# steps with the KV cache) for f16 and q8_0 GGUFs of a 1.8b-shaped model (24 layers, hidden 2048,
# ffn 7168, 16 heads, vocab 99584), 2 threads each (oracle::N_THREADS).
#
#   bench/forward.sh [WORKDIR]      (default /tmp/llmjp-bench; model and GGUFs are kept there)
#
# Environment: REPS (default 3), OUTTYPES (default "f16 q8_0"), RESULTS (default
# bench/forward-results.txt; the table is also printed), CHECKPOINT=1 also times our forward
# pass on the bf16 checkpoint itself (no llama.cpp counterpart; a regression check).
#
# The harness is the ignored test `vs_llama_cpp` in tests/forward_bench.rs (feature `oracle`,
# which builds llama.cpp through llama-cpp-sys-2 with AVX2/FMA/F16C on x86-64). Per GGUF it
# loads both engines, warms both up, then alternates them REPS times (ours first on even
# repetitions, llama.cpp first on odd ones) and reports median tok/s, min-max and ours/llama.cpp.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-/tmp/llmjp-bench}
REPS=${REPS:-3}
OUTTYPES=${OUTTYPES:-"f16 q8_0"}
RESULTS=${RESULTS:-$ROOT/bench/forward-results.txt}

cargo build --release -q
cargo test --release -q --features oracle --test forward_bench --no-run 2>/dev/null
BIN=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/llmjp-convert
[ -x "$BIN" ] || BIN=$ROOT/target/release/llmjp-convert

mkdir -p "$WORK"
MODEL=$WORK/model-1.8b
if [ ! -f "$MODEL/model.safetensors" ] && [ ! -f "$MODEL/model.safetensors.index.json" ]; then
    echo "generating the 1.8b model in $MODEL ..." >&2
    "$BIN" synth 1.8b -o "$MODEL" --force -q
fi
GGUFS=()
for ty in $OUTTYPES; do
    g=$WORK/model-1.8b-$ty.gguf
    # Regenerate when missing or older than the checkpoint.
    if [ ! -f "$g" ] || [ "$MODEL/config.json" -nt "$g" ]; then
        echo "converting to $g ..." >&2
        "$BIN" to-gguf "$MODEL" -o "$g" --outtype "$ty" -q
    fi
    GGUFS+=("$g")
done

echo "warming the page cache ..." >&2
cat "${GGUFS[@]}" >/dev/null
[ "${CHECKPOINT:-0}" = 1 ] && cat "$MODEL"/*.safetensors >/dev/null

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LLMJP_BENCH_GGUF="${GGUFS[*]}" LLMJP_BENCH_REPS=$REPS LLMJP_BENCH_OUT=$TMP \
    LLMJP_BENCH_CHECKPOINT=$([ "${CHECKPOINT:-0}" = 1 ] && echo "$MODEL") \
    cargo test --release -q --features oracle --test forward_bench -- \
    --ignored --exact vs_llama_cpp --nocapture --test-threads 1 >&2

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "# bench/forward.sh REPS=$REPS $(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty 2>/dev/null || echo '?')"
    echo "# $(nproc) cores, $CPU; load average before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
    cat "$TMP"
} | tee "$RESULTS"
