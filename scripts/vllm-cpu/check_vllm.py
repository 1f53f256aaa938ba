#!/usr/bin/env python3
"""Load one checkpoint dir in vLLM (CPU) and compare its greedy ids with ours.

Usage (run with /tmp/vllmenv/bin/python, env.sh sourced; see README.md):
  python check_vllm.py --model DIR --dtype bfloat16 --cases cases.json [--out result.json]

cases.json: a list of {"name": str, "prompt_ids": [int], "ours": [int]}
  where "ours" is what `llmjp-convert generate DIR --prompt P -n 16 --ids`
  printed as "generated ids" (it stops at EOS, so it may be shorter than 16).

vLLM runs with ignore_eos=True and max_tokens=16, so the comparison is:
  * identical leading tokens over min(len(ours), 16) positions, and
  * if ours stopped early, whether vLLM's next token is the EOS id (agrees that we stopped).
Each model dir is best run in its own process (one LLM per process); see run_all.sh.
"""
import argparse
import json
import os
import sys
import traceback


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--cases", required=True)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--eos", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    cases = json.load(open(a.cases))
    res = {"model": a.model, "dtype": a.dtype, "loads": False, "runs": False, "cases": []}
    try:
        from vllm import LLM, SamplingParams
        llm = LLM(model=a.model, dtype=a.dtype, enforce_eager=True, max_model_len=256,
                  max_num_seqs=4, seed=0)
        res["loads"] = True
        try:
            res["quant_method"] = str(llm.llm_engine.model_config.quantization)
        except Exception:
            pass
    except Exception as e:
        res["error"] = "load: " + "".join(traceback.format_exception_only(type(e), e)).strip()
        res["traceback"] = traceback.format_exc()
        finish(res, a.out)
        return
    try:
        sp = SamplingParams(temperature=0, max_tokens=a.max_tokens, ignore_eos=True)
        try:
            from vllm.inputs import TokensPrompt
            prompts = [TokensPrompt(prompt_token_ids=c["prompt_ids"]) for c in cases]
        except ImportError:
            prompts = [{"prompt_token_ids": c["prompt_ids"]} for c in cases]
        outs = llm.generate(prompts, sp, use_tqdm=False)
        res["runs"] = True
        for c, o in zip(cases, outs):
            got = list(o.outputs[0].token_ids)
            ours = c["ours"][: a.max_tokens]
            lead = 0
            for x, y in zip(ours, got):
                if x != y:
                    break
                lead += 1
            r = {"name": c["name"], "ours": ours, "vllm": got, "identical_leading": lead,
                 "compared": len(ours)}
            if len(ours) < a.max_tokens and lead == len(ours):
                r["vllm_next_is_eos"] = (len(got) > len(ours) and got[len(ours)] == a.eos)
            res["cases"].append(r)
    except Exception as e:
        res["error"] = "run: " + "".join(traceback.format_exception_only(type(e), e)).strip()
        res["traceback"] = traceback.format_exc()
    finish(res, a.out)


def finish(res, out):
    s = json.dumps(res, ensure_ascii=False, indent=1)
    print("RESULT_JSON " + json.dumps({k: v for k, v in res.items() if k != "traceback"}, ensure_ascii=False))
    if out:
        open(out, "w").write(s)
    sys.stdout.flush()
    import multiprocessing
    for ch in multiprocessing.active_children():  # vLLM EngineCore process
        ch.kill()
    os._exit(0)  # vLLM engine processes can hang on interpreter shutdown


if __name__ == "__main__":
    main()
