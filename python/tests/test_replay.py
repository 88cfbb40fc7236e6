"""Model.replay: `ds3 replay` on a build's dump (the CLI's table and verdicts)."""

import os

import numpy as np
import pytest

import ds3

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def model(models):
    return ds3.Model(os.path.join(models, "tiny-fp8"))


def test_own_dump_replays_and_table_is_the_cli_table(model, cli, tmp_path):
    path = tmp_path / "build.safetensors"
    cli("dump", "-m", model.path, "--tokens", ",".join(map(str, TOKENS)), "-o", path)
    r = model.replay(str(path))
    out = cli("replay", "-m", model.path, path, check=False)
    assert str(r) == out.stdout.decode()
    assert r.ok and out.returncode == 0
    assert all(x.ok for x in r.rows) and r.first_failure is None
    # the same with explicit tokens, and from the dict the dump gives
    assert model.replay(str(path), tokens=TOKENS).ok
    assert model.replay(model.dump(TOKENS)).ok


def test_bf16_build_and_a_planted_fault(model):
    build = model.dump(TOKENS, emulate="bf16")
    r = model.replay(build, profile="bf16", emulate="bf16")
    assert r.ok, str(r)
    bad = ds3.Dump({k: np.array(v) for k, v in build.items()}, build.metadata)
    bad["layers.2.ffn.out"] *= 1.25             # one wrong kernel in layer 2's FFN
    r = model.replay(bad, profile="bf16", emulate="bf16")
    assert not r.ok
    assert r.first_failure.name == "layers.2.ffn.out", str(r)
    assert all(x.ok for x in r.rows if x.name.startswith(("layers.0.", "layers.1.", "embed"))), str(r)


def test_replay_errors(model):
    d = model.dump(TOKENS)
    plain = {k: v for k, v in d.items()}          # no metadata: no tokens
    with pytest.raises(ds3.ArgumentError, match="no tokens"):
        model.replay(plain)
    assert model.replay(plain, tokens=TOKENS).ok
    with pytest.raises(ds3.ArgumentError, match="differ"):
        model.replay(d, tokens=TOKENS[:-1] + [7])
    with pytest.raises(ds3.ArgumentError, match="profile"):
        model.replay(d, profile="fp16")
    with pytest.raises(ds3.ArgumentError, match="routing"):
        model.replay(d, routing="mine")
    with pytest.raises(ds3.ArgumentError, match="atol"):
        model.replay(d, atol=-1)
