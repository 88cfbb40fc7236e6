#!/usr/bin/env python3
"""
gen_ref.py — the independent oracle: golden activations for ds3 from Hugging Face
transformers, computed in float64.

What it does (see tools/README.md and ref_data/README.md):
  1. reads a model directory in Hugging Face layout with the ORIGINAL DeepSeek
     tensor names (docs/MODEL.md §1): config.json + model.safetensors (or index + shards);
  2. dequantises every weight to float64 (F8_E4M3 x `_scale_inv` 128x128 block
     scales, BF16/F16/F32 upcast), sets the MTP layers aside, fuses the
     per-expert weights into transformers v5's `gate_up_proj`/`down_proj` and
     loads them into DeepseekV3ForCausalLM / DeepseekV2ForCausalLM built in
     float64 with eager attention, after filling every parameter with NaN so that
     nothing can stay randomly initialised;
  2b. wires the MTP depths (docs/MODEL.md §6) from transformers' own modules, since
     transformers has no MTP forward: DeepseekV3DecoderLayer(config, layer_idx=L+k)
     loaded with model.layers.L+k.*, DeepseekV3RMSNorm for enorm / hnorm /
     shared_head.norm, nn.Linear for eh_proj / shared_head.head, nn.Embedding for
     the layer's embed_tokens (see mtp_forward);
  3. removes every float32 step that transformers keeps inside a float64 model
     (RMSNorm, RoPE tables, attention softmax, router, V2 complex RoPE) by
     patching those functions with float64 copies of the same code, and proves
     the forward pass is float64 throughout with a torch-function audit;
  4. runs a fixed token sequence and writes <case>.safetensors with the logits and
     the per-layer activations captured by forward hooks.

Nothing here derives from ds3's C code: the only inputs are the checkpoint,
transformers, and docs/MODEL.md (for the cross-checks of YaRN and the softmax scale).

Usage:
  gen_ref.py --model DIR --out ref_data/tiny-f32.safetensors --case tiny-f32 \
             --tokens lcg:1:12 --config-name tiny --dtype f32 --seed 1 \
             --mkmodel "ds3 mkmodel --config tiny --dtype f32 --seed 1 -o DIR"
  gen_ref.py --all [--ds3 build/ds3] [--outdir ref_data]
  gen_ref.py --audit --model DIR        (list the float32 steps of unpatched HF)
"""

import argparse
import contextlib
import hashlib
import inspect
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import types
import typing

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as hf_v2
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_v3

F64 = torch.float64
transformers.utils.logging.disable_progress_bar()
FP8_BLOCK = 128

# ============================================================================
# The cases of `--all`: each one is a `ds3 mkmodel` checkpoint plus a token list
# ============================================================================

CASES = [
    dict(case="tiny-f32", model="tiny-f32", tokens="lcg:1:12",
         desc="tiny DeepSeek-V3 shape (sigmoid + noaux_tc routing, q-LoRA, YaRN), F32 weights, 12 tokens"),
    dict(case="tiny-bf16", model="tiny-bf16", tokens="lcg:1:12",
         desc="as tiny-f32 with BF16 weights (upcast exactly to float64)"),
    dict(case="tiny-fp8", model="tiny-fp8", tokens="lcg:1:12",
         desc="as tiny-f32 with F8_E4M3 projections + F32 128x128 block scales (dequantised exactly in float64)"),
    dict(case="tiny-v2", model="tiny-v2", tokens="lcg:1:12",
         desc="tiny DeepSeek-V2-Lite shape (softmax + greedy routing, no q-LoRA, 2 shared experts), "
              "F32 weights, DeepseekV2ForCausalLM, 12 tokens"),
    dict(case="tiny-long", model="tiny-f32", tokens="lcg:1:80",
         desc="tiny-f32 checkpoint, 80 tokens: positions beyond original_max_position_embeddings "
              "(the first 12 tokens are those of tiny-f32)"),
    dict(case="tiny-negbias", model="tiny-negbias", tokens="lcg:1:12",
         desc="tiny, seed 2, every e_score_correction_bias shifted by -4 so every selection score "
              "s + bias is negative: -inf group masking (official, transformers 5.x) and the old "
              "0.0 fill (transformers 4.x) choose different experts; the 0.0-fill choice is stored "
              "as layers.N.moe.topk_idx_zero_fill"),
    dict(case="tiny-mtp2", model="tiny-mtp2", tokens="lcg:1:12",
         desc="tiny with two MTP depths (ref_data/configs/tiny-mtp2.json; the main model is tiny-f32's): "
              "depth 1 reads depth 0's output after its shared_head.norm and the token t[i+2], and "
              "predicts t[i+3]"),
]

# Trained models shipped in the repository (ref_data/models/NAME, tools/train_tiny.py): no mkmodel;
# the tokens are BOS + the prompt encoded by Hugging Face `tokenizers` with the model's tokenizer.json.
# The golden's metadata `model_dir` (relative to ref_data/) tells tests/test_ref.c where the model is.
TRAINED_CASES = [
    dict(case="austen-tiny", model_dir="models/austen-tiny",
         prompt="Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own "
                "amusement, never took up any book but the Baronetage;",
         desc="the trained model (tools/train_tiny.py, docs/TRAINED.md): BF16 weights, no YaRN, the first "
              "sentence of Persuasion (held out from training) after BOS"),
]

# The mkmodel arguments of each model. scripts/make-models.sh is the one place the project
# writes them down (`make-models.sh --args NAME`); this table is the fallback when the
# script is absent, and --all checks that the two agree.
MODEL_ARGS = {
    "tiny-f32": "--config tiny --dtype f32 --seed 1",
    "tiny-bf16": "--config tiny --dtype bf16 --seed 1",
    "tiny-fp8": "--config tiny --dtype fp8 --seed 1",
    "tiny-v2": "--config tiny-v2 --dtype f32 --seed 1",
    "tiny-negbias": "--config tiny --dtype f32 --seed 2 --bias-shift -4",
    "tiny-mtp2": "--config ref_data/configs/tiny-mtp2.json --dtype f32 --seed 1",
}

TOLERANCE_NOTES = (
    "The oracle is float64 end to end (weights dequantised exactly, every float32 step of transformers "
    "removed, see f32_patches). Differences from ds3's f64 build come only from summation order: expect "
    "max |diff| around 1e-13 relative to max|ref|; an f64 comparison at rtol=atol=1e-9 has a wide margin. "
    "The f32 build: f32_drift gives, per tensor, max |HF float32 - HF float64| of this same patched "
    "model run in float32 (rope tables still from float64), a measured scale for the tolerance; "
    "routing indices compare exactly, except where routing_margins shows a near-tie (margin < ~1e-5 for "
    "float32). topk order: descending selection score (s + bias for noaux_tc, s otherwise), ties to the "
    "lowest index."
)

# ============================================================================
# Tokens
# ============================================================================

def lcg_tokens(seed, n, vocab):
    """Deterministic ids: 64-bit LCG (Knuth MMIX constants), token = (state >> 33) % vocab."""
    state = seed & 0xFFFFFFFFFFFFFFFF
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((state >> 33) % vocab)
    return out


def parse_tokens(spec, vocab):
    """'lcg:SEED:N' or a comma-separated list of ids."""
    if spec.startswith("lcg:"):
        _, seed, n = spec.split(":")
        toks = lcg_tokens(int(seed), int(n), vocab)
    else:
        toks = [int(t) for t in spec.split(",") if t.strip()]
    for t in toks:
        if not 0 <= t < vocab:
            sys.exit(f"token {t} out of range [0, {vocab})")
    return toks

# ============================================================================
# Checkpoint reading and dequantisation (docs/MODEL.md §1)
# ============================================================================

def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def checkpoint_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values()))
    return ["model.safetensors"]


def read_tensors(model_dir):
    """All tensors of the checkpoint, as stored (dtype kept)."""
    out = {}
    for name in checkpoint_files(model_dir):
        for k, v in safetensors.torch.load_file(os.path.join(model_dir, name)).items():
            if k in out:
                sys.exit(f"{name}: tensor {k} appears twice in the checkpoint")
            out[k] = v
    return out


def sha256_of(paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def dequant_fp8(q, scale_inv):
    """W[i][j] = e4m3(q[i][j]) * scale_inv[i//128][j//128], exactly, in float64.
    Edge blocks are partial when a dimension is not a multiple of 128."""
    rows, cols = q.shape
    br, bc = math.ceil(rows / FP8_BLOCK), math.ceil(cols / FP8_BLOCK)
    if tuple(scale_inv.shape) != (br, bc):
        raise ValueError(f"scale_inv shape {tuple(scale_inv.shape)}, expected {(br, bc)} for weight {(rows, cols)}")
    s = scale_inv.to(F64).repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:rows, :cols]
    return q.to(F64) * s


def e4m3_by_spec(b):
    """docs/MODEL.md §1's decoding of one e4m3fn byte, independent of torch."""
    sign = -1.0 if b >> 7 else 1.0
    e, m = (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return float("nan")
    if e == 0:
        return sign * m * 2.0 ** -9
    return sign * (1 + m / 8) * 2.0 ** (e - 7)


def self_check_fp8():
    """torch.float8_e4m3fn agrees with docs/MODEL.md §1 on all 256 bytes, and block dequantisation
    handles partial edge blocks."""
    allb = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(F64).tolist()
    for b, v in enumerate(allb):
        ref = e4m3_by_spec(b)
        if not ((math.isnan(ref) and math.isnan(v)) or ref == v):
            raise AssertionError(f"e4m3 byte {b:#04x}: torch {v}, docs/MODEL.md {ref}")
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (300, 200), generator=g, dtype=torch.uint8)
    q[q == 0x7F] = 0
    q[q == 0xFF] = 0
    s = torch.rand(3, 2, generator=g, dtype=torch.float32) + 0.5
    w = dequant_fp8(q.view(torch.float8_e4m3fn), s)
    for i, j in [(0, 0), (127, 127), (128, 128), (299, 199), (256, 0), (5, 150)]:
        ref = e4m3_by_spec(int(q[i, j])) * float(s[i // 128, j // 128])
        if float(w[i, j]) != ref:
            raise AssertionError(f"dequant [{i},{j}]: {float(w[i, j])} != {ref}")


def load_float64_state(model_dir, cfg):
    """Checkpoint -> {original name: float64 tensor} for the main model, and the same for the
    MTP layers L..L+n-1 (docs/MODEL.md §6), which transformers' model class does not hold.
    Returns the main state, a summary of its stored dtypes, and the MTP state."""
    raw = read_tensors(model_dir)
    L = cfg["num_hidden_layers"]
    state, dtypes, mtp_state = {}, {}, {}
    for name, t in raw.items():
        if name.endswith("_scale_inv"):
            if name[: -len("_scale_inv")] not in raw:
                raise ValueError(f"{name} has no weight {name[:-len('_scale_inv')]}")
            continue
        parts = name.split(".")
        into = state
        if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers" and int(parts[2]) >= L:
            into = mtp_state  # MTP layer L..L+n-1: wired by hand below (mtp_forward)
        else:
            dtypes[str(t.dtype).replace("torch.", "")] = dtypes.get(str(t.dtype).replace("torch.", ""), 0) + 1
        if t.dtype == torch.float8_e4m3fn:
            si = raw.get(name + "_scale_inv")
            if si is None:
                raise ValueError(f"{name}: F8_E4M3 weight without {name}_scale_inv")
            w = dequant_fp8(t, si)
        elif t.dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            w = t.to(F64)
        else:
            raise ValueError(f"{name}: unexpected dtype {t.dtype}")
        if not torch.isfinite(w).all():
            raise ValueError(f"{name}: non-finite values after dequantisation")
        into[name] = w
    return state, dtypes, mtp_state


def to_hf_v5_names(state, cfg, layers=None):
    """Fuse mlp.experts.J.{gate,up,down}_proj into transformers v5's
    mlp.experts.gate_up_proj [E, 2*Im, D] (gate rows first: forward does .chunk(2)) and
    mlp.experts.down_proj [E, D, Im]. Every other name is already HF's."""
    E = cfg.get("n_routed_experts") or 0
    out, used = {}, set()
    for i in (range(cfg["num_hidden_layers"]) if layers is None else layers):
        p = f"model.layers.{i}.mlp.experts."
        if p + "0.gate_proj.weight" not in state:
            continue
        gates, ups, downs = [], [], []
        for j in range(E):
            for nm, lst in (("gate_proj", gates), ("up_proj", ups), ("down_proj", downs)):
                key = f"{p}{j}.{nm}.weight"
                if key not in state:
                    raise KeyError(f"missing {key}")
                lst.append(state[key])
                used.add(key)
        out[p + "gate_up_proj"] = torch.stack([torch.cat([g, u], 0) for g, u in zip(gates, ups)])
        out[p + "down_proj"] = torch.stack(downs)
    for k, v in state.items():
        if k not in used:
            out[k] = v
    return out

# ============================================================================
# Building the HF model in float64
# ============================================================================

def hf_classes(model_type):
    if model_type in ("deepseek_v3", "kimi_k2"):
        return transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, hf_v3
    if model_type == "deepseek_v2":
        return transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM, hf_v2
    sys.exit(f"model_type {model_type!r}: no transformers class for it here")


def check_config_supported(cfg):
    """transformers' DeepSeek classes hard-code some choices that config.json may vary; refuse
    the configs they would silently compute differently from docs/MODEL.md §5."""
    mt = cfg["model_type"]
    if cfg.get("moe_layer_freq", 1) != 1:
        sys.exit("moe_layer_freq != 1: transformers makes every layer >= first_k_dense_replace MoE")
    if mt == "deepseek_v2":
        if cfg.get("scoring_func", "softmax") != "softmax":
            sys.exit("deepseek_v2 in transformers always scores with softmax")
        if cfg.get("norm_topk_prob", False):
            sys.exit("deepseek_v2 in transformers never renormalises the top-k weights (norm_topk_prob ignored)")
        if cfg.get("topk_method", "greedy") not in ("greedy", "group_limited_greedy"):
            sys.exit(f"topk_method {cfg.get('topk_method')} not supported by DeepseekV2TopkRouter")
    else:
        if cfg.get("scoring_func", "sigmoid") != "sigmoid" or cfg.get("topk_method", "noaux_tc") != "noaux_tc":
            sys.exit("DeepseekV3TopkRouter always computes sigmoid + noaux_tc")
    if cfg.get("rope_interleave", True) is not True:
        sys.exit("rope_interleave false would rotate (i, i+Dr/2) pairs; DeepSeek checkpoints are interleaved")


def build_hf_config(cfg):
    ConfigCls, _, _ = hf_classes(cfg["model_type"])
    d = dict(cfg)
    d.pop("quantization_config", None)  # weights are dequantised here; no HF quantizer
    d.pop("architectures", None)
    d.pop("auto_map", None)
    d.pop("torch_dtype", None)
    d.pop("dtype", None)
    if ConfigCls is transformers.DeepseekV3Config:
        d["rope_interleave"] = True  # DeepSeek checkpoints store interleaved rope pairs (docs/MODEL.md §3)
    # JSON does not tell 1 from 1.0, but transformers' strict config classes do: a float field
    # written as `1` ("routed_scaling_factor": 1) is refused. Convert such ints.
    hints = {}
    for klass in reversed(ConfigCls.__mro__):
        hints.update({k: t for k, t in getattr(klass, "__annotations__", {}).items() if not isinstance(t, str)})
    for k, v in d.items():
        if type(v) is int and k in hints and float in typing.get_args(hints[k]) + (hints[k],) \
                and int not in typing.get_args(hints[k]) + (hints[k],):
            d[k] = float(v)
    return ConfigCls(**d, attn_implementation="eager", experts_implementation="eager")


def build_model(cfg, state_hf):
    """The HF model in float64 with exactly the checkpoint's weights: every parameter and
    persistent buffer is NaN before loading, load_state_dict is strict, and afterwards
    every one must be finite."""
    _, ModelCls, _ = hf_classes(cfg["model_type"])
    hf_cfg = build_hf_config(cfg)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        model = ModelCls(hf_cfg)
    finally:
        torch.set_default_dtype(prev)
    model = model.to(F64).eval()
    if model.config._attn_implementation != "eager":
        raise AssertionError(f"attn_implementation is {model.config._attn_implementation}")
    if model.config._experts_implementation not in (None, "eager"):
        raise AssertionError(f"experts_implementation is {model.config._experts_implementation}")
    with torch.no_grad():
        for _, t in model.state_dict().items():
            if t.is_floating_point():
                t.fill_(float("nan"))
    missing, unexpected = model.load_state_dict(state_hf, strict=False)
    if missing or unexpected:
        raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            if t.dtype != F64:
                raise AssertionError(f"{name} is {t.dtype} after loading")
            if not torch.isfinite(t).all():
                raise AssertionError(f"{name} was not assigned from the checkpoint (NaN left)")
    return model


def cross_check_hf_loader(model_dir, model):
    """For unquantised checkpoints: transformers' own from_pretrained (with its conversion
    of per-expert weights to fused tensors) must give the very same weights."""
    _, ModelCls, _ = hf_classes(model.config.model_type)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report lists the MTP layers as unexpected
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            ref = ModelCls.from_pretrained(model_dir, config=build_hf_config(read_config(model_dir)),
                                           dtype=F64, attn_implementation="eager")
    finally:
        transformers.logging.set_verbosity(verbosity)
    mine = model.state_dict()
    theirs = ref.state_dict()
    if set(mine) != set(theirs):
        raise AssertionError(f"from_pretrained keys differ: {set(mine) ^ set(theirs)}")
    for k in mine:
        if not torch.equal(mine[k].to(F64), theirs[k].to(F64)):
            raise AssertionError(f"from_pretrained differs on {k}")
    return "transformers from_pretrained gives identical weights (fused experts included)"

# ============================================================================
# MTP depths (docs/MODEL.md §6) from transformers' own modules
# ============================================================================
# transformers has no MTP forward: DeepseekV3ForCausalLM drops layers >= L. The oracle wires
# one from the same building blocks the main model uses, per docs/MODEL.md §6 and nothing else:
#   u      = eh_proj · concat(enorm(Emb(t_{i+1})), hnorm(h_i))      embedding first
#   x      = DeepseekV3DecoderLayer(config, layer_idx=L+k)(u) at positions 0..n-1, causal,
#            with its own (here: no) cache
#   logits = shared_head.head · shared_head.norm(x)
# h_i is RMSNorm_final(h_i), the main model's hidden state after model.norm. Depth k > 0 reads
# depth k-1's output after its shared_head.norm (the choice of docs/MODEL.md, as SGLang; vLLM passes
# the pre-norm output) and the token t_{i+1+k}.

MTP_NAMES = {"enorm.weight": "enorm.weight", "hnorm.weight": "hnorm.weight",
             "eh_proj.weight": "eh_proj.weight", "shared_head.norm.weight": "shared_head_norm.weight",
             "shared_head.head.weight": "shared_head_head.weight", "embed_tokens.weight": "embed_tokens.weight"}


def build_mtp(cfg, model, mtp_state):
    """nn.ModuleList of the MTP depths in float64 with exactly the checkpoint's weights (NaN
    before loading, strict load, finite after), or (None, why not)."""
    L = cfg["num_hidden_layers"]
    present = sorted({int(k.split(".")[2]) for k in mtp_state})
    if not present:
        return None, "the checkpoint has no MTP layers"
    if cfg["model_type"] not in ("deepseek_v3", "kimi_k2"):
        return None, f"MTP layers of a {cfg['model_type']} checkpoint are not wired (only DeepSeek-V3's)"
    n = cfg.get("num_nextn_predict_layers") or 0
    if present != list(range(L, L + n)):
        raise ValueError(f"MTP layers in the checkpoint {present}, config says {n} from {L}")
    fused = to_hf_v5_names(mtp_state, cfg, layers=present)
    D, V, eps = cfg["hidden_size"], cfg["vocab_size"], cfg["rms_norm_eps"]
    depths = nn.ModuleList()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        for i in present:
            d = nn.Module()
            d.block = hf_v3.DeepseekV3DecoderLayer(model.config, layer_idx=i)
            d.enorm = hf_v3.DeepseekV3RMSNorm(D, eps=eps)
            d.hnorm = hf_v3.DeepseekV3RMSNorm(D, eps=eps)
            d.eh_proj = nn.Linear(2 * D, D, bias=False)
            d.shared_head_norm = hf_v3.DeepseekV3RMSNorm(D, eps=eps)
            d.shared_head_head = nn.Linear(D, V, bias=False)
            d.embed_tokens = nn.Embedding(V, D)
            depths.append(d)
    finally:
        torch.set_default_dtype(prev)
    depths = depths.to(F64).eval()
    for i, d in zip(present, depths):
        with torch.no_grad():
            for _, t in d.state_dict().items():
                if t.is_floating_point():
                    t.fill_(float("nan"))
        pre = f"model.layers.{i}."
        sd = {}
        for k, v in fused.items():
            if k.startswith(pre):
                rest = k[len(pre):]
                sd[MTP_NAMES.get(rest, "block." + rest)] = v
        # the released checkpoint repeats the embedding and head under layer L; else the main ones
        sd.setdefault("shared_head_head.weight", model.lm_head.weight.detach().clone())
        sd.setdefault("embed_tokens.weight", model.model.embed_tokens.weight.detach().clone())
        missing, unexpected = d.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise KeyError(f"MTP layer {i}: state dict mismatch: missing {missing}, unexpected {unexpected}")
        for name, t in d.state_dict().items():
            if t.is_floating_point() and (t.dtype != F64 or not torch.isfinite(t).all()):
                raise AssertionError(f"MTP layer {i}: {name} not assigned from the checkpoint or not float64")
    return depths, (f"depths 0..{len(present) - 1} (layers {present}) wired from DeepseekV3DecoderLayer, "
                    "DeepseekV3RMSNorm, nn.Linear and nn.Embedding of transformers/torch")


def mtp_forward(model, mtp, tokens, h_norm, acts, notes, with_zero_fill=False, check_router=True, record=True):
    """Every MTP depth on every row with a target: row i of depth k (i < T-1-k). Writes
    mtp.k.{in, attn.out, ffn.out, out, norm, logits, moe.*} into acts; returns depth 0's logits."""
    T = len(tokens)
    h = h_norm
    first = None
    for k, d in enumerate(mtp):
        n = T - 1 - k
        if n <= 0:
            break
        ids = torch.tensor(tokens[1 + k: 1 + k + n])
        e = d.embed_tokens(ids)
        # docs/MODEL.md §6: the embedding first in the concat
        u = d.eh_proj(torch.cat([d.enorm(e), d.hnorm(h[:n])], dim=-1))[None]
        pos = torch.arange(n)[None]
        pe = model.model.rotary_emb(u, pos)
        mask = create_causal_mask(config=model.config, inputs_embeds=u, attention_mask=None,
                                  past_key_values=None, position_ids=pos)
        pre = f"mtp.{k}"
        hooks = []
        if record:
            def save(name):
                def hook(_mod, _inp, out):
                    t = out[0] if isinstance(out, (tuple, list)) else out
                    acts[name] = t.detach()[0].clone()
                return hook
            hooks.append(d.block.self_attn.register_forward_hook(save(f"{pre}.attn.out")))
            hooks.append(d.block.mlp.register_forward_hook(save(f"{pre}.ffn.out")))
        try:
            with torch.no_grad():
                x = d.block(u, attention_mask=mask, position_ids=pos, position_embeddings=pe)
                normed = d.shared_head_norm(x)[0]
                logits = d.shared_head_head(normed)
        finally:
            for hk in hooks:
                hk.remove()
        if record:
            acts[f"{pre}.in"] = u.detach()[0].clone()
            acts[f"{pre}.out"] = x.detach()[0].clone()
            acts[f"{pre}.norm"] = normed.detach().clone()
            acts[f"{pre}.logits"] = logits.detach().clone()
            if hasattr(d.block.mlp, "gate"):
                capture_router(d.block.mlp.gate, pre, pre, acts, notes, with_zero_fill, check_router)
        if first is None:
            first = logits.detach().clone()
        h = normed  # depth k+1 reads this depth's output after shared_head.norm
    return first

# ============================================================================
# float64 patches: every float32 step of transformers 5.23 in a float64 model
# ============================================================================
# Each entry: (where in transformers, what it does, what the oracle does instead).

F32_STEPS = [
    ("DeepseekV3RMSNorm.forward / DeepseekV2RMSNorm.forward (modeling_deepseek_v3.py:48, "
     "modeling_deepseek_v2.py:167): hidden_states.to(torch.float32) before mean(x^2) and rsqrt",
     "class forward replaced by the same three lines without the cast (float64 in, float64 out)"),
    ("RoPE inverse frequencies: modeling_rope_utils._compute_yarn_parameters (lines 465, 471, 479) "
     "builds inv_freq with dtype=torch.float (float32)",
     "the same transformers function is run with torch.float/torch.float32 mapped to float64 "
     "(a copy of the function object with a torch proxy in its globals); checked against docs/MODEL.md §4"),
    ("DeepseekV3RotaryEmbedding.forward (modeling_deepseek_v3.py:96-101) and "
     "DeepseekV2RotaryEmbedding.forward (modeling_deepseek_v2.py:215-216): position_ids.float() * "
     "inv_freq.float(), cos/sin (V2: torch.polar, complex64) in float32",
     "instance forward replaced: positions and inv_freq in float64, cos/sin (V2: complex128 polar) "
     "in float64, times the same attention_scaling"),
    ("eager_attention_forward (modeling_deepseek_v3.py:254, modeling_deepseek_v2.py:251): "
     "softmax(attn_weights, dtype=torch.float32)",
     "module-level eager_attention_forward replaced by a copy with softmax in the query dtype (float64)"),
    ("DeepseekV3TopkRouter.forward (modeling_deepseek_v3.py:135): F.linear(hidden_states."
     "type(torch.float32), weight.type(torch.float32)); sigmoid, bias, group and top-k selection "
     "and weights all in float32",
     "class forward replaced by a copy of lines 133-158 without the two casts (float64); indices "
     "checked against the unpatched float32 router on the same input"),
    ("DeepseekV2TopkRouter.forward (modeling_deepseek_v2.py:99-100): gate logits in float32, "
     "softmax(dtype=torch.float32)",
     "class forward replaced by a copy of lines 97-116 without the casts (float64)"),
    ("apply_rotary_emb of DeepseekV2 (modeling_deepseek_v2.py:264-265): xq.float()/xk.float() then "
     "view_as_complex -> complex64",
     "module-level apply_rotary_emb replaced by a copy without .float() (complex128)"),
]


def rmsnorm_forward_f64(self, hidden_states):
    # transformers: hidden_states.to(torch.float32) first; here the input dtype is kept.
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states


def eager_attention_forward_f64(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    # Copy of transformers' eager_attention_forward with softmax in the query dtype.
    key_states = hf_v3.repeat_kv(key, module.num_key_value_groups)
    value_states = hf_v3.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.is_floating_point() and attention_mask.dtype != query.dtype:
            raise AssertionError(f"attention mask is {attention_mask.dtype}")
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def v2_apply_rotary_emb_f64(xq, xk, freqs_cis):
    # Copy of DeepseekV2's apply_rotary_emb without .float(): pairs (2j, 2j+1) as complex numbers.
    xq_ = torch.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2).contiguous())
    xk_ = torch.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2).contiguous())
    freqs_cis = freqs_cis.unsqueeze(1).to(xq_.device)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3).type_as(xq)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3).type_as(xk)
    return xq_out, xk_out


def v3_router_forward_f64(self, hidden_states):
    # Copy of DeepseekV3TopkRouter.forward (transformers 5.23, lines 133-158) without the
    # float32 casts of line 135. Intermediates are kept in self._ds3 for the dump.
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    scores = router_logits.sigmoid()
    scores_for_choice = scores + self.e_score_correction_bias
    group_scores = (
        scores_for_choice.view(-1, self.num_group, self.num_experts // self.num_group)
        .topk(2, dim=-1)[0]
        .sum(dim=-1)
    )
    group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    score_mask = (
        group_mask.unsqueeze(-1)
        .expand(-1, self.num_group, self.num_experts // self.num_group)
        .reshape(-1, self.num_experts)
    )
    sel = scores_for_choice
    scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), float("-inf"))
    topk_indices = torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]
    topk_weights = scores.gather(1, topk_indices)
    denominator = None
    if self.norm_topk_prob:
        denominator = topk_weights.sum(dim=-1, keepdim=True) + 1e-20
        topk_weights /= denominator
    topk_weights = topk_weights * self.routed_scaling_factor
    self._ds3 = dict(x=hidden_states, scores=scores, sel=sel, masked_sel=scores_for_choice,
                     score_mask=score_mask.bool(), group_scores=group_scores, topk_group=self.topk_group,
                     idx=topk_indices, weight=topk_weights, denominator=denominator)
    return router_logits, topk_weights, topk_indices


def v2_router_forward_f64(self, hidden_states):
    # Copy of DeepseekV2TopkRouter.forward (transformers 5.23, lines 97-116) without the
    # float32 casts of lines 99-100.
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    scores = router_logits.softmax(dim=-1)
    sel = scores
    group_scores, score_mask = None, torch.ones_like(scores, dtype=torch.bool)
    if self.topk_method == "greedy":
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
    elif self.topk_method == "group_limited_greedy":
        group_scores = scores.view(-1, self.num_group, self.num_experts // self.num_group).max(dim=-1).values
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1)
            .expand(-1, self.num_group, self.num_experts // self.num_group)
            .reshape(-1, self.num_experts)
        ).bool()
        scores = scores.masked_fill(~score_mask, 0.0)
        topk_weights, topk_indices = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
    topk_weights = topk_weights * self.routed_scaling_factor
    self._ds3 = dict(x=hidden_states, scores=sel, sel=sel,
                     masked_sel=sel.masked_fill(~score_mask, float("-inf")), score_mask=score_mask,
                     group_scores=group_scores, topk_group=self.topk_group,
                     idx=topk_indices, weight=topk_weights, denominator=None)
    return router_logits, topk_weights, topk_indices


ORIGINAL = dict(
    v3_rms=hf_v3.DeepseekV3RMSNorm.forward, v2_rms=hf_v2.DeepseekV2RMSNorm.forward,
    v3_attn=hf_v3.eager_attention_forward, v2_attn=hf_v2.eager_attention_forward,
    v3_router=hf_v3.DeepseekV3TopkRouter.forward, v2_router=hf_v2.DeepseekV2TopkRouter.forward,
    v2_rope=hf_v2.apply_rotary_emb,
)


def set_patches(on):
    """Install (on=True) or remove the class/module-level float64 patches."""
    hf_v3.DeepseekV3RMSNorm.forward = rmsnorm_forward_f64 if on else ORIGINAL["v3_rms"]
    hf_v2.DeepseekV2RMSNorm.forward = rmsnorm_forward_f64 if on else ORIGINAL["v2_rms"]
    hf_v3.eager_attention_forward = eager_attention_forward_f64 if on else ORIGINAL["v3_attn"]
    hf_v2.eager_attention_forward = eager_attention_forward_f64 if on else ORIGINAL["v2_attn"]
    hf_v3.DeepseekV3TopkRouter.forward = v3_router_forward_f64 if on else ORIGINAL["v3_router"]
    hf_v2.DeepseekV2TopkRouter.forward = v2_router_forward_f64 if on else ORIGINAL["v2_router"]
    hf_v2.apply_rotary_emb = v2_apply_rotary_emb_f64 if on else ORIGINAL["v2_rope"]


class _TorchF64:
    """Stands in for the `torch` module inside a transformers function so that its
    `torch.float` / `torch.float32` mean float64."""
    float = F64
    float32 = F64

    def __getattr__(self, name):
        return getattr(torch, name)


def call_in_float64(fn, *args, **kwargs):
    """Run a transformers function with its float32 dtype constants mapped to float64."""
    fn = inspect.unwrap(fn)
    g = dict(fn.__globals__)
    g["torch"] = _TorchF64()
    f = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    f.__kwdefaults__ = fn.__kwdefaults__
    return f(*args, **kwargs)


def rope_inv_freq_f64(model):
    """transformers' own rope init function (yarn or default), run in float64."""
    rot = model.model.rotary_emb
    if rot.rope_type == "default":
        fn = type(rot).compute_default_rope_parameters
    else:
        fn = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rot.rope_type]
    inv_freq, attention_scaling = call_in_float64(fn, model.config)
    if inv_freq.dtype != F64:
        raise AssertionError(f"rope init gave {inv_freq.dtype}")
    return inv_freq, float(attention_scaling)


def patch_rotary(model, inv_freq64, attention_scaling):
    rot = model.model.rotary_emb
    rot.inv_freq = inv_freq64.clone()
    rot.original_inv_freq = inv_freq64.clone()
    rot.attention_scaling = attention_scaling
    v2 = isinstance(rot, hf_v2.DeepseekV2RotaryEmbedding)

    @torch.no_grad()
    def forward(x, position_ids):
        freqs = position_ids[..., None].to(F64) * rot.inv_freq.to(F64)
        if v2:  # complex128 e^{i theta}, as DeepseekV2RotaryEmbedding does in complex64
            return torch.polar(torch.ones_like(freqs), freqs) * rot.attention_scaling
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * rot.attention_scaling
        sin = emb.sin() * rot.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    rot.forward = forward

# ============================================================================
# Cross-checks against docs/MODEL.md §3/§4
# ============================================================================

def spec_yarn(cfg):
    """docs/MODEL.md §4, written out independently in float64. Returns (f', low, high)."""
    rs = cfg.get("rope_scaling") or {}
    Dr = cfg["qk_rope_head_dim"]
    base = float(cfg.get("rope_theta", 10000.0))
    j = np.arange(Dr // 2, dtype=np.float64)
    f = base ** (-2.0 * j / Dr)
    if (rs.get("type") or rs.get("rope_type")) != "yarn":
        return f, None, None
    factor = float(rs["factor"])
    L0 = float(rs["original_max_position_embeddings"])

    def corr(r):
        return Dr * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(base))

    low = max(math.floor(corr(float(rs.get("beta_fast", 32)))), 0)
    high = min(math.ceil(corr(float(rs.get("beta_slow", 1)))), Dr - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((j - low) / (high - low), 0.0, 1.0)
    return f / factor * ramp + f * (1 - ramp), low, high


def spec_softmax_scale(cfg):
    """docs/MODEL.md §3: (Dn+Dr)^-0.5 * m^2, m = 0.1*mscale_all_dim*ln(factor) + 1 for yarn."""
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling") or {}
    if (rs.get("type") or rs.get("rope_type")) == "yarn" and rs.get("mscale_all_dim"):
        factor = float(rs["factor"])
        m = 0.1 * float(rs["mscale_all_dim"]) * math.log(factor) + 1.0 if factor > 1 else 1.0
        scale *= m * m
    return scale


def check_rope_and_scale(model, cfg, inv64, attn_scaling):
    """HF float32 inv_freq ~ docs/MODEL.md §4 within float32 rounding; HF-code-in-float64 ~ docs/MODEL.md §4 to double
    rounding; HF softmax scale == docs/MODEL.md §3's. Returns a dict of findings for the metadata."""
    spec, low, high = spec_yarn(cfg)
    hf32 = model.model.rotary_emb.inv_freq.detach().to(F64).numpy()  # as transformers built it
    ours = inv64.numpy()
    rel32 = float(np.max(np.abs(hf32 - spec) / spec))
    rel64 = float(np.max(np.abs(ours - spec) / spec))
    if rel32 > 4 * 2.0 ** -24 * 4:  # a few float32 ulps
        raise AssertionError(f"transformers' float32 inv_freq differs from docs/MODEL.md §4 by {rel32:.3g} (relative)")
    if rel64 > 1e-14:
        raise AssertionError(f"transformers' rope init in float64 differs from docs/MODEL.md §4 by {rel64:.3g}")
    scalings = {float(layer.self_attn.scaling) for layer in model.model.layers}
    if len(scalings) != 1:
        raise AssertionError(f"layers disagree on the softmax scale: {scalings}")
    hf_scale = scalings.pop()
    spec_scale = spec_softmax_scale(cfg)
    if abs(hf_scale - spec_scale) > 1e-15 * spec_scale:
        raise AssertionError(f"softmax scale: transformers {hf_scale!r}, docs/MODEL.md §3 {spec_scale!r}")
    if abs(attn_scaling - 1.0) > 1e-15:
        print(f"  note: rope attention_scaling (cos/sin factor) is {attn_scaling!r}, not 1", file=sys.stderr)
    rs = cfg.get("rope_scaling") or {}
    implicit = (cfg["max_position_embeddings"] / rs["original_max_position_embeddings"]
                if rs.get("original_max_position_embeddings") else None)
    return {
        "yarn_low": low, "yarn_high": high,
        "yarn_factor": rs.get("factor"), "max_pos_over_original_max_pos": implicit,
        "inv_freq_f64": [float(v) for v in ours],
        "inv_freq_hf_f32_max_rel_err_vs_spec": rel32,
        "inv_freq_hf_code_in_f64_max_rel_err_vs_spec": rel64,
        "softmax_scale_hf": hf_scale, "softmax_scale_spec": spec_scale,
        "rope_attention_scaling": attn_scaling,
    }

# ============================================================================
# float32 audit: every torch call of the forward pass whose result is below float64
# ============================================================================

class LowPrecisionAudit(torch.overrides.TorchFunctionMode):
    """Records each torch function whose floating result is float32/16/bf16/complex64,
    with the transformers source line that called it."""

    LOW = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)

    def __init__(self):
        super().__init__()
        self.hits = {}

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(o, torch.Tensor) and o.dtype in self.LOW for o in outs):
            where = "?"
            for fr in inspect.stack(context=0)[1:]:
                if "site-packages" in fr.filename and "torch" + os.sep not in fr.filename:
                    where = f"{fr.filename.split('site-packages' + os.sep)[-1]}:{fr.lineno}"
                    break
                if fr.filename == __file__:
                    where = f"gen_ref.py:{fr.lineno}"
                    break
            key = (where, getattr(func, "__name__", str(func)))
            self.hits[key] = self.hits.get(key, 0) + 1
        return out


def audit(model, tokens, mtp=None):
    """Run the model (and the MTP depths) under LowPrecisionAudit; returns (the hits, the
    logits [T, V], MTP depth 0's logits [T-1, V] or None)."""
    mode = LowPrecisionAudit()
    hn = {}
    hook = model.model.norm.register_forward_hook(lambda _m, _i, o: hn.__setitem__("h", o.detach()[0]))
    try:
        with torch.no_grad(), mode:
            out = model(input_ids=torch.tensor([tokens]), use_cache=False)
            mtp_logits = mtp_forward(model, mtp, tokens, hn["h"], {}, None, record=False) if mtp is not None else None
    finally:
        hook.remove()
    return (sorted(mode.hits.items()), out.logits.detach()[0].to(F64),
            None if mtp_logits is None else mtp_logits.to(F64))

# ============================================================================
# Capture: forward hooks on the HF modules
# ============================================================================

def sort_topk(idx, weight, sel):
    """Order each row's K experts by descending selection score, ties to the lowest index."""
    T, K = idx.shape
    out_i = torch.empty_like(idx)
    out_w = torch.empty_like(weight)
    for t in range(T):
        order = sorted(range(K), key=lambda k: (-float(sel[t, idx[t, k]]), int(idx[t, k])))
        out_i[t] = idx[t, order]
        out_w[t] = weight[t, order]
    return out_i, out_w


def zero_fill_topk(d, K):
    """The OLD transformers rule (4.x DeepseekV3TopkRouter: scores_for_choice.masked_fill(
    ~score_mask.bool(), 0.0)), re-implemented here for comparison only: experts of dropped
    groups get selection score 0.0 instead of -inf. Ties (the many 0.0s) go to the lowest index."""
    zf = d["sel"].masked_fill(~d["score_mask"], 0.0)
    order = torch.sort(zf, dim=-1, descending=True, stable=True)[1]
    return order[:, :K]


def capture_router(gate, i, prefix, acts, notes, with_zero_fill, check_router):
    """The router's choice of one MoE layer (from the patched router's record) as
    <prefix>.moe.*, with its near-tie margins under notes["routing_margins"][i]."""
    d = gate._ds3
    K = d["idx"].shape[1]
    idx, w = sort_topk(d["idx"], d["weight"], d["sel"])
    acts[f"{prefix}.moe.topk_idx"] = idx.to(torch.int32)
    acts[f"{prefix}.moe.topk_weight"] = w
    acts[f"{prefix}.moe.scores"] = d["scores"].clone()
    # near-ties: gap between the K-th and (K+1)-th masked selection score, and between the
    # last kept and first dropped group
    ms = torch.sort(d["masked_sel"], dim=-1, descending=True)[0]
    margin = {"expert_gap_min": float((ms[:, K - 1] - ms[:, K]).min()) if ms.shape[1] > K else None}
    if d["group_scores"] is not None and d["group_scores"].shape[1] > d["topk_group"]:
        gs = torch.sort(d["group_scores"], dim=-1, descending=True)[0]
        margin["group_gap_min"] = float((gs[:, d["topk_group"] - 1] - gs[:, d["topk_group"]]).min())
    notes["routing_margins"][str(i)] = margin
    if margin["expert_gap_min"] is not None and margin["expert_gap_min"] == 0.0:
        raise AssertionError(f"layer {i}: exact tie at the top-K boundary; the expert set is ambiguous")
    if d["denominator"] is not None:
        den = d["denominator"]
        if not torch.equal(den, den - 1e-20):
            raise AssertionError("the router's +1e-20 in the normaliser changed a float64 value")
    if check_router:
        # the unpatched router (float32 casts and all) on the same input picks the same experts
        orig = ORIGINAL["v3_router"] if isinstance(gate, hf_v3.DeepseekV3TopkRouter) else ORIGINAL["v2_router"]
        _, w32, i32 = orig(gate, d["x"])
        gate._ds3 = d
        same = torch.sort(i32, dim=-1)[0].eq(torch.sort(d["idx"], dim=-1)[0]).all(dim=-1)
        notes["router_f32_index_mismatch"] += int((~same).sum())
    if with_zero_fill:
        acts[f"{prefix}.moe.topk_idx_zero_fill"] = zero_fill_topk(d, K).to(torch.int32)


def capture(model, tokens, with_zero_fill=False, check_router=True, mtp=None):
    """Run the model on tokens, then the MTP depths (mtp_forward) if given; return
    {name: tensor} (batch dim dropped) and notes."""
    acts, hooks, notes = {}, [], {"router_f32_index_mismatch": 0, "routing_margins": {}}
    m = model.model

    def save(name):
        def hook(_mod, _inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            acts[name] = t.detach()[0].clone()
        return hook

    hooks.append(m.embed_tokens.register_forward_hook(save("embed")))
    hooks.append(m.norm.register_forward_hook(save("norm")))
    moe_layers = []
    for i, layer in enumerate(m.layers):
        hooks.append(layer.self_attn.register_forward_hook(save(f"layers.{i}.attn.out")))
        hooks.append(layer.mlp.register_forward_hook(save(f"layers.{i}.ffn.out")))
        hooks.append(layer.register_forward_hook(save(f"layers.{i}.out")))
        if hasattr(layer.mlp, "gate"):
            moe_layers.append(i)
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([tokens]), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    acts["logits"] = out.logits.detach()[0].clone()

    for i in moe_layers:
        capture_router(m.layers[i].mlp.gate, i, f"layers.{i}", acts, notes, with_zero_fill, check_router)
    if mtp is not None:
        mtp_forward(model, mtp, tokens, acts["norm"], acts, notes, with_zero_fill, check_router)
    return acts, notes


def f32_drift(model, tokens, acts64, mtp=None):
    """Max |float32 run - float64 run| per tensor for the same patched model: a measured
    scale for the tolerance of ds3's float32 build."""
    m32 = model.float()
    if mtp is not None:
        mtp.float()
    try:
        acts32, notes32 = capture(m32, tokens, check_router=False, mtp=mtp)
    finally:
        model.to(F64)
        if mtp is not None:
            mtp.to(F64)
    drift = {}
    for k, v in acts64.items():
        if k.endswith("zero_fill"):
            continue
        if k.endswith("topk_idx"):
            drift[k + ".rows_differing"] = int((~acts32[k].eq(v).all(dim=-1)).sum())
            continue
        if k in acts32:
            drift[k] = {"max_abs_diff": float((acts32[k].to(F64) - v).abs().max()),
                        "max_abs_ref": float(v.abs().max())}
    return drift

# ============================================================================
# One case
# ============================================================================

def versions():
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def prepare(model_dir):
    cfg = read_config(model_dir)
    check_config_supported(cfg)
    state, dtypes, mtp_state = load_float64_state(model_dir, cfg)
    set_patches(False)
    model = build_model(cfg, to_hf_v5_names(state, cfg))
    mtp, mtp_note = build_mtp(cfg, model, mtp_state)
    return cfg, model, dtypes, mtp, mtp_note


def run_case(model_dir, out_path, case, tokens_spec, meta_extra, zero_fill=None):
    torch.set_num_threads(1)  # bit-reproducible float64 reductions
    self_check_fp8()
    cfg, model, dtypes, mtp, mtp_note = prepare(model_dir)
    vocab = cfg["vocab_size"]
    tokens = parse_tokens(tokens_spec, vocab)
    loader_check = "skipped (quantised checkpoint)"
    if "float8_e4m3fn" not in dtypes:
        loader_check = cross_check_hf_loader(model_dir, model)

    # float64 rope from transformers' own init, checked against docs/MODEL.md §4; then the patches
    inv64, att = rope_inv_freq_f64(model)
    rope_checks = check_rope_and_scale(model, cfg, inv64, att)
    unpatched_hits, unpatched_logits, unpatched_mtp = audit(model, tokens, mtp)
    patch_rotary(model, inv64, att)
    set_patches(True)
    try:
        hits, _, _ = audit(model, tokens, mtp)
        if hits:
            raise AssertionError("float32 steps remain in the patched forward:\n" +
                                 "\n".join(f"  {w} {f} x{n}" for (w, f), n in hits))
        if zero_fill is None:
            zero_fill = cfg.get("model_type") != "deepseek_v2" and meta_extra.get("bias_shift", "0") not in ("0", "0.0")
        acts, notes = capture(model, tokens, with_zero_fill=zero_fill, mtp=mtp)
        drift = f32_drift(model, tokens, acts, mtp)
    finally:
        set_patches(False)

    if zero_fill:
        differ = 0
        for k in list(acts):
            if k.endswith("topk_idx_zero_fill"):
                a = torch.sort(acts[k], -1)[0]
                b = torch.sort(acts[k.replace("_zero_fill", "")], -1)[0]
                differ += int((~a.eq(b).all(-1)).sum())
        notes["zero_fill_rows_differing"] = differ
        if differ == 0:
            raise AssertionError("the 0.0-fill rule selects the same experts as -inf on every row")

    for k, v in acts.items():
        if v.is_floating_point() and v.dtype != F64:
            raise AssertionError(f"{k} is {v.dtype}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise AssertionError(f"{k} has non-finite values")
    if not (len(tokens) * vocab == acts["logits"].numel()):
        raise AssertionError("logits shape")
    # the patches change rounding only: unpatched transformers (float32 steps) stays close
    unpatched_diff = float((unpatched_logits - acts["logits"]).abs().max())
    if unpatched_diff > 1e-3 * float(acts["logits"].abs().max()):
        raise AssertionError(f"patched and unpatched transformers differ by {unpatched_diff} on the logits")
    unpatched_mtp_diff = None
    if unpatched_mtp is not None:
        unpatched_mtp_diff = float((unpatched_mtp - acts["mtp.0.logits"]).abs().max())
        if unpatched_mtp_diff > 1e-3 * float(acts["mtp.0.logits"].abs().max()):
            raise AssertionError(f"patched and unpatched transformers differ by {unpatched_mtp_diff} on mtp.0.logits")

    tensors = {"tokens": torch.tensor(tokens, dtype=torch.int32)}
    tensors.update({k: v.contiguous() for k, v in sorted(acts.items())})
    files = [os.path.join(model_dir, "config.json")] + [os.path.join(model_dir, f) for f in checkpoint_files(model_dir)]
    meta = {
        "generator": "tools/gen_ref.py",
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "case": case,
        "model_type": cfg["model_type"],
        "hf_class": type(model).__name__,
        "compute_dtype": "float64",
        "checkpoint_dtypes": json.dumps(dtypes, sort_keys=True),
        "checkpoint_sha256": sha256_of(files),
        "tokens": ",".join(map(str, tokens)),
        "tokens_rule": tokens_spec + (" (64-bit LCG, state = state*6364136223846793005 + 1442695040888963407, "
                                      "token = (state >> 33) % vocab, state starts at SEED)"
                                      if tokens_spec.startswith("lcg:") else ""),
        "topk_order": "descending selection score (s + e_score_correction_bias for noaux_tc, s for softmax), "
                      "ties to the lowest index; weights permuted with their indices",
        "tolerance": TOLERANCE_NOTES,
        "f32_patches": json.dumps([{"transformers": a, "oracle": b} for a, b in F32_STEPS]),
        "f32_steps_found_unpatched": json.dumps([f"{w} {f} x{n}" for (w, f), n in unpatched_hits]),
        "rope_and_scale_checks": json.dumps(rope_checks),
        "hf_loader_check": loader_check,
        "unpatched_hf_logits_max_abs_diff": repr(unpatched_diff),
        "router_f32_vs_f64_index_rows_differing": str(notes["router_f32_index_mismatch"]),
        "routing_margins": json.dumps(notes["routing_margins"], sort_keys=True),
        "f32_drift": json.dumps(drift, sort_keys=True),
        "mtp": ("not included: " + mtp_note) if mtp is None else (
            "mtp.K.*: " + mtp_note + "; row i of depth K: u = eh_proj(cat(enorm(Emb(t[i+1+K])), "
            "hnorm(H[i]))), H = the main model's output after model.norm (K = 0) or depth K-1's output "
            "after its shared_head.norm (K > 0); x = DeepseekV3DecoderLayer(u) at positions 0..T-2-K with "
            "a causal mask of its own (transformers' create_causal_mask); mtp.K.in = u, "
            "mtp.K.attn.out / ffn.out (hooks), mtp.K.out = x, mtp.K.norm = shared_head.norm(x), "
            "mtp.K.logits = shared_head.head(norm), mtp.K.moe.* from the (patched) router"),
        "unpatched_hf_mtp_logits_max_abs_diff": repr(unpatched_mtp_diff),
    }
    if "zero_fill_rows_differing" in notes:
        meta["zero_fill"] = (
            "layers.N.moe.topk_idx_zero_fill: the experts the OLD transformers (4.x) rule would pick, "
            "scores_for_choice.masked_fill(~score_mask.bool(), 0.0), re-implemented in gen_ref.py for "
            "comparison only (stable order, ties to the lowest index); transformers 5.23 and the official "
            "code mask with -inf, as topk_idx does. Rows whose expert set differs: "
            f"{notes['zero_fill_rows_differing']} (summed over MoE layers)")
    meta.update({f"version_{k}": v for k, v in versions().items()})
    meta.update({k: str(v) for k, v in meta_extra.items()})
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    safetensors.torch.save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_path)
    print(f"{case}: wrote {out_path} ({os.path.getsize(out_path)} bytes, T={len(tokens)}, "
          f"router f32 mismatches {notes['router_f32_index_mismatch']}, "
          f"min expert gap {min([v['expert_gap_min'] for v in notes['routing_margins'].values() if v['expert_gap_min'] is not None] or [float('nan')]):.3g})")
    return tensors, meta

# ============================================================================
# Command line
# ============================================================================

def model_args(name):
    """mkmodel arguments (without -o) of a named model, from scripts/make-models.sh if present."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "make-models.sh")
    if os.path.exists(script):
        got = subprocess.run(["sh", script, "--args", name], check=True, capture_output=True, text=True).stdout.split()
        if got != MODEL_ARGS[name].split():
            print(f"note: make-models.sh says {name} is `{' '.join(got)}`, gen_ref.py's table "
                  f"`{MODEL_ARGS[name]}`; using make-models.sh", file=sys.stderr)
        return got
    return MODEL_ARGS[name].split()


def prompt_tokens(model_dir, text):
    """BOS + the text's ids from Hugging Face tokenizers (the BOS id from tokenizer_config.json)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        bos = json.load(f)["bos_token"]
    bos_id = tok.token_to_id(bos["content"] if isinstance(bos, dict) else bos)
    return [bos_id] + tok.encode(text, add_special_tokens=False).ids


def arg_value(argv, flag, default=""):
    return argv[argv.index(flag) + 1] if flag in argv else default


def run_all(args):
    ds3 = args.ds3
    if not os.access(ds3, os.X_OK):
        sys.exit(f"{ds3}: not an executable; build it with `make` or pass --ds3")
    only = set(args.cases.split(",")) if args.cases else None
    written = {}
    with tempfile.TemporaryDirectory(prefix="ds3-ref-") as tmp:
        made = {}
        for c in CASES:
            if only and c["case"] not in only:
                continue
            margs = model_args(c["model"])
            if c["model"] not in made:
                d = os.path.join(tmp, c["model"])
                argv = [ds3, "mkmodel"] + margs + ["-o", d]
                print("+", shlex.join(argv), flush=True)
                subprocess.run(argv, check=True)
                made[c["model"]] = d
            extra = dict(config_name=arg_value(margs, "--config"), checkpoint_dtype=arg_value(margs, "--dtype"),
                         seed=arg_value(margs, "--seed"), bias_shift=arg_value(margs, "--bias-shift", "0"),
                         mkmodel=shlex.join(["ds3", "mkmodel"] + margs + ["-o", c["model"]]),
                         description=c["desc"])
            out = os.path.join(args.outdir, c["case"] + ".safetensors")
            written[c["case"]], _ = run_case(made[c["model"]], out, c["case"], c["tokens"], extra)
    for c in TRAINED_CASES:
        if only and c["case"] not in only:
            continue
        mdir = os.path.join(args.outdir, c["model_dir"])
        if not os.path.exists(os.path.join(mdir, "config.json")):
            sys.exit(f"{mdir}: no model (tools/train_tiny.py writes it)")
        tokens = prompt_tokens(mdir, c["prompt"])
        extra = dict(model_dir=c["model_dir"], prompt=c["prompt"], description=c["desc"],
                     tokenizer="BOS + tokenizers.Tokenizer.from_file(tokenizer.json).encode(prompt).ids")
        out = os.path.join(args.outdir, c["case"] + ".safetensors")
        written[c["case"]], _ = run_case(mdir, out, c["case"], ",".join(map(str, tokens)), extra)
    # causal attention: the first 12 rows of tiny-long are those of tiny-f32 (to rounding)
    if "tiny-long" in written and "tiny-f32" in written:
        a, b = written["tiny-f32"], written["tiny-long"]
        T = a["tokens"].shape[0]
        assert torch.equal(a["tokens"], b["tokens"][:T])
        worst = max(float((a[k] - b[k][:a[k].shape[0]]).abs().max()) for k in a if a[k].is_floating_point())
        same_idx = all(torch.equal(a[k], b[k][:a[k].shape[0]]) for k in a if k.endswith("topk_idx"))
        print(f"check: tiny-long rows 0..{T - 1} vs tiny-f32: max |diff| {worst:.3g}, "
              f"topk_idx equal: {same_idx}")
        if worst > 1e-10 or not same_idx:
            raise AssertionError("tiny-long's prefix disagrees with tiny-f32")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (HF layout, original DeepSeek names)")
    ap.add_argument("--out", help="output .safetensors")
    ap.add_argument("--case", help="case name stored in the metadata")
    ap.add_argument("--tokens", default="lcg:1:12", help="'lcg:SEED:N' or comma-separated ids (default lcg:1:12)")
    ap.add_argument("--config-name", default="", help="mkmodel config name, for the metadata")
    ap.add_argument("--dtype", default="", help="checkpoint dtype (f32|bf16|fp8), for the metadata")
    ap.add_argument("--seed", default="", help="mkmodel seed, for the metadata")
    ap.add_argument("--bias-shift", default="0", help="mkmodel --bias-shift; non-zero adds topk_idx_zero_fill")
    ap.add_argument("--mkmodel", default="", help="the command that created --model, for the metadata")
    ap.add_argument("--description", default="", help="case description, for the metadata")
    ap.add_argument("--model-dir-meta", default="", help="a shipped model's folder relative to ref_data/, "
                    "for the metadata (tests/test_ref.c loads it from there)")
    ap.add_argument("--zero-fill", action="store_true", help="also store layers.N.moe.topk_idx_zero_fill")
    ap.add_argument("--all", action="store_true", help="run `ds3 mkmodel` and write every case of CASES")
    ap.add_argument("--cases", default="", help="with --all: comma-separated subset of case names")
    ap.add_argument("--ds3", default="build/ds3", help="the ds3 binary for --all (default build/ds3)")
    ap.add_argument("--outdir", default="ref_data", help="output directory for --all (default ref_data)")
    ap.add_argument("--audit", action="store_true", help="print the float32 steps of the unpatched model and exit")
    args = ap.parse_args()

    if args.all:
        return run_all(args)
    if not args.model:
        ap.error("--model is required (or --all)")
    if args.audit:
        torch.set_num_threads(1)
        cfg, model, _, mtp, _ = prepare(args.model)
        toks = parse_tokens(args.tokens, cfg["vocab_size"])
        print("unpatched transformers, float64 model (and MTP): calls with a float32/complex64 result")
        hits0, logits0, _ = audit(model, toks, mtp)
        for (w, f), n in hits0:
            print(f"  {w:60s} {f} x{n}")
        inv64, att = rope_inv_freq_f64(model)
        patch_rotary(model, inv64, att)
        set_patches(True)
        try:
            hits, logits1, _ = audit(model, toks, mtp)
        finally:
            set_patches(False)
        print(f"patched: {len(hits)} such calls; max |logits unpatched - patched| = "
              f"{float((logits0 - logits1).abs().max()):.3g}")
        for (w, f), n in hits:
            print(f"  {w:60s} {f} x{n}")
        return
    if not args.out or not args.case:
        ap.error("--out and --case are required")
    extra = dict(config_name=args.config_name, checkpoint_dtype=args.dtype, seed=args.seed,
                 bias_shift=args.bias_shift, mkmodel=args.mkmodel, description=args.description)
    if args.model_dir_meta:
        extra = dict(model_dir=args.model_dir_meta, description=args.description)
    zf = True if args.zero_fill else None
    run_case(args.model, args.out, args.case, args.tokens, extra, zero_fill=zf)


if __name__ == "__main__":
    main()
