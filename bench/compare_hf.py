#!/usr/bin/env python3
"""bench/compare_hf.py — the same checkpoint in Hugging Face transformers on CPU, timed the
way bench_ds3 times ds3, so `make bench` can print how many times faster ds3 is.

    python bench/compare_hf.py --model DIR [--csv FILE] [--dtype float32|bfloat16]
                               [--threads N] [--runs R] [--steps N]

What runs: transformers' DeepseekV3ForCausalLM built from the checkpoint's config.json with
transformers' default kernels (attention "sdpa", experts "grouped_mm" where it dispatches,
else "eager"; the JSON says which), MTP layers dropped (transformers has no MTP forward),
fp8 weights dequantised exactly with their 128x128 block scales as tools/gen_ref.py does,
then held in --dtype:
    float32   (default) the fair comparison: ds3 computes in float32 too;
    bfloat16  what from_pretrained(dtype="auto") gives a bf16 checkpoint, the way most
              people would run it.
If float32 would not fit in the memory available it falls back to bfloat16 and says so in
the JSON ("dtype"); if bfloat16 would not fit either, it prints {"skipped": ...}.

Measured, with torch.set_num_threads(N) (N = ds3's thread count), after one warm-up each:
    prefill   one forward over 64 tokens, logits for every position (median of R runs)
    decode    single-token forwards with the KV cache after a 16-token prefill; every step
              timed alone, the median of N steps

Token ids are the 64-bit LCG of tools/gen_ref.py (seed 1), the ones bench_ds3 feeds ds3.
Prints one JSON object on stdout. With --csv, appends rows hf_prefill and hf_decode, and,
for every ds3 row of the same measurement already in the CSV (metric prefill at 64 tokens
or decode at context 16, same thread count), a row speedup_vs_hf_f32_* (or _hf_bf16_) =
ds3 / transformers.
"""
import argparse
import csv
import gc
import json
import math
import os
import statistics
import sys
import time

FP8_BLOCK = 128


def lcg_tokens(seed, n, vocab):
    state = seed & 0xFFFFFFFFFFFFFFFF
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((state >> 33) % vocab)
    return out


def mem_available():
    """Bytes the kernel says can be allocated without swapping (None if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mark():
    """(wall s, machine busy CPU s or None, this process's CPU s), as bench/bench.h's bench_mark."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter(), busy, ru.ru_utime + ru.ru_stime


def busy_other(a, b):
    """Cores' worth of CPU everything but this process used between marks a and b."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


def checkpoint_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def load_state(model_dir, cfg, dtype, torch, safe_open):
    """{name: tensor in `dtype`} for the main model, fp8 dequantised with its block scales."""
    L = cfg["num_hidden_layers"]
    state, stored = {}, {}
    for fname in checkpoint_files(model_dir):
        with safe_open(os.path.join(model_dir, fname), framework="pt") as f:
            keys = set(f.keys())
            for name in sorted(keys):
                if name.endswith("_scale_inv"):
                    continue
                parts = name.split(".")
                if len(parts) > 2 and parts[1] == "layers" and int(parts[2]) >= L:
                    continue  # MTP layers
                t = f.get_tensor(name)
                stored[str(t.dtype)] = stored.get(str(t.dtype), 0) + 1
                if t.dtype == torch.float8_e4m3fn:
                    s = f.get_tensor(name + "_scale_inv").float()
                    r, c = t.shape
                    s = s.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:r, :c]
                    t = (t.float() * s).to(dtype)
                else:
                    t = t.to(dtype)
                state[name] = t
    return state, stored


def build_model(model_dir, dtype, torch, transformers, safe_open):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    d = {k: v for k, v in cfg.items() if k not in ("quantization_config", "architectures", "torch_dtype", "dtype")}
    d["rope_interleave"] = True
    for k in ("routed_scaling_factor", "rope_theta"):  # float fields JSON may write as ints
        if isinstance(d.get(k), int):
            d[k] = float(d[k])
    hf_cfg = transformers.DeepseekV3Config(**d)
    state, stored = load_state(model_dir, cfg, dtype, torch, safe_open)
    model, info = transformers.DeepseekV3ForCausalLM.from_pretrained(
        None, config=hf_cfg, state_dict=state, dtype=dtype, output_loading_info=True)
    del state
    # A missing weight would be randomly initialised: same speed, but not the same model.
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        sys.exit(f"compare_hf: the checkpoint does not load cleanly into transformers: {bad}")
    gc.collect()
    return model.eval(), cfg, stored


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--csv")
    ap.add_argument("--name", default="small")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="transformers' compute dtype (bfloat16: what dtype='auto' gives a bf16 checkpoint)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors import safe_open

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)

    # Memory guard: parameters of the main model (no MTP) x bytes, about twice over while
    # the state dict and the model coexist.
    n_params = 0
    for fname in checkpoint_files(args.model):
        with safe_open(os.path.join(args.model, fname), framework="pt") as f:
            for name in f.keys():
                parts = name.split(".")
                if name.endswith("_scale_inv") or (len(parts) > 2 and parts[1] == "layers"
                                                    and int(parts[2]) >= cfg["num_hidden_layers"]):
                    continue
                n_params += math.prod(f.get_slice(name).get_shape())
    avail = mem_available()
    if args.dtype == "bfloat16":
        dtype, note = torch.bfloat16, "bfloat16 (asked for)"
    else:
        dtype, note = torch.float32, "float32 (as ds3 computes)"
    if dtype == torch.float32 and avail is not None and 2.3 * 4 * n_params > avail:
        dtype, note = torch.bfloat16, "bfloat16: float32 would not fit in the memory available"
    if avail is not None and 2.3 * 2 * n_params > avail:
            print(json.dumps({"skipped": f"needs ~{2.3 * 2 * n_params / 1e9:.1f} GB, {avail / 1e9:.1f} GB available"}))
            return 0

    t0 = time.perf_counter()
    model, cfg, stored = build_model(args.model, dtype, torch, transformers, safe_open)
    load_s = time.perf_counter() - t0
    V = cfg["vocab_size"]
    toks = lcg_tokens(1, 64 + args.steps + 2, V)

    res = {
        "model": args.model, "dtype": note, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "experts_implementation": getattr(model.config, "_experts_implementation", None),
        "stored_dtypes": stored, "params_main": n_params, "load_s": round(load_s, 1),
    }

    with torch.inference_mode():
        # prefill: 64 tokens, logits for all of them
        ids = torch.tensor([toks[:64]])
        model(input_ids=ids, use_cache=False)
        times = []
        m0 = mark()
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - t0)
        res["prefill_busy_other"] = busy_other(m0, mark())
        assert out.logits.shape == (1, 64, V)
        res["prefill_64_tok_s"] = [64 / t for t in sorted(times, reverse=True)]

        # decode at context 16
        out = model(input_ids=torch.tensor([toks[:16]]), use_cache=True)
        pkv = out.past_key_values
        steps = []
        for i in range(args.steps + 1):  # the first step is the warm-up
            if i == 1:
                m0 = mark()
            tok = torch.tensor([[toks[16 + i]]])
            t0 = time.perf_counter()
            out = model(input_ids=tok, past_key_values=pkv, use_cache=True)
            dt = time.perf_counter() - t0
            pkv = out.past_key_values
            if i > 0:
                steps.append(dt)
        res["decode_busy_other"] = busy_other(m0, mark())
        res["decode_16_tok_s"] = [1 / t for t in sorted(steps, reverse=True)]

    def summary(v):
        return statistics.median(v), min(v), max(v)

    pre, dec = summary(res["prefill_64_tok_s"]), summary(res["decode_16_tok_s"])
    res["prefill_64_tok_s_median"], res["decode_16_tok_s_median"] = pre[0], dec[0]
    print(json.dumps(res, indent=1))
    sys.stdout.flush()

    if args.csv:
        with open(args.csv) as f:
            rows = list(csv.DictReader(f))
        hf_dtype = "hf-f32" if dtype == torch.float32 else "hf-bf16"
        th = torch.get_num_threads()
        def busy(v):
            return "" if v is None else f"{v:.2f}"
        out_rows = [
            ["hf_prefill", args.name, hf_dtype, th, 64, 0, args.runs, *pre, "tok/s", "", "",
             busy(res["prefill_busy_other"])],
            ["hf_decode", args.name, hf_dtype, th, args.steps, 16, args.steps, *dec, "tok/s", "", "",
             busy(res["decode_busy_other"])],
        ]
        for r in rows:
            if r["model"] != args.name or r["threads"] != str(th):
                continue
            if r["metric"] == "prefill" and r["tokens"] == "64":
                ratio = float(r["value"]) / pre[0]
                out_rows.append([f"speedup_vs_{hf_dtype.replace('-', '_')}_prefill", args.name, r["dtype"], th, 64, 0, 1, ratio, ratio, ratio,
                                 "x", "", "", ""])
            if r["metric"] == "decode" and r["context"] == "16":
                ratio = float(r["value"]) / dec[0]
                out_rows.append([f"speedup_vs_{hf_dtype.replace('-', '_')}_decode", args.name, r["dtype"], th, r["tokens"], 16, 1, ratio, ratio,
                                 ratio, "x", "", "", ""])
                print(f"compare_hf: ds3 {r['dtype']} decodes {ratio:.2f}x as fast as transformers in {hf_dtype[3:]} "
                      f"({float(r['value']):.2f} vs {dec[0]:.2f} tok/s, {th} threads)", file=sys.stderr)
        with open(args.csv, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            for row in out_rows:
                w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
