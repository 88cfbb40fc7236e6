"""ds3.mkmodel, ds3.info, ds3.builtin_configs: what the CLI's mkmodel and info give."""

import os

import pytest

import ds3


def files(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


@pytest.mark.parametrize("dtype", ["f32", "bf16", "fp8"])
def test_mkmodel_bytes_equal_cli(cli, tmp_path, dtype):
    ds3.mkmodel("tiny", dtype, 5, tmp_path / "py")
    cli("mkmodel", "--config", "tiny", "--dtype", dtype, "--seed", 5, "-o", tmp_path / "cli")
    a, b = files(tmp_path / "py"), files(tmp_path / "cli")
    assert list(a) == list(b) and a == b


def test_mkmodel_options_and_use(cli, tmp_path):
    out = ds3.mkmodel("tiny", "f32", 2, tmp_path / "py", bias_shift=-4.0, mtp_agree=0.7)
    cli("mkmodel", "--config", "tiny", "--dtype", "f32", "--seed", 2, "--bias-shift", -4, "--mtp-agree=0.7",
        "-o", tmp_path / "cli")
    assert files(out) == files(tmp_path / "cli")
    assert ds3.Model(out).forward([1, 2]).shape == (2, 512)
    assert "tokenizer.json" not in os.listdir(out), "not V3's vocabulary: no tokenizer"


def test_mkmodel_errors(tmp_path):
    with pytest.raises(ds3.ArgumentError, match="dtype"):
        ds3.mkmodel("tiny", "int8", 1, tmp_path / "x")
    with pytest.raises(ds3.Error, match="nonesuch"):
        ds3.mkmodel("nonesuch", "f32", 1, tmp_path / "x")
    with pytest.raises(ds3.ArgumentError, match="seed"):
        ds3.mkmodel("tiny", "f32", -1, tmp_path / "x")


def test_info_equals_cli(cli, models):
    d = os.path.join(models, "tiny-fp8")
    assert ds3.info(d) == cli("info", "-m", d).stdout.decode()
    assert ds3.info("v3") == cli("info", "--config", "v3").stdout.decode()
    cfg = os.path.join(d, "config.json")
    assert ds3.info(cfg) == cli("info", "--config", cfg).stdout.decode()
    with pytest.raises(ds3.Error):
        ds3.info("no-such-config")


def test_builtin_configs():
    names = ds3.builtin_configs()
    for n in ("v3", "v2-lite", "kimi-k2", "tiny", "small"):
        assert n in names
