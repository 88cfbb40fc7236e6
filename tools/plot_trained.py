#!/usr/bin/env python3
"""
plot_trained.py — the PNGs of docs/TRAINED.md from tools/train_tiny.py's JSON-lines log:
  loss.png         train / held-out loss and MTP loss per step, with the unigram baseline
  expert_load.png  each MoE layer's load over its 256 experts on the held-out windows, sorted, as a
                   multiple of the mean: at initialisation, trained, and trained with the bias zeroed
  load_balance.png max/mean load per training batch, per MoE layer

Usage: .venv/bin/python tools/plot_trained.py LOG.jsonl OUTDIR   (matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    recs = [json.loads(line) for line in open(sys.argv[1])]
    out = sys.argv[2]
    corpus = next(r for r in recs if r["event"] == "corpus")
    steps = [r for r in recs if r["event"] == "step"]
    evals = [r for r in recs if r["event"] == "eval"]
    final = next(r for r in recs if r["event"] == "final")
    names = ["layer 1", "layer 2", "MTP (layer 3)"]

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="train (next token)")
    ax.plot([r["step"] for r in steps], [r["mtp"] for r in steps], lw=1, label="train MTP (token after next)")
    ax.plot([r["step"] for r in evals], [r["heldout"] for r in evals], "o-", label="held-out (Persuasion)")
    ax.plot([r["step"] for r in evals], [r["heldout_mtp"] for r in evals], "s-", label="held-out MTP")
    ax.axhline(corpus["unigram_heldout_ce"], color="gray", ls="--", label="unigram baseline (held-out)")
    ax.set_xlabel("step (16 x 128 tokens)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("austen-tiny: DeepSeek-V3 architecture, 3.3 M parameters, 1 CPU thread")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/loss.png", dpi=90)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
    init = evals[0]["load"]
    for i, ax in enumerate(axes):
        for load, lab in ((init[i], "initialisation"), (final["load_without_bias"][i], "trained, bias zeroed"),
                          (final["load"][i], "trained, with its bias")):
            mean = sum(load) / len(load)
            ys = sorted((x / mean for x in load), reverse=True)
            ax.plot(range(len(ys)), ys, label=f"{lab} (max/mean {ys[0]:.1f})")
        ax.set_title(names[i])
        ax.set_xlabel("experts, most loaded first")
        ax.set_yscale("symlog", linthresh=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("load / mean load (held-out tokens)")
    fig.tight_layout()
    fig.savefig(f"{out}/expert_load.png", dpi=90)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i in range(3):
        ax.plot([r["step"] for r in steps], [r["load_max_over_mean"][i] for r in steps], lw=1, label=names[i])
    ax.set_xlabel("step")
    ax.set_ylabel("max / mean expert load in the batch")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/load_balance.png", dpi=90)


if __name__ == "__main__":
    main()
