"""
Shared fixtures of the Python package's tests (run by `make test` through
python/tests/run.sh, or by hand: `python -m pytest python/tests` from the
repository root with the package installed).

Environment (set by python/tests/run.sh; defaults relative to the repository):
  DS3_MODELS     the synthetic models (scripts/make-models.sh): build/models
  DS3_CLI        the fp32 CLI, for bit-for-bit checks: build/ds3
  DS3_CLI_F64    the f64 CLI: build-f64/ds3
  DS3_REF        ref_data/
"""

import os
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _path(env, default):
    p = os.environ.get(env) or os.path.join(ROOT, default)
    return os.path.abspath(p)


MODELS = _path("DS3_MODELS", "build/models")
CLI = {"f32": _path("DS3_CLI", "build/ds3"), "f64": _path("DS3_CLI_F64", "build-f64/ds3")}
REF = _path("DS3_REF", "ref_data")


@pytest.fixture(scope="session")
def models():
    if not os.path.isfile(os.path.join(MODELS, "tiny-fp8", "config.json")):
        pytest.skip(f"no synthetic models in {MODELS} (make models, or scripts/make-models.sh)")
    return MODELS


@pytest.fixture(scope="session")
def ref_dir():
    return REF


def _cli(precision):
    exe = CLI[precision]
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no {precision} CLI at {exe} (make{' PRECISION=f64' if precision == 'f64' else ''})")

    def run(*args, check=True):
        r = subprocess.run([exe, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            raise AssertionError(f"{exe} {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr.decode()}")
        return r
    return run


@pytest.fixture(scope="session")
def cli():
    return _cli("f32")


@pytest.fixture(scope="session")
def cli_for():
    return _cli


def pytest_terminal_summary(terminalreporter):
    """The closing line every stage of `make test` ends with."""
    s = terminalreporter.stats
    passed = len(s.get("passed", []))
    failed = len(s.get("failed", [])) + len(s.get("error", []))
    skipped = len(s.get("skipped", []))
    if skipped:
        terminalreporter.write_line(f"({skipped} skipped: the reasons are above, -rs)")
    terminalreporter.write_line(f"{passed} passed, {failed} failed")
