"""ds3.Model: forward, dump and generate give the CLI's bits (fp32 and f64)."""

import os

import numpy as np
import pytest

import ds3
import st_read

TOKENS = [1, 2, 3, 4, 5, 6, 7]


def bit_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def cli_dump(run, tmp_path, model, tokens, *extra):
    out = tmp_path / f"cli-{len(os.listdir(tmp_path))}.safetensors"
    run("dump", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", out, *extra)
    return st_read.read(out)


def test_five_line_use(models):
    m = ds3.Model(os.path.join(models, "tiny-fp8"))
    logits = m.forward([1, 2, 3])
    assert logits.shape == (3, m.vocab_size) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("precision", ["f32", "f64"])
@pytest.mark.parametrize("name", ["tiny-fp8", "tiny-bf16", "tiny-v2"])
def test_dump_and_forward_bits_equal_cli(models, cli_for, tmp_path, precision, name):
    run = cli_for(precision)
    path = os.path.join(models, name)
    m = ds3.Model(path, precision=precision)
    want, meta = cli_dump(run, tmp_path, path, TOKENS)
    got = m.dump(TOKENS)
    assert list(got) == list(want), "same names in the same order"
    for k in want:
        assert bit_equal(got[k], want[k]), k
    assert got.metadata["ds3_precision"] == precision == meta["ds3_precision"]
    assert got.metadata["tokens"] == meta["tokens"]
    logits = m.forward(TOKENS)
    assert logits.dtype == (np.float64 if precision == "f64" else np.float32)
    assert bit_equal(logits, want["logits"])


def test_dump_has_mtp(models):
    d = ds3.Model(os.path.join(models, "tiny-f32")).dump(TOKENS)
    for k in ("mtp.0.in", "mtp.0.attn.out", "mtp.0.ffn.out", "mtp.0.out", "mtp.0.norm", "mtp.0.logits",
              "mtp.0.moe.topk_idx"):
        assert k in d, k
    assert d["mtp.0.logits"].shape[0] == len(TOKENS) - 1
    idx = [k for k in d if k.startswith("layers.") and k.endswith(".moe.topk_idx")]
    assert idx and all(d[k].dtype == np.int32 and d[k].shape == (len(TOKENS), 8) for k in idx)


@pytest.mark.parametrize("kernels,attn,extra", [
    ("deterministic", "absorb", ()), ("ref", "naive", ()), ("fast", "naive", ()),
])
def test_options_bits_equal_cli(models, cli, tmp_path, kernels, attn, extra):
    path = os.path.join(models, "tiny-fp8")
    want, _ = cli_dump(cli, tmp_path, path, TOKENS, "--kernels", kernels, "--attn", attn)
    got = ds3.Model(path, kernels=kernels, attn=attn).dump(TOKENS)
    for k in want:
        assert bit_equal(got[k], want[k]), k


def test_decode_from_and_emulate_bits_equal_cli(models, cli, tmp_path):
    path = os.path.join(models, "tiny-fp8")
    m = ds3.Model(path)
    want, _ = cli_dump(cli, tmp_path, path, TOKENS, "--decode-from", 3)
    got = m.dump(TOKENS, decode_from=3)
    assert all(bit_equal(got[k], want[k]) for k in want)
    want, _ = cli_dump(cli, tmp_path, path, TOKENS, "--emulate", "fp8,ue8m0")
    got = m.dump(TOKENS, emulate="fp8,ue8m0")
    assert got.metadata["emulate"] == "fp8,ue8m0"
    assert all(bit_equal(got[k], want[k]) for k in want)
    plain = m.dump(TOKENS)
    assert not bit_equal(plain["logits"], got["logits"]), "emulation changes the numbers"


def cli_ids(run, *args):
    out = run("run", *args).stdout.decode().strip().splitlines()[-1]
    return [int(t) for t in out.split(",")]


@pytest.mark.parametrize("precision", ["f32", "f64"])
def test_generate_ids_equal_cli(models, cli_for, precision):
    run = cli_for(precision)
    path = os.path.join(models, "tiny-fp8")
    m = ds3.Model(path, precision=precision)
    assert m.generate([1, 2, 3], 12) == cli_ids(run, "-m", path, "--tokens", "1,2,3", "-n", 12, "--quiet")
    assert m.generate([5, 6, 7, 8], 10, temperature=0.7, top_p=0.9, seed=7) == cli_ids(
        run, "-m", path, "--tokens", "5,6,7,8", "-n", 10, "--temp", 0.7, "--top-p", 0.9, "--seed", 7, "--quiet")


def test_generate_mtp_ids_equal_cli(models, cli):
    path = os.path.join(models, "tiny-f32")
    m = ds3.Model(path)
    greedy = m.generate([1, 2, 3], 9)
    for draft in (1, 2):
        got = m.generate([1, 2, 3], 9, mtp=True, draft=draft)
        assert got == greedy, "greedy speculative decoding gives the plain ids"
        assert got == cli_ids(cli, "-m", path, "--tokens", "1,2,3", "-n", 9, "--mtp", "--draft", draft, "--quiet")
    got = m.generate([1, 2, 3], 9, temperature=0.8, seed=3, mtp=True, draft=2)
    assert got == cli_ids(cli, "-m", path, "--tokens", "1,2,3", "-n", 9, "--temp", 0.8, "--seed", 3, "--mtp",
                          "--draft", 2, "--quiet")
    assert m.generate([1, 2, 3], 0) == []


def test_both_precisions_in_one_process(models):
    path = os.path.join(models, "tiny-f32")
    a, b = ds3.Model(path, precision="f32"), ds3.Model(path, precision="f64")
    la, lb = a.forward(TOKENS), b.forward(TOKENS)
    assert la.dtype == np.float32 and lb.dtype == np.float64
    # the same model in two precisions: close (README: ~1e-6 of the largest value), not equal
    assert np.max(np.abs(la - lb)) <= 1e-4 * np.max(np.abs(lb))
    assert not bit_equal(la.astype(np.float64), lb)
    assert bit_equal(a.forward(TOKENS), la), "and loading f64 did not disturb f32"


def test_config_and_describe(models, cli):
    path = os.path.join(models, "tiny-fp8")
    m = ds3.Model(path)
    c = m.config
    assert c["vocab_size"] == m.vocab_size == 512 or c["vocab_size"] == m.vocab_size
    assert c["num_hidden_layers"] == m.num_layers
    assert c["num_nextn_predict_layers"] == m.num_mtp == 1
    assert c["num_experts_per_tok"] == m.top_k
    c["vocab_size"] = -1
    assert m.config["vocab_size"] == m.vocab_size, "config returns a copy"
    assert m.describe() == cli("info", "-m", path).stdout.decode()


def test_arrays_own_their_memory(models):
    m = ds3.Model(os.path.join(models, "tiny-f32"))
    logits = m.forward(TOKENS)
    d = m.dump(TOKENS)
    m.close()
    del m
    import gc
    gc.collect()
    assert logits.flags.owndata and logits.flags.writeable
    for k, v in d.items():
        assert v.base is None or v.flags.owndata, k
    # the data are still readable and writable after the model and its buffers are gone
    s = float(np.sum(d["logits"].astype(np.float64)))
    assert np.isfinite(s)
    d["logits"][:] = 0
    assert float(np.abs(logits).sum()) > 0


def test_context_manager_and_close(models):
    with ds3.Model(os.path.join(models, "tiny-f32")) as m:
        m.forward([1])
    with pytest.raises(ds3.ArgumentError, match="closed"):
        m.forward([1])
    m.close()   # twice is fine
