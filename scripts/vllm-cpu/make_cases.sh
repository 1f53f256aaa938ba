#!/bin/bash
# make_cases.sh DIR OUT.json : run our generate on the fixed prompts, write cases json
BIN=${BIN:?set BIN to the llmjp-convert binary}
D=$1; OUT=$2
python3 - "$D" "$OUT" "$BIN" <<'PY'
import json, re, subprocess, sys
d, out, bin_ = sys.argv[1:4]
prompts = ["日本の首都は", "今日は天気が", "文章1：", "The capital of Japan is",
           "Question: What is the capital of France? Answer:"]
cases = []
for p in prompts:
    r = subprocess.run([bin_, "generate", "-q", d, "--prompt", p, "-n", "16", "--ids", "--threads", "1"],
                       capture_output=True, text=True)
    t = r.stdout + r.stderr
    pi = json.loads(re.search(r"prompt ids \(\d+\): (\[.*?\])", t).group(1))
    gi = json.loads(re.search(r"generated ids \(\d+\): (\[.*?\])", t).group(1))
    cases.append({"name": p, "prompt_ids": pi, "ours": gi})
json.dump(cases, open(out, "w"), ensure_ascii=False, indent=1)
PY
