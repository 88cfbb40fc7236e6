"""
setup.py — builds the two shared libraries the ds3 package loads with ctypes
(fp32 and f64, both usable in one process) from the repository's C sources in
../src, with the flags of the repository's Makefile. Run by `pip install ./python`
and `pip install -e ./python`; there is nothing to configure and no `make` to
run first.

The libraries are built as setuptools "extensions" only so that setuptools
puts them where the package is (site-packages, or python/ds3 for an editable
install) and tags the wheel for this platform; they are plain C libraries, not
CPython modules.

Flags, as in the Makefile (docs/MODEL.md: the same bits on any machine):
  -O2 -std=c11 -ffp-contract=off -fPIC -D_POSIX_C_SOURCE=200809L, OpenMP,
  OpenBLAS (-DDS3_BLAS), cJSON, PCRE2; -DDS3_F64 for the f64 library;
  -mavx2 -mf16c for src/kernels/linear_avx2.c on x86-64 (chosen at run time).
Before compiling, scripts/install-deps.sh --check says what is missing and the
Debian package that provides it.
"""

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class DepsError(RuntimeError):
    pass


def sh(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def pkg_config(flag, name):
    if not shutil.which("pkg-config"):
        return []
    r = sh(["pkg-config", flag, name])
    return shlex.split(r.stdout) if r.returncode == 0 else []


class BuildLibraries(build_ext):
    """Compile ../src into _libds3_f32 and _libds3_f64 (see the module docstring)."""

    def run(self):
        if not (ROOT / "src" / "error.h").is_file() or not (ROOT / "include" / "ds3.h").is_file():
            raise DepsError(
                f"ds3: the C sources are not at {ROOT}/src and {ROOT}/include. Install from the "
                "repository: pip install ./python (pip 21.3 or later builds in place)")
        self.check_deps()
        super().run()
        self.copy_tokenizer()

    # -- dependencies ---------------------------------------------------------

    def cc_cmd(self):
        return shlex.split(os.environ.get("CC", "cc"))

    def check_deps(self):
        script = ROOT / "scripts" / "install-deps.sh"
        r = sh(["sh", str(script), "--check"], cwd=str(ROOT))
        if r.returncode != 0:
            raise DepsError(
                "ds3: cannot build the C library, system packages are missing:\n"
                + r.stderr.strip()
                + "\nInstall them with:  sh scripts/install-deps.sh   (as root or with sudo; it runs apt-get),"
                + "\nthen run pip install again.")

    # -- compiling ------------------------------------------------------------

    def flags(self, precision):
        cflags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-ffp-contract=off", "-fPIC",
                  "-D_POSIX_C_SOURCE=200809L", "-I" + str(ROOT / "include"), "-I" + str(ROOT / "src"),
                  "-DDS3_BLAS", "-fopenmp"]
        cflags += pkg_config("--cflags", "libpcre2-8") + pkg_config("--cflags", "openblas")
        if precision == "f64":
            cflags.append("-DDS3_F64")
        cflags += shlex.split(os.environ.get("CPPFLAGS", ""))
        libs = (pkg_config("--libs", "openblas") or ["-lopenblas"]) + ["-lcjson"] + \
               (pkg_config("--libs", "libpcre2-8") or ["-lpcre2-8"]) + ["-lm"]
        ldflags = ["-shared", "-fopenmp"] + shlex.split(os.environ.get("LDFLAGS", ""))
        if sys.platform.startswith("linux"):
            # Calls inside each library bind to its own definitions, so the fp32
            # and f64 libraries (the same names) can live in one process.
            ldflags.append("-Wl,-Bsymbolic")
        return cflags, ldflags, libs

    def is_x86_64(self):
        r = sh(self.cc_cmd() + ["-dumpmachine"])
        return "x86_64" in (r.stdout if r.returncode == 0 else platform.machine())

    def build_extension(self, ext):
        precision = ext.name.rsplit("_", 1)[1]
        cflags, ldflags, libs = self.flags(precision)
        sources = sorted((ROOT / "src").glob("*.c")) + sorted((ROOT / "src").glob("*/*.c"))
        # One object directory per compiler and flags, so a change of either rebuilds.
        key = hashlib.sha256(" ".join(self.cc_cmd() + cflags).encode()).hexdigest()[:12]
        objdir = Path(self.build_temp) / f"obj-{precision}-{key}"
        avx2 = self.is_x86_64()
        jobs = []
        for src in sources:
            rel = src.relative_to(ROOT / "src")
            obj = objdir / rel.with_suffix(".o")
            extra = ["-mavx2", "-mf16c"] if avx2 and rel.as_posix() == "kernels/linear_avx2.c" else []
            jobs.append((src, obj, self.cc_cmd() + cflags + extra + ["-c", str(src), "-o", str(obj)]))

        # An object newer than its source and every header is kept (a rebuild
        # after a change to one .c file recompiles that file only).
        headers = list((ROOT / "src").rglob("*.h")) + list((ROOT / "include").glob("*.h"))
        newest_h = max((h.stat().st_mtime for h in headers), default=0)

        def compile_one(job):
            src, obj, cmd = job
            obj.parent.mkdir(parents=True, exist_ok=True)
            if obj.is_file() and obj.stat().st_mtime > max(src.stat().st_mtime, newest_h) and not self.force:
                return src, cmd, subprocess.CompletedProcess(cmd, 0, "", "")
            r = sh(cmd)
            if r.returncode != 0 and obj.is_file():
                obj.unlink()
            return src, cmd, r

        print(f"ds3: compiling {len(jobs)} files for the {precision} library", flush=True)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for src, cmd, r in pool.map(compile_one, jobs):
                if r.returncode != 0:
                    raise RuntimeError(f"ds3: compiling {src} failed:\n{' '.join(cmd)}\n{r.stderr}")
                if r.stderr.strip():
                    print(r.stderr, file=sys.stderr)
        out = Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.cc_cmd() + ldflags + ["-o", str(out)] + [str(o) for _, o, _ in jobs] + libs
        r = sh(cmd)
        if r.returncode != 0:
            raise RuntimeError(f"ds3: linking {out.name} failed:\n{' '.join(cmd)}\n{r.stderr}")
        print(f"ds3: built {out}", flush=True)

    # -- data -----------------------------------------------------------------

    def copy_tokenizer(self):
        """DeepSeek-V3's tokenizer beside the libraries: ds3.mkmodel gives it to
        models with V3's vocabulary, as `ds3 mkmodel` does."""
        pkg = Path(self.get_ext_fullpath(self.extensions[0].name)).parent
        src = ROOT / "data" / "tokenizers" / "deepseek-v3"
        dst = pkg / "data" / "tokenizers" / "deepseek-v3"
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "NOTICE"):
            if (src / name).is_file():
                shutil.copyfile(src / name, dst / name)


setup(
    ext_modules=[Extension("ds3._libds3_f32", sources=[]), Extension("ds3._libds3_f64", sources=[])],
    cmdclass={"build_ext": BuildLibraries},
)
