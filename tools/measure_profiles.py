#!/usr/bin/env python3
"""
measure_profiles.py — the measurements behind `ds3 compare`'s tolerance profiles
(docs/COMPARING.md, "Profiles"). Not part of the build or the tests.

For each synthetic checkpoint and prompt it writes
  ds3.safetensors       `ds3 dump` (plain fp32, absorbed attention: the reference a user makes)
  hf-float32            transformers in float32               -> the fp32 profile
  hf-bfloat16           transformers in bfloat16               -> the bf16 profile
  hf-fp8act             bfloat16 + the official w8a8 path      -> the fp8 profile (FP8 checkpoints)
  emu-bf16, emu-fp8     ds3 dump --emulate bf16 / fp8, for --emulated-cases (checkpoints too
                        large for transformers' float64 loader on the machine at hand)
(tools/dump_torch.py, on the CPU: the stand-ins for GPU builds of each kind), runs
`ds3 compare --json REF=ds3 TEST=hf-…` and prints, per kind, the worst value of each
statistic a profile bounds, over every tensor of every case, and which tensor it was:

  max_scaled  max|t-r|/max|r|       min_cos     cosine similarity     max_nmse  NMSE
  min_idx     rows with the same expert set / rows (topk_idx)
  min_overlap mean share of a row's K experts that both chose (topk_idx)
  min_argmax  rows with the same argmax / rows        min_top5  mean top-5 overlap (logits)

    python tools/measure_profiles.py --ds3 build/ds3 --models build/models --work /tmp/profiles \\
        [--cases tiny-f32,tiny-bf16,...] [--prompts lcg:1:12,lcg:2:32,lcg:3:64] [--json out.json]
        [--replay]

--replay measures `ds3 replay -m MODEL TEST --json` on the same builds instead: the replay
profiles (each layer from the build's own inputs; docs/COMPARING.md, "Replay").

Dumps are cached in --work (delete it to start again).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {"hf-float32": ["--dtype", "float32"], "hf-bfloat16": ["--dtype", "bfloat16"],
         "hf-fp8act": ["--dtype", "bfloat16", "--fp8-act"]}
# Checkpoints too large for transformers here (its loader holds a float64 copy):
# ds3 --emulate stands in for the build (docs/COMPARING.md: it tracks transformers'
# bf16 and fp8 runs far more closely than the plain forward does).
EMULATED = {"emu-bf16": "bf16", "emu-fp8": "fp8"}
PROFILE_OF = {"hf-float32": "fp32", "hf-bfloat16": "bf16", "hf-fp8act": "fp8", "emu-bf16": "bf16",
              "emu-fp8": "fp8"}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return r


def is_fp8(model_dir):
    for f in os.listdir(model_dir):
        if f.endswith(".safetensors"):
            with open(os.path.join(model_dir, f), "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if b'"F8_E4M3"' in fh.read(n):
                    return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ds3", default="build/ds3")
    ap.add_argument("--models", default="build/models")
    ap.add_argument("--work", required=True, help="directory for the dumps (cached)")
    ap.add_argument("--cases", default="tiny-f32,tiny-bf16,tiny-fp8,tiny-v2,tiny-negbias")
    ap.add_argument("--prompts", default="lcg:1:12,lcg:2:32,lcg:3:64",
                    help="comma-separated prompts: lcg:SEED:N, or ids as 1|2|3")
    ap.add_argument("--emulated-cases", default="",
                    help="checkpoints measured against ds3 --emulate bf16 / fp8 instead of transformers")
    ap.add_argument("--python", default=sys.executable, help="Python with torch and transformers")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write every case's statistics here")
    ap.add_argument("--replay", action="store_true",
                    help="measure `ds3 replay -m MODEL TEST` (the replay profiles) instead of `ds3 compare REF TEST`")
    args = ap.parse_args()

    def check(mdir, ref, out, kind):
        if args.replay:
            return run([args.ds3, "replay", "-m", mdir, out, "--json", "--profile", PROFILE_OF[kind]])
        return run([args.ds3, "compare", ref, out, "--json", "--profile", PROFILE_OF[kind]])

    rows = []
    for case in filter(None, args.cases.split(",")):
        mdir = os.path.join(args.models, case)
        kinds = [k for k in KINDS if k != "hf-fp8act" or is_fp8(mdir)]
        for prompt in args.prompts.split(","):
            d = os.path.join(args.work, case, prompt.replace(":", "_"))
            os.makedirs(d, exist_ok=True)
            ref = os.path.join(d, "ds3.safetensors")
            hf0 = None
            for kind in kinds:
                out = os.path.join(d, kind + ".safetensors")
                if not os.path.exists(out):
                    cmd = [args.python, os.path.join(HERE, "dump_torch.py"), "--model", mdir, "--tokens", prompt.replace("|", ","),
                           "-o", out] + KINDS[kind]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    print(f"[{case} {prompt}] {kind}", file=sys.stderr, flush=True)
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode:
                        sys.exit(f"{' '.join(cmd)}:\n{r.stderr}")
                hf0 = hf0 or out
            if not os.path.exists(ref):
                # the token ids transformers saw (dump_torch.py expands lcg:SEED:N)
                run([args.ds3, "dump", "-m", mdir, "--tokens", read_meta(hf0)["tokens"], "-o", ref])
            for kind in kinds:
                out = os.path.join(d, kind + ".safetensors")
                j = json.loads(check(mdir, ref, out, kind).stdout)
                rows.append({"case": case, "prompt": prompt, "kind": kind, "T": len(read_meta(out)["tokens"].split(",")),
                             "tensors": j["tensors"]})

    for case in filter(None, args.emulated_cases.split(",")):
        mdir = os.path.join(args.models, case)
        with open(os.path.join(mdir, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        for prompt in args.prompts.split(","):
            d = os.path.join(args.work, case, prompt.replace(":", "_"))
            os.makedirs(d, exist_ok=True)
            toks = ",".join(map(str, parse_tokens(prompt, vocab)))
            ref = os.path.join(d, "ds3.safetensors")
            if not os.path.exists(ref):
                run([args.ds3, "dump", "-m", mdir, "--tokens", toks, "-o", ref])
            for kind, mode in EMULATED.items():
                if mode == "fp8" and not is_fp8(mdir):
                    continue
                out = os.path.join(d, kind + ".safetensors")
                if not os.path.exists(out):
                    print(f"[{case} {prompt}] {kind}", file=sys.stderr, flush=True)
                    run([args.ds3, "dump", "-m", mdir, "--tokens", toks, "--emulate", mode, "-o", out])
                j = json.loads(check(mdir, ref, out, kind).stdout)
                rows.append({"case": case, "prompt": prompt, "kind": kind, "T": len(toks.split(",")),
                             "tensors": j["tensors"]})

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    report(rows)


def parse_tokens(spec, vocab):
    """lcg:SEED:N as tools/gen_ref.py expands it (64-bit LCG, MMIX constants), without importing
    torch; or a list "1|2|3" (prompts are comma-separated)."""
    if not spec.startswith("lcg:"):
        return [int(t) for t in spec.split("|")]
    _, seed, n = spec.split(":")
    state, out = int(seed) & 0xFFFFFFFFFFFFFFFF, []
    for _ in range(int(n)):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((state >> 33) % vocab)
    return out


def read_meta(path):
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(n)).get("__metadata__", {})


def report(rows):
    """Worst value of each bounded statistic per kind (and where)."""
    for kind in PROFILE_OF:
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        worst = {"max_scaled": (0, ""), "min_cos": (1, ""), "max_nmse": (0, ""), "min_idx": (1, ""), "min_overlap": (1, ""),
                 "min_argmax": (1, ""), "min_top5": (1, "")}
        excluded = 0
        total_rows = 0
        for r in rs:
            where = f"{r['case']} {r['prompt']}"
            for t in r["tensors"]:
                nm = f"{where} {t['name']}"
                excluded = max(excluded, t.get("rows_excluded", 0))
                if t["kind"] == "float":
                    if t["scaled"] > worst["max_scaled"][0]:
                        worst["max_scaled"] = (t["scaled"], nm)
                    if t["cos"] < worst["min_cos"][0]:
                        worst["min_cos"] = (t["cos"], nm)
                    if t["nmse"] > worst["max_nmse"][0]:
                        worst["max_nmse"] = (t["nmse"], nm)
                    if "argmax_same" in t and t["rows"] > 0:
                        a = t["argmax_same"] / t["rows"]
                        if a < worst["min_argmax"][0]:
                            worst["min_argmax"] = (a, f"{nm} ({t['argmax_same']}/{t['rows']}, "
                                                      f"{t['argmax_near_tie']} near ties)")
                        if t["top5_overlap"] < worst["min_top5"][0]:
                            worst["min_top5"] = (t["top5_overlap"], nm)
                elif t["kind"] == "index" and t["rows"] > 0:
                    a = t["rows_same"] / t["rows"]
                    total_rows += t["rows"]
                    if a < worst["min_idx"][0]:
                        worst["min_idx"] = (a, f"{nm} ({t['rows_same']}/{t['rows']})")
                    if t["overlap"] < worst["min_overlap"][0]:
                        worst["min_overlap"] = (t["overlap"], f"{nm} ({t['rows']} rows)")
        print(f"## {kind} ({len(rs)} cases; profile {PROFILE_OF[kind]})")
        for k, (v, nm) in worst.items():
            print(f"  {k:<11} {v:.12g}   {nm}")
        print(f"  most rows left out of one tensor (routing differed upstream): {excluded}")


if __name__ == "__main__":
    main()
