#!/usr/bin/env python3
"""
train_tiny.py — trains a small model of DeepSeek-V3's exact architecture on Jane Austen's six
novels, on the CPU, and exports it as a Hugging Face DeepSeek-V3 checkpoint that ds3 runs
(ref_data/models/austen-tiny/, docs/TRAINED.md).

The architecture is V3's, at toy width: MLA with q-LoRA, a compressed KV latent and decoupled
RoPE (interleaved, as V3's `rope_interleave`); the first layer dense, then DeepSeekMoE layers with
256 routed experts, top-8 over 8 groups keeping 4, one shared expert; sigmoid scores with the
auxiliary-loss-free bias (after every step, each expert's bias moves by +gamma if its load was
below the mean, -gamma if above) plus the small sequence-wise balance loss (alpha); one MTP module
(eh_proj over [enorm(Emb(t_{i+1})) | hnorm(h_i)], a whole MoE decoder layer, its norm and head,
the embedding and head shared with the main model as in the report) trained with the MTP loss,
lambda 0.3 for the first 70% of the steps and 0.1 after (the report: 0.3 for the first 10T tokens
of 14.8T, then 0.1). The forward is written here in plain PyTorch and follows transformers'
DeepseekV3 modules equation by equation (docs/MODEL.md); the shipped goldens come from
transformers itself (tools/gen_ref.py), so any difference would show in make test.

Routed experts are computed densely: all 256 experts' gate/up projections as one matmul, the
SwiGLU output scaled by the router weight (zero for the 248 experts not chosen), one matmul down.
With experts of width 16 this is faster on a CPU than a per-expert loop (--moe-impl loop, measured
in docs/TRAINED.md); both give the same function.

Deterministic given --seed: torch.manual_seed, a fixed thread count, one data order. The same
machine and thread count reproduce the weights bit for bit (--check-repro runs that test).

Usage (the venv of tools/requirements.txt; the corpus from scripts/fetch-corpus.sh):
  sh scripts/fetch-corpus.sh build/corpus
  nice -n 5 .venv/bin/python tools/train_tiny.py --corpus build/corpus --out ref_data/models/austen-tiny
  .venv/bin/python tools/train_tiny.py --corpus build/corpus --steps 20 --check-repro
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import struct
import sys
import time
import zlib

# Under load, OpenMP workers that spin while waiting burn the CPU another process needs (measured:
# 2 spinning threads cost 4x the CPU time of 1 thread per step on the shared 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import nn

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
# DeepSeek-V3's pre-tokenizer regexes (data/tokenizers/deepseek-v3/tokenizer.json), so that ds3's
# tokenizer (which reads exactly this kind) encodes the new vocabulary as HF tokenizers does.
V3_SPLITS = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]
BOOKS_TRAIN = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey"]
BOOKS_HELDOUT = ["persuasion"]

# ============================================================================
# Corpus: the R package janeaustenr as Debian ships it (r-cran-janeaustenr)
# ============================================================================

class _RReader:
    """Just enough of R's XDR serialisation (R Internals §1.8) for character vectors."""

    def __init__(self, b):
        self.b, self.p, self.refs = b, 0, []

    def int(self):
        v = struct.unpack(">i", self.b[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def top(self):
        if self.b[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation")
        self.p = 2
        version = self.int()
        self.int(), self.int()
        if version == 3:
            n = self.int()                # the native encoding's name
            self.p += n
        return self.item()

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t == 254:                      # NILVALUE
            return None
        if t == 255:                      # REFSXP
            return self.refs[(flags >> 8) - 1]
        if t == 1:                        # SYMSXP
            v = ("sym", self.item())
            self.refs.append(v)
            return v
        if t == 9:                        # CHARSXP
            n = self.int()
            if n == -1:
                return None
            v = self.b[self.p:self.p + n].decode("utf-8")
            self.p += n
            return v
        if t == 2:                        # LISTSXP (pairlist)
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car, cdr = self.item(), self.item()
            return [(tag, car)] + (cdr if isinstance(cdr, list) else [])
        if t in (16, 19, 20):             # STRSXP, VECSXP, EXPRSXP
            v = [self.item() for _ in range(self.int())]
        elif t in (10, 13):               # LGLSXP, INTSXP
            n = self.int()
            v = list(struct.unpack(">%di" % n, self.b[self.p:self.p + 4 * n]))
            self.p += 4 * n
        else:
            raise ValueError(f"R type {t} not handled")
        if has_attr:
            return ("attr", v, self.item())
        return v


def read_janeaustenr(corpus_dir):
    """{book: [lines]} from janeaustenr's lazy-load database (data/Rdata.rdx + Rdata.rdb)."""
    d = corpus_dir
    for sub in ("usr/lib/R/site-library/janeaustenr/data", "data", ""):
        if os.path.exists(os.path.join(corpus_dir, sub, "Rdata.rdx")):
            d = os.path.join(corpus_dir, sub)
            break
    else:
        sys.exit(f"{corpus_dir}: no janeaustenr data (Rdata.rdx); run scripts/fetch-corpus.sh {corpus_dir}")
    with open(os.path.join(d, "Rdata.rdx"), "rb") as f:
        index = _RReader(gzip.decompress(f.read())).top()
    variables = index[1][0]               # list(variables = <named list of (offset, length)>, ...)
    names = dict(variables[2])[("sym", "names")]
    with open(os.path.join(d, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    out = {}
    for name, (off, length) in zip(names, variables[1]):
        out[name] = _RReader(zlib.decompress(rdb[off + 4:off + length])).top()
    return out


def book_text(lines):
    """Paragraphs (runs of non-empty lines) joined by spaces, separated by a blank line."""
    paras, cur = [], []
    for ln in lines:
        ln = (ln or "").strip()
        if ln:
            cur.append(ln)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras) + "\n"


def load_corpus(corpus_dir):
    books = read_janeaustenr(corpus_dir)
    train = [book_text(books[b]) for b in BOOKS_TRAIN]
    held = [book_text(books[b]) for b in BOOKS_HELDOUT]
    return train, held

# ============================================================================
# Tokenizer: byte-level BPE with DeepSeek-V3's pre-tokenizer
# ============================================================================

def train_tokenizer(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in V3_SPLITS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def tokenizer_config():
    """BOS/EOS for ds3 and transformers (no chat template: this is not a chat model)."""
    tok = lambda s: {"__type": "AddedToken", "content": s, "lstrip": False, "normalized": True,
                     "rstrip": False, "single_word": False}
    return {"add_bos_token": True, "add_eos_token": False, "bos_token": tok(BOS), "eos_token": tok(EOS),
            "pad_token": tok(EOS), "clean_up_tokenization_spaces": False, "legacy": True,
            "model_max_length": 512, "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": None}

# ============================================================================
# The model: DeepSeek-V3, equation by equation (docs/MODEL.md §2-§6)
# ============================================================================

class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_interleave(x, cos, sin):
    """transformers' apply_rotary_pos_emb_interleave: pairs (x0,x1),(x2,x3).. become halves."""
    b, h, s, d = x.shape
    x = x.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    return x * cos + rotate_half(x) * sin


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H = c["hidden_size"], c["num_attention_heads"]
        self.H, self.dn, self.dr, self.dv = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.C = c["kv_lora_rank"]
        self.q_a_proj = nn.Linear(D, c["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(c["q_lora_rank"], c["rms_norm_eps"])
        self.q_b_proj = nn.Linear(c["q_lora_rank"], H * (self.dn + self.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.C + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.C, c["rms_norm_eps"])
        self.kv_b_proj = nn.Linear(self.C, H * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(H * self.dv, D, bias=False)
        self.scale = (self.dn + self.dr) ** -0.5

    def forward(self, x, cos, sin):
        B, S, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, S, self.H, self.dn + self.dr).transpose(1, 2)
        q_pass, q_rot = q.split([self.dn, self.dr], dim=-1)
        ckv = self.kv_a_proj_with_mqa(x)
        k_pass, k_rot = ckv.split([self.C, self.dr], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(k_pass)).view(B, S, self.H, self.dn + self.dv).transpose(1, 2)
        k_pass, v = kv.split([self.dn, self.dv], dim=-1)
        k_rot = k_rot.view(B, 1, S, self.dr)
        q_rot = apply_rope_interleave(q_rot, cos, sin)
        k_rot = apply_rope_interleave(k_rot, cos, sin).expand(B, self.H, S, self.dr)
        qs = torch.cat((q_pass, q_rot), dim=-1)
        ks = torch.cat((k_pass, k_rot), dim=-1)
        o = F.scaled_dot_product_attention(qs, ks, v, is_causal=True, scale=self.scale)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, self.H * self.dv))


class MLP(nn.Module):
    def __init__(self, D, inter):
        super().__init__()
        self.gate_proj = nn.Linear(D, inter, bias=False)
        self.up_proj = nn.Linear(D, inter, bias=False)
        self.down_proj = nn.Linear(inter, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    def __init__(self, c, impl):
        super().__init__()
        D, E, I = c["hidden_size"], c["n_routed_experts"], c["moe_intermediate_size"]
        self.E, self.I, self.K = E, I, c["num_experts_per_tok"]
        self.n_group, self.topk_group = c["n_group"], c["topk_group"]
        self.scaling = c["routed_scaling_factor"]
        self.impl = impl
        self.gate_weight = nn.Parameter(torch.empty(E, D))
        self.register_buffer("bias", torch.zeros(E))          # e_score_correction_bias: no gradient
        self.w_gate = nn.Parameter(torch.empty(E, I, D))       # experts.e.gate_proj.weight
        self.w_up = nn.Parameter(torch.empty(E, I, D))         # experts.e.up_proj.weight
        self.w_down = nn.Parameter(torch.empty(E, D, I))       # experts.e.down_proj.weight
        self.shared = MLP(D, I * c["n_shared_experts"])
        self.last_load = None
        self.last_bal = None

    def route(self, x):
        """transformers' DeepseekV3TopkRouter + route_tokens_to_experts (noaux_tc)."""
        scores = torch.sigmoid(F.linear(x, self.gate_weight))
        choice = scores.detach() + self.bias
        N = x.shape[0]
        gs = choice.view(N, self.n_group, -1).topk(2, dim=-1)[0].sum(-1)
        gidx = gs.topk(self.topk_group, dim=-1, sorted=False)[1]
        gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
        smask = gmask.unsqueeze(-1).expand(N, self.n_group, self.E // self.n_group).reshape(N, -1)
        masked = choice.masked_fill(smask == 0, float("-inf"))
        idx = masked.topk(self.K, dim=-1, sorted=False)[1]
        w = scores.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.scaling
        return scores, idx, w

    def forward(self, x):
        B, S, D = x.shape
        xf = x.reshape(-1, D)
        scores, idx, w = self.route(xf)
        N = xf.shape[0]
        # load and the sequence-wise balance loss (report eq. 17-20)
        onehot = torch.zeros(N, self.E).scatter_(1, idx, 1.0)
        self.last_load = onehot.sum(0).detach()
        f = onehot.view(B, S, self.E).sum(1) * (self.E / (self.K * S))            # [B, E]
        p = (scores / scores.sum(-1, keepdim=True)).view(B, S, self.E).mean(1)      # [B, E]
        self.last_bal = (f * p).sum(-1).mean()
        if self.impl == "dense":
            dense_w = torch.zeros(N, self.E, dtype=xf.dtype).scatter(1, idx, w)     # [N, E]
            g = xf @ self.w_gate.reshape(-1, D).t()                                 # [N, E*I]
            u = xf @ self.w_up.reshape(-1, D).t()
            h = (F.silu(g) * u).view(N, self.E, self.I) * dense_w.unsqueeze(-1)
            y = h.reshape(N, -1) @ self.w_down.permute(0, 2, 1).reshape(-1, D)     # [N, D]
        elif self.impl == "bmm":
            # sorted by expert, padded to the fullest expert's count, one batched matmul per projection
            flat_e = idx.reshape(-1)
            order = torch.argsort(flat_e, stable=True)
            counts = torch.bincount(flat_e, minlength=self.E)
            cap = int(counts.max())
            offsets = torch.cumsum(counts, 0) - counts
            e_sorted = flat_e[order]
            slot = e_sorted * cap + (torch.arange(order.numel()) - offsets[e_sorted])
            tok = order // self.K
            X = torch.zeros(self.E * cap, D, dtype=xf.dtype).index_copy(0, slot, xf[tok]).view(self.E, cap, D)
            g = torch.bmm(X, self.w_gate.transpose(1, 2))
            u = torch.bmm(X, self.w_up.transpose(1, 2))
            Y = torch.bmm(F.silu(g) * u, self.w_down.transpose(1, 2)).reshape(self.E * cap, D)
            y = torch.zeros_like(xf).index_add(0, tok, Y[slot] * w.reshape(-1)[order].unsqueeze(-1))
        else:
            y = torch.zeros_like(xf)
            flat_e = idx.reshape(-1)
            order = torch.argsort(flat_e, stable=True)
            counts = torch.bincount(flat_e, minlength=self.E).tolist()
            tok = order // self.K
            ww = w.reshape(-1)[order]
            start = 0
            for e, n in enumerate(counts):
                if n == 0:
                    continue
                t = tok[start:start + n]
                xe = xf[t]
                he = F.silu(xe @ self.w_gate[e].t()) * (xe @ self.w_up[e].t())
                y = y.index_add(0, t, (he @ self.w_down[e].t()) * ww[start:start + n, None])
                start += n
        return (y + self.shared(xf)).view(B, S, D)


class Layer(nn.Module):
    def __init__(self, c, dense, impl):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c["hidden_size"], c["intermediate_size"]) if dense else MoE(c, impl)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Tiny(nn.Module):
    def __init__(self, c, impl="dense"):
        super().__init__()
        self.c = c
        D, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
        self.embed = nn.Embedding(V, D)
        self.layers = nn.ModuleList([Layer(c, i < c["first_k_dense_replace"], impl) for i in range(L)])
        self.norm = RMSNorm(D, c["rms_norm_eps"])
        self.lm_head = nn.Linear(D, V, bias=False)
        # MTP depth 0 (layer L): embedding and head shared with the main model while training
        self.enorm = RMSNorm(D, c["rms_norm_eps"])
        self.hnorm = RMSNorm(D, c["rms_norm_eps"])
        self.eh_proj = nn.Linear(2 * D, D, bias=False)
        self.mtp_block = Layer(c, False, impl)
        self.mtp_norm = RMSNorm(D, c["rms_norm_eps"])
        dr = c["qk_rope_head_dim"]
        self.register_buffer("inv_freq", 1.0 / (c["rope_theta"] ** (torch.arange(0, dr, 2, dtype=torch.float64) / dr)))

    def rope(self, S):
        freqs = torch.outer(torch.arange(S, dtype=torch.float64), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().float(), emb.sin().float()

    def moes(self):
        return [l.mlp for l in list(self.layers) + [self.mtp_block] if isinstance(l.mlp, MoE)]

    def forward(self, ids):
        """Main logits [B, S, V] and MTP logits [B, S-1, V] (row i predicts ids[i+2])."""
        B, S = ids.shape
        cos, sin = self.rope(S)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        h = self.norm(x)
        logits = self.lm_head(h)
        u = self.eh_proj(torch.cat((self.enorm(self.embed(ids[:, 1:])), self.hnorm(h[:, :-1])), dim=-1))
        cos1, sin1 = cos[:S - 1], sin[:S - 1]
        m = self.mtp_norm(self.mtp_block(u, cos1, sin1))
        return logits, self.lm_head(m)


def init_weights(model, std):
    for name, p in model.named_parameters():
        if "norm" in name or name.endswith("layernorm.weight"):
            continue
        nn.init.normal_(p, mean=0.0, std=std)

# ============================================================================
# Export: DeepSeek-V3's tensor names (docs/MODEL.md §1), BF16 (bias F32 as V3 stores it)
# ============================================================================

def export_tensors(model):
    c = model.c
    L = c["num_hidden_layers"]
    t = {}

    def layer(prefix, lay):
        t[f"{prefix}.input_layernorm.weight"] = lay.input_layernorm.weight
        a = lay.self_attn
        for n in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"):
            t[f"{prefix}.self_attn.{n}.weight"] = getattr(a, n).weight
        t[f"{prefix}.self_attn.q_a_layernorm.weight"] = a.q_a_layernorm.weight
        t[f"{prefix}.self_attn.kv_a_layernorm.weight"] = a.kv_a_layernorm.weight
        t[f"{prefix}.post_attention_layernorm.weight"] = lay.post_attention_layernorm.weight
        m = lay.mlp
        if isinstance(m, MLP):
            for n in ("gate_proj", "up_proj", "down_proj"):
                t[f"{prefix}.mlp.{n}.weight"] = getattr(m, n).weight
        else:
            t[f"{prefix}.mlp.gate.weight"] = m.gate_weight
            t[f"{prefix}.mlp.gate.e_score_correction_bias"] = m.bias
            for e in range(m.E):
                t[f"{prefix}.mlp.experts.{e}.gate_proj.weight"] = m.w_gate[e]
                t[f"{prefix}.mlp.experts.{e}.up_proj.weight"] = m.w_up[e]
                t[f"{prefix}.mlp.experts.{e}.down_proj.weight"] = m.w_down[e]
            for n in ("gate_proj", "up_proj", "down_proj"):
                t[f"{prefix}.mlp.shared_experts.{n}.weight"] = getattr(m.shared, n).weight

    t["model.embed_tokens.weight"] = model.embed.weight
    for i, lay in enumerate(model.layers):
        layer(f"model.layers.{i}", lay)
    t["model.norm.weight"] = model.norm.weight
    t["lm_head.weight"] = model.lm_head.weight
    p = f"model.layers.{L}"
    layer(p, model.mtp_block)
    t[f"{p}.embed_tokens.weight"] = model.embed.weight
    t[f"{p}.enorm.weight"] = model.enorm.weight
    t[f"{p}.hnorm.weight"] = model.hnorm.weight
    t[f"{p}.eh_proj.weight"] = model.eh_proj.weight
    t[f"{p}.shared_head.norm.weight"] = model.mtp_norm.weight
    t[f"{p}.shared_head.head.weight"] = model.lm_head.weight
    out = {}
    for k, v in t.items():
        v = v.detach().contiguous()
        out[k] = v.float().clone() if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16).clone()
    return out


def hf_config(c, max_pos):
    keys = ["hidden_size", "intermediate_size", "kv_lora_rank", "moe_intermediate_size", "n_group",
            "n_routed_experts", "n_shared_experts", "num_attention_heads", "num_experts_per_tok",
            "num_hidden_layers", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "rms_norm_eps",
            "rope_theta", "routed_scaling_factor", "topk_group", "v_head_dim", "vocab_size",
            "first_k_dense_replace"]
    out = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "attention_bias": False,
           "hidden_act": "silu", "max_position_embeddings": max_pos, "moe_layer_freq": 1,
           "norm_topk_prob": True, "num_key_value_heads": c["num_attention_heads"],
           "num_nextn_predict_layers": 1, "rope_interleave": True, "rope_scaling": None,
           "scoring_func": "sigmoid", "tie_word_embeddings": False, "topk_method": "noaux_tc",
           "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 1, "initializer_range": 0.02}
    for k in keys:
        out[k] = c[k]
    return dict(sorted(out.items()))

# ============================================================================
# Training
# ============================================================================

def default_config(vocab):
    return dict(hidden_size=128, intermediate_size=384, kv_lora_rank=32, q_lora_rank=64,
                qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, num_attention_heads=4,
                num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=256,
                num_experts_per_tok=8, n_group=8, topk_group=4, moe_intermediate_size=16,
                n_shared_experts=1, routed_scaling_factor=2.5, rms_norm_eps=1e-6,
                rope_theta=10000.0, vocab_size=vocab)


def windows(gen, data, n, seq):
    """n windows of seq tokens: BOS then seq-1 consecutive tokens from a random offset."""
    starts = torch.randint(0, len(data) - seq, (n,), generator=gen)
    body = torch.stack([data[s:s + seq - 1] for s in starts.tolist()])
    return torch.cat((torch.zeros(n, 1, dtype=torch.long), body), dim=1)


def losses(model, ids):
    logits, mlog = model(ids)
    V = logits.shape[-1]
    main = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    mtp = F.cross_entropy(mlog[:, :-1].reshape(-1, V), ids[:, 2:].reshape(-1))
    return main, mtp


@torch.no_grad()
def evaluate(model, ids, bs):
    model.eval()
    tot_m = tot_t = 0.0
    loads = [torch.zeros(m.E) for m in model.moes()]
    for i in range(0, len(ids), bs):
        m, t = losses(model, ids[i:i + bs])
        tot_m += m.item() * len(ids[i:i + bs])
        tot_t += t.item() * len(ids[i:i + bs])
        for j, moe in enumerate(model.moes()):
            loads[j] += moe.last_load
    model.train()
    return tot_m / len(ids), tot_t / len(ids), loads


def unigram_ce(train_ids, held_ids, V):
    """Cross-entropy on held-out of the train split's unigram distribution (add-one)."""
    cnt = torch.bincount(train_ids, minlength=V).double() + 1.0
    logp = (cnt / cnt.sum()).log()
    return float(-logp[held_ids].mean())


def sha256_state(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(args, train_ids, held_ids, V, log):
    torch.manual_seed(args.seed)
    c = default_config(V)
    c.update(hidden_size=args.hidden, moe_intermediate_size=args.moe_inter)
    model = Tiny(c, impl=args.moe_impl)
    init_weights(model, 0.02)
    gen = torch.Generator().manual_seed(args.seed + 1)
    hgen = torch.Generator().manual_seed(args.seed + 2)
    held = windows(hgen, held_ids, args.eval_windows, args.seq)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    nparam = sum(p.numel() for p in model.parameters())
    log({"event": "start", "params": nparam, "config": c, "args": vars(args),
         "train_tokens": len(train_ids), "heldout_tokens": len(held_ids), "threads": torch.get_num_threads()})
    hm, ht, loads0 = evaluate(model, held, args.batch)
    log({"event": "eval", "step": 0, "heldout": hm, "heldout_mtp": ht, "load": [l.tolist() for l in loads0]})
    t0 = time.time()
    c0 = time.process_time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup)
        if step > args.warmup:
            frac = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        lam = args.mtp_lambda if step <= 0.7 * args.steps else args.mtp_lambda_late
        ids = windows(gen, train_ids, args.batch, args.seq)
        main, mtp = losses(model, ids)
        bal = sum(m.last_bal for m in model.moes())
        loss = main + lam * mtp + args.alpha * bal
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():                         # auxiliary-loss-free bias update (report §2.1.2)
            for m in model.moes():
                m.bias += args.gamma * torch.sign(m.last_load.mean() - m.last_load)
        if step % args.log_every == 0 or step == 1:
            maxmean = [float(m.last_load.max() / m.last_load.mean()) for m in model.moes()]
            log({"event": "step", "step": step, "loss": main.item(), "mtp": mtp.item(), "bal": bal.item(),
                 "lr": lr, "lambda": lam, "load_max_over_mean": maxmean,
                 "wall_s": round(time.time() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)})
        if step % args.eval_every == 0 or step == args.steps:
            hm, ht, loads = evaluate(model, held, args.batch)
            log({"event": "eval", "step": step, "heldout": hm, "heldout_mtp": ht,
                 "load_max_over_mean": [float(l.max() / l.mean()) for l in loads],
                 "wall_s": round(time.time() - t0, 2)})
    hm, ht, loads = evaluate(model, held, args.batch)
    saved = [m.bias.clone() for m in model.moes()]
    for m in model.moes():
        m.bias.zero_()
    hm0, ht0, loads_nobias = evaluate(model, held, args.batch)
    for m, b in zip(model.moes(), saved):
        m.bias.copy_(b)
    log({"event": "final", "heldout": hm, "heldout_mtp": ht, "load": [l.tolist() for l in loads],
         "heldout_without_bias": hm0, "load_without_bias": [l.tolist() for l in loads_nobias],
         "bias": [b.tolist() for b in saved], "wall_s": round(time.time() - t0, 2),
         "cpu_s": round(time.process_time() - c0, 2), "state_sha256": sha256_state(model)})
    return model, c


ODD_STRINGS = [
    "", " ", "  \n\n  ", "Mr. Darcy's £10,000 a year; 1811, 1814 and 123456789.",
    "\u201cCurly quotes\u201d \u2014 and \u2018single\u2019 ones\u2026", "na\u00efve caf\u00e9, \u00c6sop",
    "UPPER lower MiXeD", "tab\tseparated\r\nCRLF", "<\uff5cbegin\u2581of\u2581sentence\uff5c>inside text",
    "emoji \U0001F600 and CJK \u4e16\u754c", "!!!???...;;;", "   leading and trailing   ",
]


def tokenizer_golden(args):
    """The golden of ref_data/tokenizer/austen-tiny.json, and the whole-corpus check against ds3."""
    import subprocess
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    train_txt, held_txt = load_corpus(args.corpus)
    cases = []
    for books, per in ((held_txt, 40), (train_txt, 4)):
        for b in books:
            paras = [p for p in b.split("\n\n") if p.strip()]
            step = max(1, len(paras) // per)
            cases += [p for p in paras[::step][:per]]
    cases += ODD_STRINGS
    out = {"meta": {"generator": "tools/train_tiny.py --tokenizer-golden",
                    "tokenizer_sha256": hashlib.sha256(open(os.path.join(args.out, "tokenizer.json"), "rb").read()).hexdigest(),
                    "tokenizers": __import__("tokenizers").__version__,
                    "what": "ids = Tokenizer.encode(text, add_special_tokens=False).ids; 40 paragraphs of the held-out "
                            "book, 4 of each training book, odd strings"},
           "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in cases]}
    with open(args.tokenizer_golden, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {args.tokenizer_golden}: {len(cases)} cases, {sum(len(c['ids']) for c in out['cases'])} ids")
    # the whole corpus, book by book: ds3 tokenize against tokenizers
    for name, text in zip(BOOKS_TRAIN + BOOKS_HELDOUT, train_txt + held_txt):
        want = tok.encode(text, add_special_tokens=False).ids
        got = subprocess.run([args.ds3, "tokenize", "-m", args.out], input=text.encode(), capture_output=True,
                             check=True).stdout.decode().strip()
        got = [int(x) for x in got.split(",")] if got else []
        print(f"{name}: {len(text)} chars, {len(want)} ids, ds3 tokenize {'identical' if got == want else 'DIFFERS'}")
        if got != want:
            sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder with janeaustenr (scripts/fetch-corpus.sh)")
    ap.add_argument("--out", help="model folder to write (config.json, model.safetensors, tokenizer.json, ...)")
    ap.add_argument("--log", help="JSON-lines training log (default: OUT/../<name>-train.jsonl or stdout)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--moe-inter", type=int, default=8)
    ap.add_argument("--moe-impl", choices=["bmm", "dense", "loop"], default="dense")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--gamma", type=float, default=0.01, help="bias update speed (report: 0.001 over ~10^5 steps; 0.01 for a 400-step run)")
    ap.add_argument("--alpha", type=float, default=1e-4, help="sequence-wise balance loss weight (report: 0.0001)")
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--mtp-lambda-late", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--check-repro", action="store_true", help="train twice, compare the weights' SHA-256")
    ap.add_argument("--time-step", action="store_true", help="time a few steps of both MoE implementations")
    ap.add_argument("--tokenizer-golden", metavar="JSON",
                    help="with --out naming a trained model: write the tokenizer golden (ids from HF tokenizers on "
                         "corpus paragraphs and odd strings, ref_data/tokenizer/austen-tiny.json) and check every id "
                         "of the whole corpus against `ds3 tokenize` (--ds3), then exit")
    ap.add_argument("--ds3", default="build/ds3", help="the ds3 binary for --tokenizer-golden's whole-corpus check")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tokenizer_golden:
        return tokenizer_golden(args)
    torch.use_deterministic_algorithms(True)

    train_txt, held_txt = load_corpus(args.corpus)
    tok = train_tokenizer(train_txt, args.vocab)
    V = tok.get_vocab_size()
    enc = lambda texts: torch.tensor([i for t in texts for i in tok.encode(t).ids + [1]], dtype=torch.long)
    train_ids, held_ids = enc(train_txt), enc(held_txt)

    logf = open(args.log, "w") if args.log else None

    def log(rec):
        line = json.dumps(rec)
        if logf:
            logf.write(line + "\n")
            logf.flush()
        short = {k: v for k, v in rec.items() if k not in ("load", "load_without_bias", "bias", "config", "args")}
        print(json.dumps(short), flush=True)

    log({"event": "corpus", "train_chars": sum(map(len, train_txt)), "heldout_chars": sum(map(len, held_txt)),
         "train_tokens": len(train_ids), "heldout_tokens": len(held_ids), "vocab": V,
         "unigram_heldout_ce": unigram_ce(train_ids, held_ids, V),
         "corpus_sha256": hashlib.sha256("".join(train_txt + held_txt).encode()).hexdigest()})

    if args.time_step:
        for impl in ("bmm", "dense", "loop")[:2 if args.batch > 4 else 3]:
            torch.manual_seed(0)
            c = default_config(V)
            c.update(hidden_size=args.hidden, moe_intermediate_size=args.moe_inter)
            m = Tiny(c, impl)
            init_weights(m, 0.02)
            g = torch.Generator().manual_seed(0)
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
            ts = []
            for _ in range(4):
                ids = windows(g, train_ids, args.batch, args.seq)
                c0 = time.process_time()
                a, b = losses(m, ids)
                opt.zero_grad()
                (a + 0.3 * b).backward()
                opt.step()
                ts.append(time.process_time() - c0)
            log({"event": "time_step", "impl": impl, "cpu_s_per_step": ts, "batch": args.batch, "seq": args.seq})
        return

    if args.check_repro:
        shas = []
        for _ in range(2):
            model, _ = train(args, train_ids, held_ids, V, log)
            shas.append(sha256_state(model))
        print(json.dumps({"event": "repro", "sha256": shas, "identical": shas[0] == shas[1]}))
        sys.exit(0 if shas[0] == shas[1] else 1)

    model, c = train(args, train_ids, held_ids, V, log)
    if args.out:
        import safetensors.torch
        os.makedirs(args.out, exist_ok=True)
        tensors = export_tensors(model)
        safetensors.torch.save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(hf_config(c, args.max_pos), f, indent=2)
            f.write("\n")
        tok.save(os.path.join(args.out, "tokenizer.json"))
        with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(os.path.join(args.out, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
