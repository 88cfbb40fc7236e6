"""Errors become ds3.Error subclasses with ds3's message; nothing crashes the interpreter."""

import json
import os
import shutil

import numpy as np
import pytest

import ds3
import st_read


@pytest.fixture(scope="module")
def model(models):
    return ds3.Model(os.path.join(models, "tiny-f32"))


def test_bad_path():
    with pytest.raises(ds3.FileError, match="no/such/dir") as e:
        ds3.Model("/no/such/dir")
    assert isinstance(e.value, ds3.Error) and isinstance(e.value, OSError)
    assert e.value.status == "io error"


def test_bad_config(tmp_path, models):
    shutil.copytree(os.path.join(models, "tiny-f32"), tmp_path / "m")
    cfg = json.load(open(tmp_path / "m" / "config.json"))
    del cfg["hidden_size"]
    json.dump(cfg, open(tmp_path / "m" / "config.json", "w"))
    with pytest.raises(ds3.ConfigError, match="hidden_size"):
        ds3.Model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises((ds3.FormatError, ds3.ConfigError)):
        ds3.Model(tmp_path / "m")


def checkpoint_with(tmp_path, models, change):
    """tiny-f32 with its weights file rewritten by change(tensors)."""
    d = tmp_path / "m"
    shutil.copytree(os.path.join(models, "tiny-f32"), d)
    tensors, meta = st_read.read(d / "model.safetensors")
    tensors = {k: np.array(v) for k, v in tensors.items()}
    h, _ = st_read.header(d / "model.safetensors")
    dtypes = {k: v["dtype"] for k, v in h.items() if k != "__metadata__"}
    change(tensors)
    st_read.write(d / "model.safetensors", tensors, dtypes, meta)
    return d


def test_missing_tensor(tmp_path, models):
    d = checkpoint_with(tmp_path, models, lambda t: t.pop("model.layers.0.self_attn.o_proj.weight"))
    with pytest.raises(ds3.MissingTensorError, match="model.layers.0.self_attn.o_proj.weight"):
        ds3.Model(d)


def test_wrong_shape(tmp_path, models):
    def cut(t):
        w = t["model.layers.0.self_attn.o_proj.weight"]
        t["model.layers.0.self_attn.o_proj.weight"] = w[:-1]
    d = checkpoint_with(tmp_path, models, cut)
    with pytest.raises(ds3.ShapeError, match=r"o_proj.weight: shape \["):
        ds3.Model(d)


def test_truncated_file(tmp_path, models):
    d = tmp_path / "m"
    shutil.copytree(os.path.join(models, "tiny-f32"), d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ds3.FileError, match="truncated|past the end"):
        ds3.Model(d)


@pytest.mark.parametrize("tokens,msg", [
    ([], "no tokens"),
    ([[1, 2], [3, 4]], "1-D"),
    ([1.5, 2.0], "integers"),
    (np.array([1, 2], dtype=np.float32), "integers"),
    ("1,2,3", "string"),
    ([1, -2], "out of range"),
    ([1, 2**40], "out of range"),
    ([True, False], "integers"),
    ([[1, 2], [3]], "sequence|1-D"),
    (None, "1-D|sequence"),
])
def test_bad_tokens(model, tokens, msg):
    with pytest.raises(ds3.ArgumentError, match=msg):
        model.forward(tokens)


def test_token_out_of_vocab_is_the_library_message(model):
    with pytest.raises(ds3.ArgumentError, match=r"token 512 at index 1 is out of range \(vocab 512\)"):
        model.forward([1, model.vocab_size, 3])
    with pytest.raises(ds3.ArgumentError, match="out of range"):
        model.dump([model.vocab_size])
    with pytest.raises(ds3.ArgumentError, match="out of range"):
        model.generate([model.vocab_size], 2)
    # the model is still usable
    assert model.forward([1, 2]).shape == (2, model.vocab_size)


def test_too_many_positions(model):
    n = model.max_positions
    with pytest.raises(ds3.ArgumentError, match="max_position_embeddings"):
        model.forward(np.ones(n + 1, dtype=np.int64))
    with pytest.raises(ds3.ArgumentError, match="max_position_embeddings"):
        model.generate([1, 2], n)


def test_bad_options(models, model):
    path = os.path.join(models, "tiny-f32")
    with pytest.raises(ds3.ArgumentError, match="precision"):
        ds3.Model(path, precision="f16")
    with pytest.raises(ds3.ArgumentError, match="kernels"):
        ds3.Model(path, kernels="fastest")
    with pytest.raises(ds3.ArgumentError, match="attn"):
        ds3.Model(path, attn="flash")
    with pytest.raises(ds3.ArgumentError, match="emulate"):
        model.dump([1, 2], emulate="fp4")
    with pytest.raises(ds3.ArgumentError, match="decode_from"):
        model.dump([1, 2], decode_from=3)
    with pytest.raises(ds3.ArgumentError, match="top_p"):
        model.generate([1], 2, temperature=1.0, top_p=0.0)
    with pytest.raises(ds3.ArgumentError, match="temperature"):
        model.generate([1], 2, temperature=float("nan"))
    with pytest.raises(ds3.ArgumentError, match="draft"):
        model.generate([1], 2, mtp=True, draft=17)
    with pytest.raises(ds3.ArgumentError, match="n:"):
        model.generate([1], -1)
    with pytest.raises(ds3.ArgumentError, match="seed"):
        model.generate([1], 1, seed=-1)
    with pytest.raises(ds3.ArgumentError, match="NUL"):
        ds3.Model("a\0b")
    with pytest.raises(ds3.ArgumentError, match="string or path"):
        ds3.Model(42)


def test_mtp_needs_mtp_layers(models):
    m = ds3.Model(os.path.join(models, "tiny-v2"))
    assert m.num_mtp == 0
    with pytest.raises(ds3.ArgumentError, match="no MTP layers"):
        m.generate([1, 2], 3, mtp=True)


def test_compare_errors(tmp_path, model):
    d = model.dump([1, 2, 3])
    with pytest.raises(ds3.ArgumentError, match="profile"):
        ds3.compare(d, d, profile="int4")
    with pytest.raises(ds3.ArgumentError, match="atol"):
        ds3.compare(d, d, atol=-1)
    with pytest.raises(ds3.ArgumentError, match="rtol"):
        ds3.compare(d, d, rtol=float("inf"))
    with pytest.raises(ds3.FileError, match="TEST: .*nope.safetensors"):
        ds3.compare(d, tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ds3.Error, match="TEST: .*junk.safetensors"):
        ds3.compare(d, tmp_path / "junk.safetensors")
    with pytest.raises(ds3.Error, match="REF: "):
        ds3.compare(b"\x01\x00\x00\x00\x00\x00\x00\x00{", d)
    with pytest.raises(ds3.ArgumentError, match="complex"):
        ds3.compare(d, {"logits": np.zeros(3, np.complex64)})
    with pytest.raises(ds3.ArgumentError, match="dict of arrays"):
        ds3.compare(d, 3.0)


def test_error_hierarchy():
    for cls, base in [(ds3.FileError, OSError), (ds3.FormatError, ValueError), (ds3.ConfigError, ValueError),
                      (ds3.MissingTensorError, KeyError), (ds3.ShapeError, ValueError),
                      (ds3.OutOfMemoryError, MemoryError), (ds3.ArgumentError, ValueError)]:
        assert issubclass(cls, ds3.Error) and issubclass(cls, base)
