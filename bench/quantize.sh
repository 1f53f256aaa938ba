#!/usr/bin/env bash
# Quantization speed against llama.cpp's quantizer in the same run: the 1.8b-shaped f16 GGUF
# to Q8_0 and Q4_K_M with 2 threads each, alternating ours (`llmjp-convert --threads 2
# quantize`) and llama_model_quantize (tests/quantize_bench.rs, the code behind
# `llama-quantize IN OUT TYPE 2`), REPS times; wall time and peak RSS from /usr/bin/time.
#
#   bench/quantize.sh [WORKDIR]    (default /tmp/llmjp-bench; the model and GGUF are kept there)
#
# Environment: REPS (default 3), TYPES (default "Q8_0 Q4_K_M"), RESULTS (default
# bench/quantize-results.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-/tmp/llmjp-bench}
REPS=${REPS:-3}
TYPES=${TYPES:-"Q8_0 Q4_K_M"}
RESULTS=${RESULTS:-$ROOT/bench/quantize-results.txt}

cargo build --release -q
cargo test --release -q --features oracle --test quantize_bench --no-run 2>/dev/null
BIN=$ROOT/target/release/llmjp-convert
TEST=$(ls -t "$ROOT"/target/release/deps/quantize_bench-* | grep -v '\.d$' | head -1)

mkdir -p "$WORK"
MODEL=$WORK/model-1.8b
IN=$WORK/model-1.8b-f16.gguf
[ -f "$MODEL/model.safetensors" ] || "$BIN" synth 1.8b -o "$MODEL" --force -q
[ -f "$IN" ] || "$BIN" to-gguf "$MODEL" -o "$IN" --outtype f16 --force -q

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
{
    echo "# bench/quantize.sh REPS=$REPS $(date -u +%FT%TZ), $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)"
    echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "input $(basename "$IN") ($(stat -c %s "$IN") bytes), 2 threads each; seconds median (min-max) of $REPS; ratio = llama.cpp / ours (>= 1: ours at least as fast)"
    printf '%-8s %-24s %-24s %6s %14s %14s\n' type ours_s llama_s ratio ours_peak_MiB out_MiB
} >"$TMP/table"
for ty in $TYPES; do
    : >"$TMP/ours" ; : >"$TMP/llama"
    for r in $(seq 1 "$REPS"); do
        run_ours() {
            /usr/bin/time -f '%e %M' -o "$TMP/t" "$BIN" -q --threads 2 quantize "$IN" \
                -o "$WORK/q-ours.gguf" -t "$ty" --force --no-checksum >/dev/null
            cat "$TMP/t" >>"$TMP/ours"
        }
        run_llama() {
            LLMJP_QB_IN=$IN LLMJP_QB_OUT=$WORK/q-llama.gguf LLMJP_QB_TYPE=$ty \
                /usr/bin/time -f '%e %M' -o "$TMP/t" "$TEST" --ignored --exact llama_quantize_once \
                >/dev/null 2>&1
            cat "$TMP/t" >>"$TMP/llama"
        }
        # Alternate who goes first, so neither always gets the warmer page cache.
        if [ $((r % 2)) -eq 1 ]; then run_ours; run_llama; else run_llama; run_ours; fi
    done
    cmp -s "$WORK/q-ours.gguf" "$WORK/q-llama.gguf" && same="byte-identical" || same="DIFFERENT"
    python3 - "$TMP/ours" "$TMP/llama" "$ty" "$(stat -c %s "$WORK/q-ours.gguf")" "$same" >>"$TMP/table" <<'PY'
import sys, statistics as st
def load(p):
    rows = [l.split() for l in open(p) if l.strip()]
    return [float(r[0]) for r in rows], [int(r[1]) for r in rows]
(ot, om), (lt, lm) = load(sys.argv[1]), load(sys.argv[2])
mo, ml = st.median(ot), st.median(lt)
print(f"{sys.argv[3]:8} {mo:7.2f} ({min(ot):.2f}-{max(ot):.2f})     {ml:7.2f} ({min(lt):.2f}-{max(lt):.2f})     {ml/mo:6.2f} {max(om)/1024:14.0f} {int(sys.argv[4])/2**20:14.0f}  outputs {sys.argv[5]}")
PY
done
echo "# load average after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TMP/table"
cat "$TMP/table" | tee "$RESULTS"
