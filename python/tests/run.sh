#!/bin/sh
# python/tests/run.sh BUILD MODELS [BUILD_F64] — the Python package's tests, run by
# `make test` (tests/run.sh) after the C tests.
#
# The interpreter: $DS3_PYTHON if set (it needs numpy and pytest; the package is
# installed into it), else the virtual environment build/pyenv, made here on the
# first run (python3 -m venv, then numpy, pytest, setuptools and wheel from PyPI).
# The package is installed with `pip install ./python` (built from src/ with the
# Makefile's flags), then pytest runs python/tests against BUILD's CLI and MODELS.
#
# Skipped, with the reason and "0 passed, 0 failed", when there is no python3
# with venv (PYTHON=1 sh scripts/install-deps.sh installs it) or PyPI cannot be
# reached for the first install. A package that does not build or a failing
# test fails. Ends with pytest's counts as "N passed, N failed".
set -u
build=$1; models=$2; build_f64=${3:-}
root=$(pwd)
venv=$root/build/pyenv
log=$root/build/pyenv-install.log

skip() {
    echo "python: skipped: $*"
    echo "0 passed, 0 failed"
    exit 0
}

if [ -n "${DS3_PYTHON:-}" ]; then
    py=$DS3_PYTHON
    "$py" -c "import numpy, pytest" 2> /dev/null || { echo "python: $py lacks numpy or pytest"; echo "0 passed, 1 failed"; exit 1; }
else
    py=$venv/bin/python
    if ! "$py" -c "import numpy, pytest, setuptools, wheel" 2> /dev/null; then
        command -v python3 > /dev/null 2>&1 || skip "no python3 (PYTHON=1 sh scripts/install-deps.sh)"
        rm -rf "$venv"
        python3 -m venv "$venv" > "$log" 2>&1 ||
            skip "python3 -m venv failed (PYTHON=1 sh scripts/install-deps.sh installs python3-venv); see $log"
        "$py" -m pip install -q --disable-pip-version-check numpy pytest setuptools wheel >> "$log" 2>&1 || {
            tail -n 3 "$log"
            rm -rf "$venv"
            skip "could not install numpy/pytest from PyPI into $venv (offline?); see $log"
        }
    fi
fi

# The package, from this tree. The build's own setuptools (no download): a
# change to src/ recompiles only what changed (python/build/ keeps the objects).
if ! "$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall \
        ./python > "$log.pkg" 2>&1; then
    cat "$log.pkg"
    echo "python: pip install ./python failed"
    echo "0 passed, 1 failed"
    exit 1
fi

# From the repository root, so that `import ds3` is the installed package
# (python/ is not on the path) and the tests find build/ and ref_data/.
# OMP_WAIT_POLICY=passive: idle OpenMP threads sleep instead of spinning, which on
# a loaded machine made each small forward 20x slower; bits do not depend on it.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} DS3_MODELS=$models DS3_CLI=$build/ds3 DS3_CLI_F64=${build_f64:+$build_f64/ds3} DS3_REF=ref_data \
    "$py" -m pytest -q -rs -p no:cacheprovider python/tests
