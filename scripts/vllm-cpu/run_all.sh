#!/bin/bash
# run_all.sh [dtype]: our int outputs of the trained tiny model through vLLM CPU, one process each.
# Makes the outputs with our binary (BIN) in VLLM_WORK first; see README.md for the install.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${VLLM_WORK:-/tmp/vllm-check}
export BIN=${BIN:-$repo/target/release/llmjp-convert}
tiny=$repo/fixtures/models/llmjp-jglue-tiny
. "$here/env.sh"
DT=${1:-bfloat16}
mkdir -p "$work" && cd "$work"
q() { [ -d "$1" ] || "$BIN" -q quantize "$tiny" -o "$1" "${@:2}"; }
q w8a8 --type int8 --format int-quantized --group-size channel
q w8a16 --type int8
q w4a16 --type int4
q gptq4 --type int4 --format gptq
q gptq4-g32 --type int4 --format gptq --group-size 32
q gptq8 --type int8 --format gptq
for d in ${DIRS:-unquantized w8a8 w8a16 w4a16 gptq4 gptq4-g32 gptq8}; do
  m=$work/$d; [ "$d" = unquantized ] && m=$tiny
  [ -f "cases_$d.json" ] || "$here/make_cases.sh" "$m" "cases_$d.json"
  timeout 600 "${VLLM_VENV:-/tmp/vllmenv}/bin/python" "$here/check_vllm.py" --model "$m" --dtype "$DT" \
    --cases "cases_$d.json" --out "res_${d}_$DT.json" > "log_${d}_$DT.txt" 2>&1
  echo "== $d $DT rc=$?"; grep RESULT_JSON "log_${d}_$DT.txt" | cut -c1-300
done
