"""Library checks of `llmjp-convert quantize --type int4|int8` outputs (run by tests/intq_libraries.rs).

  logits  QUANT_DIR IDS.json OURS.f32   transformers (+ compressed-tensors) loads QUANT_DIR on CPU in
                                        f32; its logits for every position of every id sequence must
                                        match ours (raw little-endian f32, sequences concatenated)
                                        to max abs error < 1e-3.
  ints    ORIG_DIR QUANT_DIR INTS_DIR   compressed-tensors' unpack_from_int32 of every weight_packed
                                        (or the int8 weight) equals our integers (INTS_DIR/<name>.i8)
                                        and compressed-tensors' quantize() of the original weight at
                                        our scale; our scale equals its calculate_qparams (min/max per
                                        group); config.json's quantization_config validates.
  gptq-loader GPTQ_DIR IDS.json OURS.f32
                                        transformers + optimum + GPTQModel load GPTQ_DIR on CPU (its
                                        f16 torch kernel); logits within 0.05 of ours, top-1 >= 95%.
  gptq    ORIG_DIR GPTQ_DIR IDS.json OURS.f32
                                        GPTQ v1 dequantized the way its loaders do (shifts along
                                        qweight's rows, zeros = qzeros + 1, scales[g_idx]) into the
                                        original transformers model; logits match ours on GPTQ_DIR.

Usage: check_intq.py JOBS.json, a list of [command, args...] ("!command": a negative control that
must fail). Each check prints one JSON line with
what it measured; the exit status is 1 when any check failed.
"""

import json
import sys

import torch

TOL = 1e-3
# GPTQModel's CPU kernel computes in f16: logits of magnitude ~15 carry ~1e-2 of rounding.
F16_TOL = 0.05


def seqs_and_ours(ids_path, ours_path, vocab):
    seqs = json.load(open(ids_path))
    ours = torch.frombuffer(bytearray(open(ours_path, "rb").read()), dtype=torch.float32)
    n = sum(len(s) for s in seqs)
    assert ours.numel() == n * vocab, f"{ours_path}: {ours.numel()} floats, want {n} x {vocab}"
    return seqs, ours.view(n, vocab)


def position_errs(model, seqs, ours):
    """Max abs logit error at every position of every sequence."""
    errs, row = [], 0
    with torch.no_grad():
        for s in seqs:
            logits = model(torch.tensor([s])).logits[0].float()
            errs += (logits - ours[row : row + len(s)]).abs().amax(dim=-1).tolist()
            row += len(s)
    return errs


def max_err(model, seqs, ours):
    return max(position_errs(model, seqs, ours))


def dequant_f32(quant, base):
    """Our integers times our scales in f32 (what an f32 load of a Linear computes)."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    scale = quant[base + ".weight_scale"].float()
    if base + ".weight_packed" in quant:
        shape = quant[base + ".weight_shape"]
        bits = quant[base + ".weight_packed"].shape[1] * 32 // int(shape[1])
        q = unpack_from_int32(quant[base + ".weight_packed"], bits, shape)
    else:
        q = quant[base + ".weight"]
    n, k = q.shape
    g = k // scale.shape[1]
    return (q.float().view(n, k // g, g) * scale.unsqueeze(-1)).view(n, k)


def f32_experts(model, quant_dir):
    """transformers 5 fuses Mixtral's experts into 3-D parameters that compressed-tensors
    decompresses in the checkpoint's dtype (bf16), whatever dtype was asked for. Check that those
    values are exactly ours rounded to bf16 (so the files were read right), then put ours back in
    f32 so that the logits compare at f32 precision. Returns how many expert weights it checked."""
    params = [(n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point and p.dtype != torch.float32]
    if not params:
        return 0
    quant = load_tensors(quant_dir)
    n_checked = 0
    for name, p in params:
        # model.layers.L.mlp.experts.gate_up_proj [E, 2F, H] = cat(w1, w3); down_proj [E, H, F] = w2.
        assert ".experts." in name, f"{name} is {p.dtype}, not float32"
        prefix = name.split(".mlp.experts.")[0] + ".block_sparse_moe.experts"
        kind = name.rsplit(".", 1)[1]
        fused = []
        for e in range(p.shape[0]):
            w = [f"{prefix}.{e}.w1", f"{prefix}.{e}.w3"] if kind == "gate_up_proj" else [f"{prefix}.{e}.w2"]
            fused.append(torch.cat([dequant_f32(quant, b) for b in w], dim=0))
            n_checked += len(w)
        ours = torch.stack(fused)
        if not torch.equal(ours.to(p.dtype), p.data):
            raise AssertionError(f"{name}: transformers' decompressed experts are not ours")
        p.data = ours
    return n_checked


def cmd_logits(quant_dir, ids_path, ours_path, mode="exact"):
    """mode "exact": every position within TOL. mode "act-quant" (W8A8, int8 activations rounded
    per token at run time): rounding is discontinuous, so an f32 difference of 1e-6 in a value
    that sits on a rounding boundary flips one int8 step, and through the KV cache every later
    position of that sequence may differ. Then at least 20% of positions must still be within TOL
    (without activation quantization on our side none is: measured 0%), all within 0.5."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(quant_dir, dtype=torch.float32)
    model.eval()
    experts = f32_experts(model, quant_dir)
    seqs, ours = seqs_and_ours(ids_path, ours_path, model.config.vocab_size)
    errs = position_errs(model, seqs, ours)
    within = sum(e < TOL for e in errs) / len(errs)
    print(json.dumps({"check": "logits", "mode": mode, "dir": quant_dir, "max_abs_error": max(errs),
                      "positions_within_tol": within, "bf16_experts_checked": experts}))
    if mode == "exact":
        return max(errs) < TOL
    return within >= 0.2 and max(errs) < 0.5


def load_tensors(d):
    import glob
    import os

    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(load_file(f))
    return out


def cmd_ints(orig_dir, quant_dir, ints_dir):
    import os

    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    cfg = json.load(open(os.path.join(quant_dir, "config.json")))["quantization_config"]
    QuantizationConfig.model_validate(cfg)
    wargs = QuantizationArgs.model_validate(cfg["config_groups"]["group_0"]["weights"])
    orig, quant = load_tensors(orig_dir), load_tensors(quant_dir)
    n, bad = 0, []
    for name in sorted(quant):
        if name.endswith(".weight_packed"):
            base = name[: -len(".weight_packed")]
            shape = quant[base + ".weight_shape"]
            q = unpack_from_int32(quant[name], wargs.num_bits, shape)
        elif name.endswith(".weight") and quant[name].dtype == torch.int8:
            base = name[: -len(".weight")]
            q = quant[name]
        else:
            continue
        n += 1
        w, scale = orig[base + ".weight"], quant[base + ".weight_scale"]
        ours = torch.frombuffer(bytearray(open(os.path.join(ints_dir, base + ".i8"), "rb").read()), dtype=torch.int8)
        if not torch.equal(q.flatten(), ours):
            bad.append(f"{base}: unpacked integers differ from ours")
        # The library's own rounding, and its own scale, on the original weight.
        rows, cols = w.shape
        g = cols // scale.shape[1]
        wg = w.reshape(rows, cols // g, g)
        s_lib, _ = calculate_qparams(wg.amin(dim=-1), wg.amax(dim=-1), wargs)
        if not torch.equal(s_lib.to(scale.dtype), scale):
            bad.append(f"{base}: scale differs from calculate_qparams")
        q_lib = quantize(x=w, scale=scale, zero_point=None, args=wargs, dtype=torch.int8)
        if not torch.equal(q_lib, q):
            bad.append(f"{base}: {int((q_lib != q).sum())} integers differ from quantize()")
    print(json.dumps({"check": "ints", "dir": quant_dir, "weights": n, "failures": bad[:5]}))
    return n > 0 and not bad


def gptq_dequant(qweight, qzeros, scales, g_idx, bits):
    """GPTQ v1 as AutoGPTQ's / GPTQModel's torch kernels unpack it."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    mask = (1 << bits) - 1
    zeros = (qzeros.unsqueeze(2) >> shifts.view(1, 1, -1)) & mask
    zeros = zeros.reshape(qzeros.shape[0], -1) + 1  # v1 stores zero - 1
    w = (qweight.unsqueeze(1) >> shifts.view(1, -1, 1)) & mask
    w = w.reshape(qweight.shape[0] * per, qweight.shape[1])
    g = g_idx.long()
    return (scales[g].float() * (w - zeros[g]).float()).t().contiguous()


def cmd_gptq(orig_dir, gptq_dir, ids_path, ours_path):
    import os

    from transformers import AutoModelForCausalLM

    bits = json.load(open(os.path.join(gptq_dir, "config.json")))["quantization_config"]["bits"]
    quant = load_tensors(gptq_dir)
    sd = {}
    for name in quant:
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            sd[base + ".weight"] = gptq_dequant(
                quant[name], quant[base + ".qzeros"], quant[base + ".scales"], quant[base + ".g_idx"], bits
            )
        elif not any(name.endswith(s) for s in (".qzeros", ".scales", ".g_idx")):
            sd[name] = quant[name].float()
    # Load through the model's own checkpoint conversion (transformers 5 fuses Mixtral experts).
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        cfg = json.load(open(os.path.join(orig_dir, "config.json")))
        json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        model.eval()
        seqs, ours = seqs_and_ours(ids_path, ours_path, model.config.vocab_size)
        err = max_err(model, seqs, ours)
    n = sum(1 for k in quant if k.endswith(".qweight"))
    print(json.dumps({"check": "gptq", "dir": gptq_dir, "weights": n, "max_abs_error": err}))
    return n > 0 and err < TOL


def cmd_gptq_loader(gptq_dir, ids_path, ours_path):
    """transformers' own GPTQ path (optimum + GPTQModel's CPU torch kernel, which runs in f16
    only): logits within F16_TOL of ours (f32), same argmax at >= 95% of positions."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gptq_dir, dtype=torch.float16, device_map="cpu")
    model.eval()
    kernel = type(model.model.layers[0].self_attn.q_proj)
    assert "gptqmodel" in kernel.__module__, f"q_proj is {kernel}, not a GPTQ kernel"
    seqs, ours = seqs_and_ours(ids_path, ours_path, model.config.vocab_size)
    errs, agree, row = [], 0, 0
    with torch.no_grad():
        for s in seqs:
            logits = model(torch.tensor([s])).logits[0].float()
            mine = ours[row : row + len(s)]
            errs.append((logits - mine).abs().max().item())
            agree += (logits.argmax(-1) == mine.argmax(-1)).sum().item()
            row += len(s)
    top1 = agree / row
    print(json.dumps({"check": "gptq-loader", "dir": gptq_dir, "kernel": kernel.__name__,
                      "max_abs_error_f16": max(errs), "top1_agreement": top1}))
    return max(errs) < F16_TOL and top1 >= 0.95


if __name__ == "__main__":
    # One process for many checks (importing torch and transformers takes seconds):
    # argv[1] is a JSON list of [command, args...].
    # A command prefixed with "!" is a negative control: it must fail.
    cmds = {"logits": cmd_logits, "ints": cmd_ints, "gptq": cmd_gptq, "gptq-loader": cmd_gptq_loader}
    failed = 0
    for cmd, *args in json.load(open(sys.argv[1])):
        want = not cmd.startswith("!")
        try:
            ok = cmds[cmd.lstrip("!")](*args)
        except Exception as e:  # a loader that refuses our files is a failed check
            print(json.dumps({"check": cmd, "args": args, "error": repr(e)[:2000]}))
            ok = False
        if ok != want:
            print(f"FAILED: {cmd} {args}", file=sys.stderr)
            failed += 1
    sys.exit(1 if failed else 0)
