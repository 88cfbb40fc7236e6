#!/usr/bin/env python3
"""
measure_trained.py — the measurements of docs/TRAINED.md on the trained model against the random
ones, all through the ds3 binary (numpy + safetensors for the arithmetic). Not part of the tests.

  gaps     the routing margins: per row and MoE layer, the selection scores s + bias, group-limited
           as V3 routes (a group's score is the sum of its top 2; the best 4 groups kept), then
           gap = 8th - 9th selection score among the kept experts (a flip at the top-8 boundary needs
           an error that large) and the 4th - 5th group-score gap (a flip of a whole group); from
           `ds3 dump` of each model on T-token prompts
  mtp      `ds3 run --mtp --draft N` (N = 1, 2, 3) greedy on held-out prompts: drafts accepted, tokens
           per main-model forward, decode speed against plain `run` (1 thread; wall time: on a
           shared machine, read the tokens per forward)
  router   the worked example of docs/ARCHITECTURE.md: what layer 1's router does on one token

Usage:
  .venv/bin/python tools/measure_trained.py --ds3 build/ds3 --model ref_data/models/austen-tiny \\
      --corpus build/corpus --random build/models/tiny-f32,build/models/tiny-bf16 [gaps] [mtp] [router]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def ds3(args, *a, inp=None):
    r = subprocess.run([args.ds3, *a], input=inp, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"ds3 {' '.join(a)}: {r.stderr.decode()}")
    return r.stdout.decode()


def heldout_prompts(corpus, n, words):
    from train_tiny import load_corpus
    _, held = load_corpus(corpus)
    paras = [p for p in held[0].split("\n\n") if len(p.split()) > words + 40]
    step = max(1, len(paras) // n)
    return [" ".join(p.split()[:words]) for p in paras[::step][:n]]


def biases(model_dir):
    from safetensors import safe_open
    out = {}
    with safe_open(os.path.join(model_dir, "model.safetensors"), "np") as f:
        for k in f.keys():
            if k.endswith("e_score_correction_bias"):
                out[int(k.split(".")[2])] = f.get_tensor(k).astype(np.float64)
    return out


def margins(scores, bias, n_group=8, topk_group=4, k=8):
    sel = scores.astype(np.float64) + bias
    T, E = sel.shape
    g = np.sort(sel.reshape(T, n_group, E // n_group), axis=-1)[..., -2:].sum(-1)
    gs = np.sort(g, axis=-1)[:, ::-1]
    group_gap = gs[:, topk_group - 1] - gs[:, topk_group]
    keep = np.argsort(-g, axis=-1, kind="stable")[:, :topk_group]
    mask = np.zeros((T, n_group), bool)
    np.put_along_axis(mask, keep, True, axis=-1)
    s = np.where(np.repeat(mask, E // n_group, axis=-1), sel, -np.inf)
    s = np.sort(s, axis=-1)[:, ::-1]
    return s[:, k - 1] - s[:, k], group_gap


def gaps(args):
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    prompts = heldout_prompts(args.corpus, 8, 60)
    rows = []
    work = tempfile.mkdtemp(prefix="ds3-measure-")
    for mdir in [args.model] + [m for m in args.random.split(",") if m]:
        mc = json.load(open(os.path.join(mdir, "config.json")))
        L = mc["num_hidden_layers"]
        b = biases(mdir)
        all_gap, all_ggap = [], []
        for i, p in enumerate(prompts):
            if mdir == args.model:
                toks = ds3(args, "tokenize", "-m", mdir, "--bos", inp=p.encode()).strip()
            else:   # the random models: ids from a fixed generator, as many as the trained prompt had
                n = len(ds3(args, "tokenize", "-m", args.model, "--bos", inp=p.encode()).strip().split(","))
                rng = np.random.default_rng(i)
                toks = ",".join(map(str, rng.integers(0, mc["vocab_size"], n)))
            out = os.path.join(work, f"d{i}.safetensors")
            ds3(args, "dump", "-m", mdir, "--tokens", toks, "-o", out)
            d = load_file(out)
            for name, v in d.items():
                if not name.endswith("moe.scores"):
                    continue
                layer = int(name.split(".")[1]) if name.startswith("layers.") else L + int(name.split(".")[1])
                gp, gg = margins(v, b[layer], mc["n_group"], mc["topk_group"], mc["num_experts_per_tok"])
                all_gap.append(gp)
                all_ggap.append(gg)
        gp, gg = np.concatenate(all_gap), np.concatenate(all_ggap)
        rec = {"model": mdir, "rows": int(gp.size), "gap_median": float(np.median(gp)),
               "gap_p10": float(np.percentile(gp, 10)), "gap_min": float(gp.min()),
               "gap_lt_1e-3": float((gp < 1e-3).mean()), "gap_lt_1e-4": float((gp < 1e-4).mean()),
               "gap_lt_1e-5": float((gp < 1e-5).mean()),
               "group_gap_median": float(np.median(gg)), "group_gap_lt_1e-4": float((gg < 1e-4).mean())}
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    return rows


def mtp(args):
    prompts = heldout_prompts(args.corpus, args.n_prompts, 12)
    res = {}
    for draft in (0, 1, 2, 3):
        drafted = accepted = rounds = gen = 0
        dec_s = 0.0
        dec_tok = 0
        for p in prompts:
            a = ["run", "-m", args.model, "-p", p, "-n", str(args.n), "--temp", "0", "--ignore-eos", "--json",
                 "--quiet", "-t", "1"]
            if draft:
                a += ["--mtp", "--draft", str(draft)]
            j = json.loads(ds3(args, *a))
            gen += j["n_generated"]
            dec_s += j["decode_s"]
            dec_tok += j["decode_tokens"]
            if draft:
                drafted += j["mtp"]["drafted"]
                accepted += j["mtp"]["accepted"]
                rounds += j["mtp"]["rounds"]
        rec = {"draft": draft, "prompts": len(prompts), "generated": gen, "decode_tok_s": dec_tok / dec_s}
        if draft:
            rec.update(drafted=drafted, accepted=accepted, acceptance=accepted / drafted,
                       tokens_per_forward=gen / rounds)
        res[draft] = rec
        print(json.dumps(rec), flush=True)
    return res


def router(args):
    prompt = args.prompt
    ids = ds3(args, "tokenize", "-m", args.model, "--bos", inp=prompt.encode()).strip()
    work = tempfile.mkdtemp(prefix="ds3-measure-")
    out = os.path.join(work, "r.safetensors")
    ds3(args, "dump", "-m", args.model, "--tokens", ids, "-o", out)
    d = load_file(out)
    toks = ids.split(",")
    b = biases(args.model)
    pos = len(toks) - 1
    piece = ds3(args, "detokenize", "-m", args.model, inp=toks[pos].encode())
    s = d["layers.1.moe.scores"][pos].astype(np.float64)
    sel = s + b[1]
    idx = d["layers.1.moe.topk_idx"][pos]
    w = d["layers.1.moe.topk_weight"][pos]
    g = np.sort(sel.reshape(8, 32), axis=-1)[:, -2:].sum(-1)
    print(f"prompt {prompt!r}: ids {ids}; position {pos}, token {toks[pos]} = {piece!r}")
    print("group scores (sum of the top 2 of s+bias):", " ".join(f"{x:.3f}" for x in g),
          "-> kept", sorted(np.argsort(-g)[:4].tolist()))
    print("expert  group  s=sigmoid   bias      s+bias    weight")
    for e, ww in zip(idx, w):
        print(f"{e:6d}  {e // 32:5d}  {s[e]:.5f}  {b[1][e]:+.5f}  {sel[e]:.5f}  {ww:.5f}")
    gp, gg = margins(s[None], b[1])
    print(f"gap 8th-9th selection score: {gp[0]:.3e}; 4th-5th group: {gg[0]:.3e}")
    order = np.argsort(-s)[:8]
    print("top 8 by s alone (no bias):", order.tolist())
    logits = d["logits"][pos]
    top = np.argsort(-logits)[:5]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    print("next token, top 5:", [(ds3(args, "detokenize", "-m", args.model, inp=str(t).encode()), round(float(p[t]), 3))
                                  for t in top])
    ml = d["mtp.0.logits"][pos - 1]
    top = np.argsort(-ml)[:5]
    p = np.exp(ml - ml.max())
    p /= p.sum()
    print(f"MTP row {pos - 1} (reads h at {pos - 1} and token {toks[pos]}, predicts the token after next), top 5:",
          [(ds3(args, "detokenize", "-m", args.model, inp=str(t).encode()), round(float(p[t]), 3)) for t in top])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["gaps", "mtp", "router"])
    ap.add_argument("--ds3", default="build/ds3")
    ap.add_argument("--model", default="ref_data/models/austen-tiny")
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--random", default="build/models/tiny-f32,build/models/tiny-bf16")
    ap.add_argument("--n-prompts", type=int, default=10)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--prompt", default="It is a truth universally acknowledged")
    args = ap.parse_args()
    for w in args.what:
        {"gaps": gaps, "mtp": mtp, "router": router}[w](args)


if __name__ == "__main__":
    main()
