"""
The worked example of a GPU project's test: transformers' DeepseekV3 (the build
under test; here in bfloat16 on the CPU, on a GPU it would be device="cuda"),
its activations taken with tools/dump_torch.py's forward hooks, checked against
ds3 with the one call ds3.testing.assert_matches_reference.

Needs torch and transformers (and safetensors, which tools/gen_ref.py reads
checkpoints with); skipped without them. CI does not install them: torch from
PyPI on Linux x86-64 brings the CUDA wheels (python/README.md, "Tests").
"""

import os
import sys

import pytest

import ds3
import ds3.testing

torch = pytest.importorskip("torch", reason="the worked example runs transformers (pip install torch transformers)")
pytest.importorskip("transformers", reason="the worked example runs transformers (pip install transformers)")
pytest.importorskip("safetensors", reason="tools/gen_ref.py reads checkpoints with safetensors")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dump_torch  # noqa: E402  (tools/dump_torch.py: the loader and the hooks)

# ref_data's lcg:1:12 prompt, docs/COMPARING.md's worked example.
TOKENS = [470, 345, 204, 230, 346, 243, 154, 246, 297, 442, 507, 242]


@pytest.fixture(scope="module")
def hf_bf16(models):
    """The "GPU build": transformers in bfloat16, loaded as from_pretrained would hold it."""
    path = os.path.join(models, "tiny-bf16")
    _cfg, model, _dtypes, mtp, _note, _exact = dump_torch.load(path, torch.bfloat16, torch.device("cpu"), "eager")
    return path, model, mtp


def test_transformers_bf16_matches_ds3(hf_bf16):
    path, model, mtp = hf_bf16
    # --- what a GPU project's test looks like ---------------------------------
    acts = dump_torch.run(model, mtp, TOKENS, torch.device("cpu"))     # {ds3 name: torch tensor}
    reference = ds3.Model(path)                                       # a session fixture in real use
    report = ds3.testing.assert_matches_reference(acts, reference, TOKENS, profile="bf16")
    # ---------------------------------------------------------------------------
    names = [r.name for r in report.rows]
    assert "logits" in names and "layers.0.attn.out" in names and "mtp.0.logits" in names
    assert len(names) == len(acts)


def test_a_broken_kernel_fails_with_the_table(hf_bf16):
    """The same test with one wrong kernel: attention output of layer 1 scaled by 1.25
    (as a wrong softmax scale would). The assertion message is the comparison table."""
    path, model, mtp = hf_bf16
    attn = model.model.layers[1].self_attn
    hook = attn.register_forward_hook(lambda _m, _i, out: (out[0] * 1.25,) + tuple(out[1:]))
    try:
        acts = dump_torch.run(model, mtp, TOKENS, torch.device("cpu"))
    finally:
        hook.remove()
    with pytest.raises(AssertionError) as e:
        ds3.testing.assert_matches_reference(acts, ds3.Model(path), TOKENS, profile="bf16")
    table = str(e.value)
    first_bad = [ln for ln in table.splitlines() if "OUTSIDE" in ln][0]
    assert first_bad.startswith("layers.1.attn.out"), table
    assert table.rstrip().endswith("FAIL")
