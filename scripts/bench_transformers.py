#!/usr/bin/env python3
"""PyTorch/transformers counterpart of `llmjp-convert bench`, for the same checkpoint on the
same GPU: pp = one forward of N prompt tokens; gen = greedy generation of M new tokens with the
KV cache (timed after the prompt, as bench does). Same prompt ids as bench (src/bench.rs).
One warm-up, then the median (and range) of --reps; prints JSON like `bench --json`.

    python3 scripts/bench_transformers.py MODEL_DIR [--prompt-tokens 128] [--gen-tokens 32]
"""
import argparse, json, statistics, time

import torch
from transformers import AutoModelForCausalLM


def prompt(vocab, n):
    span = max(vocab - 4, 1)
    return [4 + (i * 2_654_435_761 + 12_345) % span for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).cuda().eval()
    load = time.time() - t0
    ids = torch.tensor([prompt(m.config.vocab_size, a.prompt_tokens)], device="cuda")

    def pp():
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.no_grad():
            m(ids, use_cache=False, logits_to_keep=1)
        torch.cuda.synchronize(); return time.perf_counter() - t

    def gen():
        # Prompt forward with the cache, then M single-token greedy steps (timed).
        with torch.no_grad():
            out = m(ids, use_cache=True, logits_to_keep=1)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(a.gen_tokens):
                out = m(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
        return time.perf_counter() - t

    results = []
    for name, f, n in (("pp%d" % a.prompt_tokens, pp, a.prompt_tokens), ("gen%d" % a.gen_tokens, gen, a.gen_tokens)):
        f()  # warm-up
        s = [f() for _ in range(a.reps)]
        r = sorted(n / x for x in s)
        results.append({"test": name, "tokens": n, "tok_s_median": statistics.median(r) if len(r) % 2 else r[len(r) // 2],
                        "tok_s_min": r[0], "tok_s_max": r[-1], "seconds": s})
    print(json.dumps({"model": a.model, "device": f"transformers {torch.cuda.get_device_name()} {a.dtype}",
                      "torch": torch.__version__, "load_seconds": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
