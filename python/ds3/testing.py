"""
ds3.testing — the one call a GPU project's test needs.

    import ds3, ds3.testing
    ref = ds3.Model("/models/DeepSeek-V3")                  # once per session (a fixture)
    acts = my_engine_activations(tokens)                   # {"layers.0.attn.out": tensor, …, "logits": …}
    ds3.testing.assert_matches_reference(acts, ref, tokens, profile="bf16")

The activations use ds3's dump names (docs/DUMP_FORMAT.md; tools/dump_torch.py
shows the hooks for transformers). Only the names the test supplies are
compared, so a test may capture a few layers or just the logits.
"""

from . import Model, compare


def assert_matches_reference(test_acts, model, tokens, profile="bf16", atol=None, rtol=None, names=None,
                             emulate=None, all_rows=False):
    """Dump `model` (a ds3.Model, or a model directory loaded in f32) on `tokens`
    and compare `test_acts` (dict name → numpy array or torch tensor) against it
    with ds3.compare. On failure raise AssertionError whose message is the
    comparison table; otherwise return the Report.

    names: globs to compare (default: exactly the names in test_acts);
    emulate: dump the reference with a GPU build's rounding (docs/COMPARING.md)."""
    if not isinstance(model, Model):
        model = Model(model)
    ref = model.dump(tokens, emulate=emulate)
    if names is None:
        names = ",".join(sorted(test_acts.keys()))
    report = compare(ref, test_acts, profile=profile, atol=atol, rtol=rtol, names=names, all_rows=all_rows)
    if not report.ok:
        raise AssertionError("activations do not match ds3's reference\n" + str(report))
    return report
