"""
_lib.py — the two C libraries (fp32 and f64) through ctypes, and their errors.

ctypes (the standard library) rather than a compiled extension: nothing to
build against CPython, one wheel per platform for every Python version, and
ctypes releases the GIL for the length of every foreign call, so forward,
dump and generate let other Python threads run.

Each library is the whole of ds3 built with one scalar type (ds3_real: float
or double). Both are loaded with RTLD_LOCAL and linked -Bsymbolic, so the
same C names live side by side in one process.
"""

import ctypes
import importlib.machinery
import os
import threading
from ctypes import (POINTER, c_char_p, c_double, c_float, c_int, c_int32, c_size_t, c_uint, c_uint64, c_void_p)

import numpy as np

# ---------------------------------------------------------------------------
# Errors: one class per ds3_status
# ---------------------------------------------------------------------------


class Error(Exception):
    """A ds3 library call failed. `status` is the C status name ("io error", …)
    and the message is ds3's own (it names the file, the tensor, what was
    expected)."""

    status = "error"


class FileError(Error, OSError):
    """A file is missing, unreadable, unwritable or truncated (DS3_ERR_IO)."""
    status = "io error"


class FormatError(Error, ValueError):
    """Malformed safetensors or JSON (DS3_ERR_FORMAT)."""
    status = "format error"


class ConfigError(Error, ValueError):
    """config.json missing a field or inconsistent (DS3_ERR_CONFIG)."""
    status = "config error"


class MissingTensorError(Error, KeyError):
    """A tensor the config implies is absent from the checkpoint (DS3_ERR_MISSING)."""
    status = "missing tensor"

    def __str__(self):  # KeyError would quote the message
        return Exception.__str__(self)


class ShapeError(Error, ValueError):
    """A tensor has the wrong shape or dtype (DS3_ERR_SHAPE)."""
    status = "shape mismatch"


class OutOfMemoryError(Error, MemoryError):
    """An allocation failed (DS3_ERR_NOMEM)."""
    status = "out of memory"


class ArgumentError(Error, ValueError):
    """A bad argument: a token id out of range, an unknown option, a wrong
    shape or dtype of an input (DS3_ERR_ARG, and the same checks made in Python)."""
    status = "bad argument"


_BY_STATUS = {1: FileError, 2: FormatError, 3: ConfigError, 4: MissingTensorError, 5: ShapeError,
              6: OutOfMemoryError, 7: ArgumentError}

# ---------------------------------------------------------------------------
# Structures of ds3.h
# ---------------------------------------------------------------------------


class MkmodelOpts(ctypes.Structure):
    _fields_ = [("config", c_char_p), ("dtype", c_int), ("seed", c_uint64), ("bias_shift", c_double),
                ("mtp_agree", c_double), ("tokenizer", c_char_p)]


class Emulation(ctypes.Structure):
    _fields_ = [("mode", c_int), ("ue8m0", c_int), ("points", c_uint)]


class CompareOpts(ctypes.Structure):
    _fields_ = [("profile", c_char_p), ("elementwise", c_int), ("atol", c_double), ("rtol", c_double),
                ("names", c_char_p), ("all_rows", c_int)]


class ReplayOpts(ctypes.Structure):
    _fields_ = [("profile", c_char_p), ("elementwise", c_int), ("atol", c_double), ("rtol", c_double),
                ("routing", c_int), ("build_label", c_char_p), ("model_label", c_char_p),
                ("tokens_from", c_char_p)]


class SpecStats(ctypes.Structure):
    _fields_ = [("rounds", ctypes.c_long), ("drafted", ctypes.c_long), ("accepted", ctypes.c_long),
                ("generated", ctypes.c_long)]


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

PRECISIONS = {"f32": (c_float, np.float32), "f64": (c_double, np.float64)}
_HERE = os.path.dirname(os.path.abspath(__file__))
_libs = {}
_load_lock = threading.Lock()


def _find(precision):
    stem = "_libds3_" + precision
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(_HERE, stem + suffix)
        if os.path.isfile(path):
            return path
    raise ImportError(f"ds3: the {precision} library ({stem}*.so) is not in {_HERE}: the package was not "
                      "built. Install it with: pip install ./python (from the ds3 repository)")


class Lib:
    """One loaded library: its ctypes functions, its scalar type, call()."""

    def __init__(self, precision):
        self.precision = precision
        self.real, self.np_real = PRECISIONS[precision]
        mode = getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 2)
        self.dll = ctypes.CDLL(_find(precision), mode=mode)
        self._declare()

    def _fn(self, name, restype, *argtypes):
        f = getattr(self.dll, name)
        f.restype = restype
        f.argtypes = list(argtypes)
        setattr(self, name[4:] if name.startswith("ds3_") else name, f)

    def _declare(self):
        R = POINTER(self.real)
        P = c_void_p
        st = c_int
        fn = self._fn
        fn("ds3_last_error", c_char_p)
        fn("ds3_status_name", c_char_p, c_int)
        fn("ds3_free", None, P)
        # models
        fn("ds3_model_load", st, c_char_p, POINTER(P))
        fn("ds3_model_free", None, P)
        fn("ds3_model_prepare_decode", st, P)
        for name in ("vocab_size", "num_layers", "num_mtp", "top_k", "max_positions"):
            fn("ds3_model_" + name, c_int, P)
        fn("ds3_model_describe_str", st, P, POINTER(c_void_p))
        fn("ds3_config_describe_str", st, c_char_p, POINTER(c_void_p))
        fn("ds3_model_config_json", st, P, POINTER(c_void_p))
        fn("ds3_mkmodel", st, POINTER(MkmodelOpts), c_char_p)
        fn("ds3_mkmodel_estimate", st, POINTER(MkmodelOpts), POINTER(c_uint64), POINTER(c_int))
        # state, forward, kernels, dumps, emulation
        fn("ds3_state_new", st, P, c_int, c_int, POINTER(P))
        fn("ds3_state_free", None, P)
        fn("ds3_forward", st, P, POINTER(c_int32), c_int, c_int, R)
        fn("ds3_forward_last", st, P, POINTER(c_int32), c_int, c_int, R)
        fn("ds3_state_set_kernels", st, P, c_int)
        fn("ds3_kernels_parse", st, c_char_p, POINTER(c_int))
        fn("ds3_state_set_mtp", st, P, c_int)
        fn("ds3_dump_begin", st, P, c_int)
        fn("ds3_dump_write_mem", st, P, POINTER(c_char_p), POINTER(c_void_p), POINTER(c_size_t))
        fn("ds3_emulation_parse", st, c_char_p, POINTER(Emulation))
        fn("ds3_set_emulation", st, P, POINTER(Emulation))
        # sampling, speculative decoding
        fn("ds3_sampler_new", st, c_float, c_float, c_uint64, POINTER(P))
        fn("ds3_sampler_free", None, P)
        fn("ds3_sample", c_int, P, R, c_int)
        fn("ds3_generate_spec", st, P, P, c_int, R, c_int, c_int, POINTER(c_int32), c_void_p, c_void_p,
           POINTER(SpecStats))
        # comparison
        fn("ds3_compare_mem", st, c_char_p, c_size_t, c_char_p, c_char_p, c_size_t, c_char_p,
           POINTER(CompareOpts), POINTER(c_int), POINTER(c_void_p), POINTER(c_void_p))
        fn("ds3_replay_mem", st, P, c_char_p, c_size_t, POINTER(ReplayOpts), POINTER(c_int32), c_int,
           POINTER(c_int), POINTER(c_void_p), POINTER(c_void_p))
        # tokenizer
        fn("ds3_tokenizer_load", st, c_char_p, POINTER(P))
        fn("ds3_tokenizer_free", None, P)
        fn("ds3_tokenizer_n_ids", c_int, P)
        fn("ds3_tokenizer_bos", c_int32, P)
        fn("ds3_tokenizer_eos", c_int32, P)
        fn("ds3_tokenizer_chat_prompt", st, P, c_char_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t))
        fn("ds3_tokenizer_encode", st, P, c_char_p, c_size_t, c_uint, POINTER(c_void_p), POINTER(c_size_t))
        fn("ds3_tokenizer_decode", st, P, POINTER(c_int32), c_size_t, POINTER(c_void_p), POINTER(c_size_t))

    def check(self, status, what=None):
        """Raise the ds3.Error subclass of a non-zero status with the library's
        message (read on this thread: the C side keeps it per thread)."""
        if status == 0:
            return
        msg = (self.last_error() or b"").decode("utf-8", "replace")
        if not msg:
            msg = (self.status_name(status) or b"error").decode()
        if what:
            msg = f"{what}: {msg}"
        raise _BY_STATUS.get(status, Error)(msg)

    def take_string(self, ptr, length=None):
        """Copy a malloc'd C string (or `length` bytes) into Python bytes and free it."""
        if not ptr:
            return b""
        try:
            return ctypes.string_at(ptr, length) if length is not None else ctypes.string_at(ptr)
        finally:
            self.free(ptr)


def lib(precision="f32"):
    """The library of one precision ("f32" or "f64"), loaded once."""
    if precision not in PRECISIONS:
        raise ArgumentError(f"precision '{precision}' is not one of f32, f64")
    with _load_lock:
        if precision not in _libs:
            _libs[precision] = Lib(precision)
        return _libs[precision]


def cstr(s, what):
    """str / bytes / os.PathLike → bytes for a const char * (no NUL inside)."""
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    if isinstance(s, str):
        s = s.encode("utf-8", "surrogateescape")
    if not isinstance(s, bytes):
        raise ArgumentError(f"{what}: expected a string or path, got {type(s).__name__}")
    if b"\0" in s:
        raise ArgumentError(f"{what}: contains a NUL byte")
    return s
