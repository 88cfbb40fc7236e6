#!/usr/bin/env python3
"""
dump_torch.py — run a DeepSeek-V3/V2 checkpoint in Hugging Face transformers, on any
device and in any dtype, and write the activations with exactly ds3's dump names
(docs/DUMP_FORMAT.md), so that `ds3 compare` can hold them against `ds3 dump`.

    # on the GPU machine
    python tools/dump_torch.py --model DIR --tokens 1,2,3,4 --device cuda --dtype bfloat16 -o gpu.safetensors
    # on the CPU, with ds3
    ds3 dump -m DIR --tokens 1,2,3,4 -o ref.safetensors
    ds3 compare ref.safetensors gpu.safetensors --profile bf16

The model is loaded with tools/gen_ref.py's functions (the same checkpoint reading:
F8_E4M3 weights dequantised with their 128x128 block scales, experts fused into
transformers v5's layout, every parameter NaN-filled before a strict load), then
converted the way `from_pretrained(dtype=...)` holds a model: parameters in --dtype,
e_score_correction_bias and the RoPE inverse frequencies in float32. For checkpoints
without FP8 weights this is checked against transformers' own from_pretrained.
Unlike gen_ref.py, nothing is patched: this is transformers as a user runs it, with
its float32 router, RMSNorm and softmax inside a bfloat16 model.

Captured with forward hooks (row i = position i, batch dimension dropped):
  embed, layers.N.attn.out, layers.N.ffn.out, layers.N.out, norm, logits — in --dtype;
  layers.N.moe.topk_idx (I32), .topk_weight, .scores (F32: transformers' router is
  float32) — topk sorted by descending selection score as ds3 orders them;
  mtp.K.* when tools/gen_ref.py can wire the checkpoint's MTP layers (transformers has
  no MTP forward of its own): mtp.K.in, .attn.out, .ffn.out, .out, .norm, .logits, .moe.*.

--fp8-act adds the official w8a8 path (inference/model.py with gemm_impl "fp8") on
top: inputs of the linears whose checkpoint weights are F8_E4M3 quantised to e4m3 per
row in blocks of 128 (amax/448, --ue8m0 for power-of-two scales) and multiplied with
the exact FP8 weights; the router and lm_head stay as they are (BF16 weights).

Metadata: generator, command, versions, device, dtype, tokens, model_dir,
checkpoint_sha256, attn_implementation, fp8_act.
"""

import argparse
import os
import platform
import shlex
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_ref  # noqa: E402  (the checkpoint loader and the HF classes)

import safetensors.torch  # noqa: E402
import transformers  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


# ============================================================================
# Loading
# ============================================================================

def load(model_dir, dtype, device, attn_impl, fp8_exact=False):
    """The model (and its MTP depths, or None) in `dtype` on `device`, held as
    from_pretrained(dtype=...) would hold it. fp8_exact: also return
    {id of a parameter that was F8_E4M3 in the checkpoint: its exact float64 value}."""
    got = gen_ref.prepare(model_dir)
    cfg, model, dtypes = got[0], got[1], got[2]
    mtp = got[3] if len(got) > 3 else None
    mtp_note = got[4] if len(got) > 4 else "this tools/gen_ref.py has no MTP wiring"
    if attn_impl != "eager":
        model.config._attn_implementation = attn_impl
    exact = {}
    if fp8_exact:
        names = f8_param_names(model_dir, cfg)
        for root, prefix in ((model, ""), (mtp, "mtp.")):
            if root is None:
                continue
            for n, p in root.named_parameters():
                if prefix + n in names:
                    exact[id(p)] = p.detach().clone()
    keep32 = keep_float32(model, mtp)
    model.to(dtype)
    if mtp is not None:
        mtp.to(dtype)
    restore_float32(keep32)
    model.to(device).eval()
    if mtp is not None:
        mtp.to(device).eval()
    return cfg, model, dtypes, mtp, mtp_note, exact


def f8_param_names(model_dir, cfg):
    """Names of the parameters (the model's, and "mtp.K.…" for the MTP depths as
    gen_ref.build_mtp names them) whose checkpoint weights are F8_E4M3."""
    import json
    import re
    import struct
    L = cfg["num_hidden_layers"]
    out = set()
    for f in gen_ref.checkpoint_files(model_dir):
        with open(os.path.join(model_dir, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F8_E4M3":
                continue
            hf = re.sub(r"mlp\.experts\.\d+\.(gate|up)_proj\.weight$", "mlp.experts.gate_up_proj", name)
            hf = re.sub(r"mlp\.experts\.\d+\.down_proj\.weight$", "mlp.experts.down_proj", hf)
            m = re.match(r"model\.layers\.(\d+)\.(.*)$", hf)
            if m and int(m.group(1)) >= L:
                rest = m.group(2)
                out.add(f"mtp.{int(m.group(1)) - L}." + getattr(gen_ref, "MTP_NAMES", {}).get(rest, "block." + rest))
            else:
                out.add(hf)
    return out


def install_fp8_act(model, mtp, exact, ue8m0):
    """The official w8a8 path (DeepSeek-V3 inference/model.py, gemm_impl "fp8") on top
    of transformers: every linear whose weight was F8_E4M3 in the checkpoint quantises
    its input per row in blocks of 128 columns (s = amax/448 in float32, ue8m0: the next
    power of two; x -> float8_e4m3fn(x/s)·s) and multiplies it with the exact weight
    (FP8 times its block scale, float64) — fp8_gemm's product — rounding the result to
    the input's dtype. Written in torch, independently of ds3's C code. Returns a
    function that removes the patch."""
    by_storage = {}
    for root in (model, mtp):
        if root is None:
            continue
        for p in root.parameters():
            if id(p) in exact:
                by_storage[p.untyped_storage().data_ptr()] = exact[id(p)].to(p.device)
    orig = torch.nn.functional.linear

    def act_quant(x):
        xf = x.float()
        n = xf.shape[-1]
        out = torch.empty_like(xf, dtype=torch.float64)
        for c0 in range(0, n, 128):
            blk = xf[..., c0:c0 + 128]
            amax = blk.abs().amax(dim=-1, keepdim=True)
            sc = amax / 448.0
            if ue8m0:
                sc = torch.where(sc > 0, torch.exp2(torch.ceil(torch.log2(sc))), sc)
            safe = torch.where(sc > 0, sc, torch.ones_like(sc))
            q = (blk / safe).to(torch.float8_e4m3fn).to(torch.float32)
            out[..., c0:c0 + 128] = torch.where(sc > 0, q.double() * safe.double(), torch.zeros_like(blk).double())
        return out

    def linear(x, w, b=None):
        full = by_storage.get(w.untyped_storage().data_ptr())
        if full is None:
            return orig(x, w, b)
        we = torch.as_strided(full, w.shape, w.stride(), w.storage_offset())
        y = orig(act_quant(x), we)
        if b is not None:
            y = y + b.double()
        return y.to(x.dtype)

    torch.nn.functional.linear = linear

    def remove():
        torch.nn.functional.linear = orig
    return remove


def keep_float32(model, mtp):
    """The tensors from_pretrained keeps in float32 in a model of another dtype: the
    router's e_score_correction_bias (_keep_in_fp32_modules_strict) and the RoPE inverse
    frequencies (computed in float32 at construction, never cast). Returns
    [(module, attribute, float32 copy)]."""
    out = []
    mods = list(model.modules()) + (list(mtp.modules()) if mtp is not None else [])
    for mod in mods:
        for name in ("e_score_correction_bias", "inv_freq", "original_inv_freq"):
            t = getattr(mod, name, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                out.append((mod, name, t.detach().to(torch.float32).clone()))
    return out


def restore_float32(saved):
    for mod, name, t in saved:
        cur = getattr(mod, name)
        if isinstance(cur, torch.nn.Parameter):
            cur.data = t
        else:
            setattr(mod, name, t)  # a registered buffer stays registered


def check_against_from_pretrained(model_dir, model, dtype):
    """Unquantised checkpoints: transformers' own from_pretrained(dtype=...) gives the
    same parameters and buffers, bit for bit and dtype for dtype."""
    cfg = gen_ref.read_config(model_dir)
    _, ModelCls, _ = gen_ref.hf_classes(cfg["model_type"])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        ref = ModelCls.from_pretrained(model_dir, config=gen_ref.build_hf_config(cfg), dtype=dtype,
                                       attn_implementation="eager")
    finally:
        transformers.logging.set_verbosity(verbosity)
    mine = dict(model.named_parameters())
    mine.update(dict(model.named_buffers()))
    mine["model.rotary_emb.inv_freq"] = model.model.rotary_emb.inv_freq
    theirs = dict(ref.named_parameters())
    theirs.update(dict(ref.named_buffers()))
    theirs["model.rotary_emb.inv_freq"] = ref.model.rotary_emb.inv_freq
    for k, t in theirs.items():
        if k not in mine:
            raise AssertionError(f"from_pretrained has {k}, this loader does not")
        a = mine[k].detach().cpu()
        if a.dtype != t.dtype or not torch.equal(a, t.detach().cpu()):
            raise AssertionError(f"{k}: {a.dtype} here, {t.dtype} from from_pretrained, or values differ")
    return f"from_pretrained(dtype={dtype}) gives identical parameters and buffers"


# ============================================================================
# Capture
# ============================================================================

class Capture:
    """Forward hooks that store activations under ds3's names."""

    def __init__(self):
        self.acts, self.hooks = {}, []

    def save(self, module, name, batch=True):
        def hook(_mod, _inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            self.acts[name] = (t[0] if batch else t).detach().clone()
        self.hooks.append(module.register_forward_hook(hook))

    def router(self, gate, prefix):
        """transformers' routers return (router_logits, topk_weights, topk_indices), all
        computed in float32; the scores are recomputed from the logits with the very op the
        router used, and the K choices sorted by selection score as ds3 does."""
        v3 = isinstance(gate, gen_ref.hf_v3.DeepseekV3TopkRouter)

        def hook(_mod, _inp, out):
            logits, w, idx = out
            scores = logits.sigmoid() if v3 else logits.softmax(dim=-1, dtype=torch.float32)
            sel = scores + gate.e_score_correction_bias if v3 else scores
            i, ww = gen_ref.sort_topk(idx.detach().cpu(), w.detach().cpu(), sel.detach().cpu())
            self.acts[f"{prefix}.moe.topk_idx"] = i.to(torch.int32)
            self.acts[f"{prefix}.moe.topk_weight"] = ww
            self.acts[f"{prefix}.moe.scores"] = scores.detach().clone()
        self.hooks.append(gate.register_forward_hook(hook))

    def remove(self):
        for h in self.hooks:
            h.remove()
        self.hooks = []


def run(model, mtp, tokens, device):
    cap = Capture()
    m = model.model
    cap.save(m.embed_tokens, "embed")
    cap.save(m.norm, "norm")
    for i, layer in enumerate(m.layers):
        cap.save(layer.self_attn, f"layers.{i}.attn.out")
        cap.save(layer.mlp, f"layers.{i}.ffn.out")
        cap.save(layer, f"layers.{i}.out")
        if hasattr(layer.mlp, "gate"):
            cap.router(layer.mlp.gate, f"layers.{i}")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([tokens], device=device), use_cache=False)
    finally:
        cap.remove()
    cap.acts["logits"] = out.logits.detach()[0].clone()

    if mtp is not None and hasattr(gen_ref, "mtp_forward"):
        # gen_ref.mtp_forward wires each depth from transformers' decoder layer (docs/MODEL.md §6);
        # run it unrecorded and take the activations with hooks here. It makes its index
        # tensors with torch.tensor/arange, so the default device is set for the call.
        for k, d in enumerate(mtp):
            pre = f"mtp.{k}"
            cap.save(d.eh_proj, f"{pre}.in", batch=False)
            cap.save(d.block.self_attn, f"{pre}.attn.out")
            cap.save(d.block.mlp, f"{pre}.ffn.out")
            cap.save(d.block, f"{pre}.out")
            cap.save(d.shared_head_norm, f"{pre}.norm")
            cap.save(d.shared_head_head, f"{pre}.logits", batch=False)
            if hasattr(d.block.mlp, "gate"):
                cap.router(d.block.mlp.gate, pre)
        notes = {"router_f32_index_mismatch": 0, "routing_margins": {}}
        try:
            with torch.device(device):
                gen_ref.mtp_forward(model, mtp, tokens, cap.acts["norm"], {}, notes, check_router=False,
                                    record=False)
        finally:
            cap.remove()
    return cap.acts


# ============================================================================
# Command line
# ============================================================================

def device_name(device):
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (HF layout, original DeepSeek names)")
    ap.add_argument("--tokens", required=True, help="comma-separated ids, or lcg:SEED:N (gen_ref.py's rule)")
    ap.add_argument("-o", "--out", required=True, help="output .safetensors")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps … (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default float32)")
    ap.add_argument("--attn-impl", default="eager", choices=["eager", "sdpa"],
                    help="transformers attention implementation (default eager)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--no-mtp", action="store_true", help="leave out the mtp.K.* tensors")
    ap.add_argument("--fp8-act", action="store_true",
                    help="the official w8a8 path: FP8 (e4m3, per-128 amax/448) inputs and exact weights for the "
                         "linears whose checkpoint weights are F8_E4M3")
    ap.add_argument("--ue8m0", action="store_true", help="with --fp8-act: power-of-two activation scales")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="extra metadata (repeatable), e.g. what a test should run against this dump")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if args.ue8m0 and not args.fp8_act:
        ap.error("--ue8m0 needs --fp8-act")
    cfg, model, dtypes, mtp, mtp_note, exact = load(args.model, dtype, device, args.attn_impl, args.fp8_act)
    if args.no_mtp:
        mtp, mtp_note = None, "left out (--no-mtp)"
    if args.fp8_act and not exact:
        sys.exit("--fp8-act: the checkpoint has no F8_E4M3 weights")
    loader_check = "skipped (quantised checkpoint)"
    if "float8_e4m3fn" not in dtypes and device.type == "cpu":
        loader_check = check_against_from_pretrained(args.model, model, dtype)

    tokens = gen_ref.parse_tokens(args.tokens, cfg["vocab_size"])
    remove = install_fp8_act(model, mtp, exact, args.ue8m0) if args.fp8_act else None
    try:
        acts = run(model, mtp, tokens, device)
    finally:
        if remove:
            remove()

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in acts.items()}
    files = [os.path.join(args.model, "config.json")] + [os.path.join(args.model, f)
                                                         for f in gen_ref.checkpoint_files(args.model)]
    meta = {
        "generator": "tools/dump_torch.py",
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "model_dir": args.model,
        "checkpoint_sha256": gen_ref.sha256_of(files),
        "checkpoint_dtypes": ",".join(f"{k}:{v}" for k, v in sorted(dtypes.items())),
        "tokens": ",".join(map(str, tokens)),
        "device": device_name(device),
        "dtype": args.dtype,
        "hf_class": type(model).__name__,
        "attn_implementation": model.config._attn_implementation,
        "loader_check": loader_check,
        "fp8_act": ("official w8a8: inputs of F8_E4M3 linears quantised per 128 (amax/448"
                    + (", ue8m0" if args.ue8m0 else "") + "), exact FP8 weights") if args.fp8_act else "no",
        "mtp": mtp_note if mtp is not None else f"absent: {mtp_note}",
        "names": "docs/DUMP_FORMAT.md; topk sorted by descending selection score, weights permuted with them",
    }
    meta.update({f"version_{k}": v for k, v in gen_ref.versions().items()})
    for kv in args.meta:
        k, sep, v = kv.partition("=")
        if not sep or not k or k.startswith("ds3_") or k in meta:
            ap.error(f"--meta {kv!r}: want KEY=VALUE with a new key not starting with ds3_")
        meta[k] = v
    if device.type == "cuda":
        meta["version_cuda"] = str(torch.version.cuda)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    safetensors.torch.save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"dump_torch: wrote {args.out} ({len(tensors)} tensors, T={len(tokens)}, {args.dtype} on {device})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
