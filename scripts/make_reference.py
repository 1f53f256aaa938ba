#!/usr/bin/env python3
"""Write Hugging Face transformers reference outputs ("oracles") for llmjp-convert tests.

Usage:
    HF_HUB_OFFLINE=1 python scripts/make_reference.py --out fixtures/reference NAME=DIR [NAME=DIR ...]

DIR is a Hugging Face model directory (config.json, model.safetensors or shards +
model.safetensors.index.json, tokenizer.json, tokenizer_config.json). Llama and Mixtral
architectures with f32/f16/bf16 weights are supported (anything AutoModelForCausalLM loads).

For every NAME it writes
  OUT/NAME.json         model, config, weights_sha256, versions, vocab_size, prompts, logits_file, ...
  OUT/NAME.logits.f32   raw little-endian float32, shape [n_prompts, vocab_size], last-position
                        logits in prompt order
and once per invocation
  OUT/chat_template.json     messages, rendered chat prompt, chat ids, single_ids
  OUT/tokenizer_corpus.json  HF input_ids for every line of fixtures/corpus/*.txt
using the reference tokenizer (--tokenizer, default fixtures/tokenizer, else the first model).

The model runs on CPU in float32 with eager attention; everything is deterministic.
Requirements: scripts/requirements-reference.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Fixed inputs (same for every model). Do not reorder: the logits file is in this order.
# ---------------------------------------------------------------------------------------------

SYSTEM_PROMPT = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
CHAT_MESSAGES = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "自然言語処理とは何か"},
]

# (kind, text); kind "chat" means CHAT_MESSAGES through the chat template (text = rendered).
PROMPTS = [
    ("ja", "自然言語処理とは何か"),
    ("ja", "皿の上に、料理がたくさん盛り付けられています。"),
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("code", "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"),
    ("chat", None),
]

GREEDY_NEW_TOKENS = 16
TOP_K_RECORDED = 5

CORPUS_FILES = ["ja-jcommonsenseqa-2000.txt", "ja-jnli-2000.txt"]

# Expected ids under the LLM-jp v3 tokenizer (from the reference doc).
EXPECTED_SINGLE_IDS = [1, 52757, 75849, 66692, 78455, 99244]
EXPECTED_CHAT_LEN = 38
EXPECTED_CHAT_PREFIX = [1, 46337, 78440]
EXPECTED_CHAT_SUFFIX = [18, 18, 27338, 279, 70147, 28752, 18]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def _is_scalar(x) -> bool:
    return x is None or isinstance(x, (bool, int, float, str))


def dumps_compact(obj, indent: int = 0) -> str:
    """JSON with dicts / lists of containers indented, but lists of scalars on one line.

    Deterministic: dict insertion order is kept (the script builds dicts in a fixed order).
    """
    pad = "  " * indent
    pad1 = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [
            f"{pad1}{json.dumps(str(k), ensure_ascii=False)}: {dumps_compact(v, indent + 1)}"
            for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(_is_scalar(x) for x in obj):
            return json.dumps(list(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        items = [pad1 + dumps_compact(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps_compact(obj) + "\n", encoding="utf-8")
    tmp.replace(path)


def chat_ids(tokenizer) -> list[int]:
    """apply_chat_template(tokenize=True) -> plain list of ints (v4: list; v5: BatchEncoding)."""
    out = tokenizer.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    out = list(out)
    if out and isinstance(out[0], (list, tuple)):
        assert len(out) == 1, "unexpected batched chat template output"
        out = list(out[0])
    assert all(isinstance(i, int) for i in out), f"chat ids are not ints: {out[:5]!r}"
    return out


def chat_rendered(tokenizer) -> str:
    return tokenizer.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=False)


def plain_ids(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text)["input_ids"]]


def check_llmjp_ids(single: list[int], chat: list[int]) -> list[str]:
    """Return a list of mismatch descriptions against the LLM-jp reference doc (empty = all ok)."""
    errs = []
    if single != EXPECTED_SINGLE_IDS:
        errs.append(f"single_ids {single} != {EXPECTED_SINGLE_IDS}")
    if len(chat) != EXPECTED_CHAT_LEN:
        errs.append(f"chat ids length {len(chat)} != {EXPECTED_CHAT_LEN}")
    if chat[: len(EXPECTED_CHAT_PREFIX)] != EXPECTED_CHAT_PREFIX:
        errs.append(f"chat ids prefix {chat[:3]} != {EXPECTED_CHAT_PREFIX}")
    if chat[-len(EXPECTED_CHAT_SUFFIX) :] != EXPECTED_CHAT_SUFFIX:
        errs.append(f"chat ids suffix {chat[-7:]} != {EXPECTED_CHAT_SUFFIX}")
    return errs


def read_lines(path: Path) -> list[str]:
    """Lines split on '\\n' only (not str.splitlines, which also splits on U+2028 etc.)."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_model(path: Path):
    kwargs = dict(attn_implementation="eager", local_files_only=True, low_cpu_mem_usage=True)
    # transformers >= 4.56 prefers `dtype`; older versions only know `torch_dtype`.
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        kwargs["dtype"] = torch.float32
    else:
        kwargs["torch_dtype"] = torch.float32
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True, **kwargs)
    # A reference computed from randomly initialised tensors would be worthless: every tensor
    # in the checkpoint must be used and every parameter must come from the checkpoint.
    problems = {k: v for k, v in (info or {}).items() if v and k != "error_msgs"}
    if info and info.get("error_msgs"):
        problems["error_msgs"] = info["error_msgs"]
    if problems:
        raise SystemExit(f"{path}: checkpoint does not match the model class: {problems}")
    model.to("cpu")
    model.eval()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, f"{name} loaded as {p.dtype}"
    return model


# ---------------------------------------------------------------------------------------------
# Per-model reference
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def last_logits(model, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    return out.logits[0, -1].to(torch.float32)


@torch.inference_mode()
def manual_greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding by full recomputation (no KV cache), never stopping at eos."""
    seq = list(ids)
    new = []
    for _ in range(n):
        t = int(torch.argmax(last_logits(model, seq)).item())
        new.append(t)
        seq.append(t)
    return new


@torch.inference_mode()
def hf_generate(model, ids: list[int], pad_id: int | None, stop_at_eos: bool) -> list[int]:
    x = torch.tensor([ids], dtype=torch.long)
    kwargs = dict(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        num_beams=1,
        max_new_tokens=GREEDY_NEW_TOKENS,
        pad_token_id=pad_id,
        # Neutralise any sampling defaults from generation_config.json.
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
    )
    if not stop_at_eos:
        kwargs["eos_token_id"] = None
    out = model.generate(**kwargs)
    return [int(t) for t in out[0, len(ids) :].tolist()]


def eos_ids(model) -> list[int]:
    e = model.generation_config.eos_token_id
    if e is None:
        e = model.config.eos_token_id
    if e is None:
        return []
    return [int(v) for v in (e if isinstance(e, (list, tuple)) else [e])]


def make_model_reference(name: str, model_dir: Path, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    st_files = sorted(p for p in model_dir.glob("*.safetensors"))
    if not st_files:
        raise SystemExit(f"{model_dir}: no *.safetensors files")
    weights_sha256 = {p.name: sha256_file(p) for p in st_files}

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids(model)[0] if eos_ids(model) else 0
    vocab_size = int(config["vocab_size"])
    eos = eos_ids(model)
    t_load = time.perf_counter() - t0

    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit(f"{model_dir}: tokenizer_config.json has no chat_template")
    single = plain_ids(tokenizer, PROMPTS[0][1])
    chat = chat_ids(tokenizer)
    llmjp_mismatch = check_llmjp_ids(single, chat)

    prompts = []
    logits_rows = []
    warnings = []
    for kind, text in PROMPTS:
        is_chat = kind == "chat"
        if is_chat:
            text = chat_rendered(tokenizer)
            ids = chat
        else:
            ids = plain_ids(tokenizer, text)
        if max(ids) >= vocab_size:
            raise SystemExit(f"{model_dir}: token id {max(ids)} >= vocab_size {vocab_size} "
                             f"(tokenizer and model do not match)")
        logits = last_logits(model, ids)
        assert logits.shape == (vocab_size,), f"logits shape {tuple(logits.shape)} != ({vocab_size},)"
        assert torch.isfinite(logits).all(), f"{name}: non-finite logits for {text!r}"
        row = logits.numpy().astype("<f4", copy=True)
        logits_rows.append(row)
        argmax = int(np.argmax(row))
        top = np.argsort(-row, kind="stable")[:TOP_K_RECORDED]

        greedy = hf_generate(model, ids, pad_id, stop_at_eos=False)
        assert len(greedy) == GREEDY_NEW_TOKENS, f"greedy produced {len(greedy)} tokens"
        assert greedy[0] == argmax, f"greedy[0]={greedy[0]} != argmax={argmax}"
        greedy_eos = hf_generate(model, ids, pad_id, stop_at_eos=True)
        # generate() right-pads nothing for batch size 1; an early stop just ends the list at eos.
        if greedy_eos != greedy[: len(greedy_eos)]:
            warnings.append(f"prompt {len(prompts)}: greedy_eos is not a prefix of greedy")
        manual = manual_greedy(model, ids, GREEDY_NEW_TOKENS)
        if manual != greedy:
            warnings.append(
                f"prompt {len(prompts)}: KV-cache generate {greedy} != no-cache greedy {manual}"
            )

        prompts.append(
            {
                "kind": kind,
                "text": text,
                "chat": is_chat,
                "ids": ids,
                "n_ids": len(ids),
                "argmax": argmax,
                "top5": [[int(i), float(row[i])] for i in top],
                "greedy": greedy,
                "greedy_text": tokenizer.decode(greedy, skip_special_tokens=False),
                "greedy_eos": greedy_eos,
                "greedy_eos_text": tokenizer.decode(greedy_eos, skip_special_tokens=False),
                "greedy_matches_no_cache": manual == greedy,
            }
        )

    logits_arr = np.stack(logits_rows).astype("<f4")
    logits_name = f"{name}.logits.f32"
    logits_bytes = logits_arr.tobytes(order="C")
    (out_dir / logits_name).write_bytes(logits_bytes)

    ref = {
        "model": name,
        "architecture": (config.get("architectures") or [type(model).__name__])[0],
        "config": config,
        "weights_sha256": weights_sha256,
        "versions": versions(),
        "vocab_size": vocab_size,
        "eos_token_ids": eos,
        "greedy_new_tokens": GREEDY_NEW_TOKENS,
        "generation": "greedy (do_sample=False, num_beams=1), CPU float32, eager attention; "
        "'greedy' ignores eos (exactly 16 ids), 'greedy_eos' stops at eos",
        "tokenizer_json_sha256": sha256_file(model_dir / "tokenizer.json")
        if (model_dir / "tokenizer.json").exists()
        else None,
        "llmjp_tokenizer_ids_ok": not llmjp_mismatch,
        "prompts": prompts,
        "logits_file": logits_name,
        "logits_shape": list(logits_arr.shape),
        "logits_dtype": "float32-le",
        "logits_sha256": hashlib.sha256(logits_bytes).hexdigest(),
        "warnings": warnings,
    }
    write_json(out_dir / f"{name}.json", ref)
    dt = time.perf_counter() - t0
    print(f"[{name}] {model_dir}: load {t_load:.1f}s, total {dt:.1f}s, vocab {vocab_size}, "
          f"{len(st_files)} safetensors file(s)")
    if llmjp_mismatch:
        print(f"[{name}] note: tokenizer ids differ from the LLM-jp reference doc: {llmjp_mismatch}")
    for w in warnings:
        print(f"[{name}] WARNING: {w}")
    for i, p in enumerate(prompts):
        print(f"[{name}] prompt {i} ({p['kind']}) argmax={p['argmax']} greedy={p['greedy']}")
        print(f"           greedy text:     {p['greedy_text']!r}")
        print(f"           greedy_eos text: {p['greedy_eos_text']!r}")
    del model
    return ref


# ---------------------------------------------------------------------------------------------
# Shared (tokenizer-only) references
# ---------------------------------------------------------------------------------------------


def make_chat_template_reference(tok_dir: Path, out_dir: Path, strict: bool) -> None:
    tokenizer = load_tokenizer(tok_dir)
    single = plain_ids(tokenizer, PROMPTS[0][1])
    chat = chat_ids(tokenizer)
    errs = check_llmjp_ids(single, chat)
    if errs and strict:
        raise SystemExit(f"{tok_dir}: tokenizer disagrees with the LLM-jp reference doc: {errs}")
    rendered = chat_rendered(tokenizer)
    write_json(
        out_dir / "chat_template.json",
        {
            "tokenizer_json_sha256": sha256_file(tok_dir / "tokenizer.json"),
            "versions": versions(),
            "messages": CHAT_MESSAGES,
            "add_generation_prompt": True,
            "rendered": rendered,
            "ids": chat,
            "single_text": PROMPTS[0][1],
            "single_ids": single,
        },
    )
    print(f"chat_template.json: {len(chat)} chat ids, single_ids={single}")


def make_corpus_reference(tok_dir: Path, corpus_dir: Path, out_dir: Path) -> None:
    tokenizer = load_tokenizer(tok_dir)
    files = {}
    for fname in CORPUS_FILES:
        lines = read_lines(corpus_dir / fname)
        files[fname] = [plain_ids(tokenizer, ln) for ln in lines]
    write_json(
        out_dir / "tokenizer_corpus.json",
        {
            "tokenizer_json_sha256": sha256_file(tok_dir / "tokenizer.json"),
            "versions": versions(),
            "encoding": "tokenizer(line)['input_ids'] (add_special_tokens=True: <s> prepended); "
            "lines split on '\\n', trailing newline dropped",
            "files": files,
        },
    )
    n = sum(len(v) for v in files.values())
    print(f"tokenizer_corpus.json: {n} lines from {len(files)} files")


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output directory (e.g. fixtures/reference)")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="tokenizer dir for chat_template.json / tokenizer_corpus.json "
                         "(default: fixtures/tokenizer if present, else the first model)")
    ap.add_argument("--corpus-dir", type=Path, default=REPO_ROOT / "fixtures" / "corpus")
    ap.add_argument("--no-shared", action="store_true",
                    help="skip chat_template.json and tokenizer_corpus.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("models", nargs="*", metavar="NAME=DIR")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    specs = []
    for m in args.models:
        if "=" not in m:
            ap.error(f"expected NAME=DIR, got {m!r}")
        name, d = m.split("=", 1)
        if not name or "/" in name or name.startswith("."):
            ap.error(f"bad model name {name!r}")
        d = Path(d)
        if not (d / "config.json").is_file():
            ap.error(f"{d}: no config.json")
        specs.append((name, d))
    if not specs and args.no_shared:
        ap.error("nothing to do")

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("versions:", json.dumps(versions()))

    if not args.no_shared:
        tok_dir = args.tokenizer
        if tok_dir is None:
            default = REPO_ROOT / "fixtures" / "tokenizer"
            tok_dir = default if (default / "tokenizer.json").is_file() else (specs[0][1] if specs else None)
        if tok_dir is None:
            ap.error("no tokenizer directory for the shared references")
        make_chat_template_reference(tok_dir, args.out, strict=True)
        make_corpus_reference(tok_dir, args.corpus_dir, args.out)

    for name, d in specs:
        torch.manual_seed(0)
        make_model_reference(name, d, args.out)

    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
