#!/usr/bin/env bash
# int4/int8 safetensors quantization: speed on the 1.8b-shaped model, quality on the trained
# tiny model and the 1.8b-shaped one. Writes bench/intq-results.txt.
#
#   bench/intq.sh [WORKDIR]      # default /tmp/llmjp-bench (the 1.8b model is made there once)
#   GPTQ_SAMPLES=8 bench/intq.sh # calibration sequences of 512 tokens for the 1.8b GPTQ run
#
# Speed: `quantize --type int4` rtn and gptq of `synth 1.8b`, wall time and peak RSS from GNU
# time. Quality: `eval-quant` (held-out perplexity, mean KL, top-1) on the last 1000 JNLI lines,
# calibration from verify's sample + JCommonsenseQA (no JNLI), and GGUF Q8_0 for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/llmjp-bench}"
samples="${GPTQ_SAMPLES:-8}"
# eval-quant sequences of 256 tokens on the 1.8b model (each costs two 1.8b forward passes).
evals="${EVAL_SAMPLES:-4}"
out="$work/intq"
mkdir -p "$out"
cargo build --release -q
bin=target/release/llmjp-convert
model="$work/model-1.8b"
[ -d "$model" ] || "$bin" synth 1.8b -o "$model"
res=bench/intq-results.txt
{
  echo "# bench/intq.sh $(date -u +%FT%RZ), $(git describe --always --dirty)"
  echo "# $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$res"
timed() { # label, command...
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$out/time.txt" "$@" > /dev/null
  read -r secs kb < "$out/time.txt"
  printf '%-28s %8.1f s  peak RSS %6d MiB\n' "$label" "$secs" $((kb / 1024)) | tee -a "$res"
}
cat src/verify/sample.txt fixtures/corpus/ja-jcommonsenseqa-2000.txt > "$out/calib.txt"
tail -n 1000 fixtures/corpus/ja-jnli-2000.txt > "$out/heldout.txt"

echo "## speed, 1.8b-shaped (bf16, 3.7 GB)" | tee -a "$res"
timed "int4 rtn" "$bin" -q quantize "$model" -o "$out/m-rtn" --type int4 --force
timed "int4 gptq ${samples}x512" "$bin" -q quantize "$model" -o "$out/m-gptq" --type int4 \
  --method gptq --samples "$samples" --seq-len 512 --force

echo "## quality: eval-quant on held-out JNLI (trained: 16 x 256 tokens; 1.8b: $evals x 256)" | tee -a "$res"
quality() { # reference, candidate, label, [samples]
  printf '%-34s %s\n' "$3" "$("$bin" -q eval-quant "$1" "$2" --text "$out/heldout.txt" --samples "${4:-16}")" | tee -a "$res"
}
tiny=fixtures/models/llmjp-jglue-tiny
cal=(--calibration "$out/calib.txt" --samples 32 --seq-len 256)
"$bin" -q to-gguf "$tiny" -o "$out/tiny-q8_0.gguf" --outtype q8_0 --force --no-checksum > /dev/null
quality "$tiny" "$out/tiny-q8_0.gguf" "trained: gguf q8_0"
for spec in "int8 rtn" "int4 rtn" "int4 mse" "int4 gptq"; do
  set -- $spec
  extra=(); [ "$2" = rtn ] || extra=(--method "$2" "${cal[@]}")
  "$bin" -q quantize "$tiny" -o "$out/tiny-$1-$2" --type "$1" "${extra[@]}" --force > /dev/null
  quality "$tiny" "$out/tiny-$1-$2" "trained: $1 $2"
done
[ -f "$work/model-1.8b-q8_0.gguf" ] || "$bin" -q to-gguf "$model" -o "$work/model-1.8b-q8_0.gguf" --outtype q8_0 > /dev/null
quality "$model" "$work/model-1.8b-q8_0.gguf" "1.8b: gguf q8_0" "$evals"
"$bin" -q quantize "$model" -o "$out/m-int8" --type int8 --force > /dev/null
quality "$model" "$out/m-int8" "1.8b: int8 rtn" "$evals"
quality "$model" "$out/m-rtn" "1.8b: int4 rtn" "$evals"
"$bin" -q quantize "$model" -o "$out/m-mse" --type int4 --method mse --force > /dev/null
quality "$model" "$out/m-mse" "1.8b: int4 mse (unweighted)" "$evals"
quality "$model" "$out/m-gptq" "1.8b: int4 gptq ${samples}x512" "$evals"
rm -rf "$out"/m-* "$out"/tiny-*
