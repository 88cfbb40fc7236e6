"""ds3.compare and ds3.testing: the verdicts and the table of `ds3 compare`."""

import os

import numpy as np
import pytest

import ds3
import ds3.testing

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def model(models):
    return ds3.Model(os.path.join(models, "tiny-fp8"))


@pytest.fixture(scope="module")
def ref(model):
    return model.dump(TOKENS)


def test_same_dump_passes(ref):
    r = ds3.compare(ref, ref, profile="fp32")
    assert r.ok and bool(r) and r.first_failure is None
    assert len(r.rows) == len(ref) and [x.name for x in r.rows] == list(ref)
    assert all(x.ok for x in r.rows)
    assert str(r).rstrip().endswith("PASS")
    row = next(x for x in r.rows if x.name == "logits")
    assert row.max_abs == 0 and row.cos == pytest.approx(1.0) and row.argmax_same == len(TOKENS)


def test_table_is_the_cli_table(ref, cli, tmp_path):
    """Same files, same labels: str(report) is ds3 compare's stdout, byte for byte."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    model_dir = ref.metadata["model_dir"]
    cli("dump", "-m", model_dir, "--tokens", ",".join(map(str, TOKENS)), "-o", a)
    cli("dump", "-m", model_dir, "--tokens", ",".join(map(str, TOKENS)), "-o", b, "--emulate", "bf16")
    for profile in ("fp32", "bf16"):
        r = ds3.compare(str(a), str(b), profile=profile)
        out = cli("compare", a, b, "--profile", profile, check=False)
        assert str(r) == out.stdout.decode()
        assert r.ok == (out.returncode == 0)
    r = ds3.compare(str(a), str(b), profile="fp32", atol=1e-3, rtol=1e-2, names="layers.*,!*.moe.*")
    out = cli("compare", a, b, "--atol", "1e-3", "--rtol", "1e-2", "--names", "layers.*,!*.moe.*", check=False)
    assert str(r) == out.stdout.decode()


def test_a_fault_is_found(ref):
    test = {k: np.array(v) for k, v in ref.items()}
    test["layers.2.attn.out"][4, 7] += 0.5 * np.abs(test["layers.2.attn.out"]).max()
    r = ds3.compare(ref, test, profile="bf16")
    assert not r.ok
    assert r.first_failure.name == "layers.2.attn.out"
    assert "OUTSIDE" in str(r) and str(r).rstrip().endswith("FAIL")
    assert r.first_failure.worst_index == [4, 7]
    # only the named tensors, upstream of the fault: nothing wrong there
    assert ds3.compare(ref, test, profile="fp32", names="embed,layers.0.*,layers.1.*").ok


def test_missing_tensor_and_tokens(ref):
    test = dict(ref)
    del test["norm"]
    r = ds3.compare(ref, test, profile="bf16")
    assert not r.ok and any("norm" in m for m in r.missing)
    assert r.first_failure.name == "norm"
    other = ds3.Dump(ref, dict(ref.metadata, tokens="9,9,9"))
    r = ds3.compare(ref, other, profile="bf16")
    assert not r.ok and r.tokens_differ


def test_dtypes_accepted(ref):
    """float16/float64/int64 arrays and bf16 bits (ml_dtypes-style) are all read."""
    test = {k: (v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int64)) for k, v in ref.items()}
    assert ds3.compare(ref, test, profile="fp32").ok
    test = {k: v.astype(np.float16) for k, v in ref.items() if k == "embed"}
    assert ds3.compare(ref, test, profile="bf16", names="embed").ok


def test_bf16_emulation_is_within_the_bf16_profile(model, ref):
    emu = model.dump(TOKENS, emulate="bf16")
    assert ds3.compare(ref, emu, profile="bf16").ok
    assert not ds3.compare(ref, emu, profile="fp32").ok


def test_assert_matches_reference(model, ref):
    acts = {k: ref[k] for k in ("embed", "layers.0.attn.out", "logits")}
    r = ds3.testing.assert_matches_reference(acts, model, TOKENS, profile="fp32")
    assert [x.name for x in r.rows] == ["embed", "layers.0.attn.out", "logits"]
    bad = dict(acts, logits=acts["logits"] + 1.0)
    with pytest.raises(AssertionError) as e:
        ds3.testing.assert_matches_reference(bad, model, TOKENS, profile="bf16")
    msg = str(e.value)
    assert "logits" in msg and "OUTSIDE" in msg and msg.rstrip().endswith("FAIL")


def test_torch_tensors_if_torch(ref):
    torch = pytest.importorskip("torch")
    test = {k: torch.from_numpy(np.array(v)) for k, v in ref.items()}
    assert ds3.compare(ref, test, profile="fp32").ok
    test = {k: torch.from_numpy(np.array(v)).to(torch.bfloat16) for k, v in ref.items() if v.dtype == np.float32}
    r = ds3.compare(ref, test, profile="bf16", names=",".join(test))
    assert r.ok, str(r)


def test_torch_is_never_imported_by_ds3():
    import subprocess
    import sys
    code = "import sys, numpy as np, ds3; ds3.compare({'a': np.ones(3, np.float32)}, {'a': np.ones(3, np.float32)});" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    assert out == "False"
