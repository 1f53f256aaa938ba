#!/usr/bin/env bash
# Quality of each quantization type, measured by verify against the original checkpoint: mean
# KL(original || quantized) over every scored position and the share of positions with the same
# top-1 token, for the 256-wide fixtures (`synth wide`, `synth wide-moe`: every weight row
# takes the K-quants' 256-blocks) and the trained tiny model (128 wide: its K-quant mixes fall
# back to Q5_0/Q5_1/Q8_0 rows, as llama-quantize's do). Default verify settings (8 built-in
# prompts, 16 greedy tokens each). With IMATRIX=1 (default) the low-bit mixes are also made
# with an importance matrix from `llmjp-convert imatrix` (built-in calibration text).
#
#   bench/quant-quality.sh [WORKDIR]   (default /tmp/llmjp-quality; prints a markdown table and
#                                       writes it to bench/quant-quality.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-/tmp/llmjp-quality}
OUTMD=${OUTMD:-$ROOT/bench/quant-quality.md}
MIXES=${MIXES:-"Q8_0 Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S Q4_1 Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K"}
IM_MIXES=${IM_MIXES:-"Q4_K_M Q3_K_M Q2_K"}
cargo build --release -q
BIN=$ROOT/target/release/llmjp-convert
mkdir -p "$WORK"
"$BIN" -q synth wide -o "$WORK/wide" --force
"$BIN" -q synth wide-moe -o "$WORK/wide-moe" --force
MODELS=("wide:$WORK/wide" "wide-moe:$WORK/wide-moe" "trained:$ROOT/fixtures/models/llmjp-jglue-tiny")
: >"$WORK/rows.jsonl"
for entry in "${MODELS[@]}"; do
    name=${entry%%:*} dir=${entry#*:}
    im=""
    if [ "${IMATRIX:-1}" = 1 ] && [ "$name" != trained ]; then
        im=$WORK/$name.imatrix.gguf
        "$BIN" -q imatrix "$dir" -o "$im" --force >/dev/null
    fi
    for mix in $MIXES; do
        for with in no yes; do
            [ "$with" = yes ] && { [ -n "$im" ] && [[ " $IM_MIXES " == *" $mix "* ]] || continue; }
            q=$WORK/$name-$mix-$with.gguf
            extra=(); [ "$with" = yes ] && extra=(--imatrix "$im")
            "$BIN" -q quantize "$dir" -o "$q" -t "$mix" --force --no-checksum "${extra[@]}" >/dev/null
            set +e
            "$BIN" -q verify "$dir" "$q" --json "$WORK/r.json" --force --no-hash --parity-cost-lines 1 >/dev/null 2>&1
            rc=$?
            set -e
            python3 - "$WORK/r.json" "$name" "$mix" "$with" "$rc" "$(stat -c %s "$q")" >>"$WORK/rows.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o = r["overall"]
print(json.dumps({"model": sys.argv[2], "mix": sys.argv[3], "imatrix": sys.argv[4] == "yes",
    "rc": int(sys.argv[5]), "bytes": int(sys.argv[6]), "type": r["thresholds"]["for_type"],
    "mean_kl": o["mean_kl"], "top1": o["top1_agreement"], "positions": o["positions"]}))
PY
        done
    done
done
python3 - "$WORK/rows.jsonl" <<'PY' | tee "$OUTMD"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
models = ["wide", "wide-moe", "trained"]
print("| mix | " + " | ".join(f"{m}: mean KL / top-1" for m in models) + " |")
print("|---|" + "---|" * len(models))
keys = []
for r in rows:
    k = (r["mix"], r["imatrix"])
    if k not in keys: keys.append(k)
for mix, im in keys:
    cells = []
    for m in models:
        r = next((r for r in rows if r["model"] == m and r["mix"] == mix and r["imatrix"] == im), None)
        cells.append("-" if r is None else f"{r['mean_kl']:.2e} / {100*r['top1']:.1f}%" + ("" if r["rc"] == 0 else " FAIL"))
    print(f"| {mix}{' + imatrix' if im else ''} | " + " | ".join(cells) + " |")
PY
