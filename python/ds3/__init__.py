"""
ds3 — DeepSeek-V3's reference implementation (the ds3 C library) from Python:
token ids in, numpy arrays out.

    import ds3
    m = ds3.Model("build/models/tiny-fp8")              # precision="f32" | "f64"
    logits = m.forward([1, 2, 3])                       # numpy [3, vocab]
    acts = m.dump([1, 2, 3])                            # {"embed": ..., "layers.0.attn.out": ..., ...}
    print(ds3.compare(acts, "gpu.safetensors", profile="bf16"))

Threads: a Model is a read-only view of the mmap'd checkpoint; every forward,
dump and generate call makes its own inference state (KV caches, scratch) and
frees it before returning, so one Model may be used from many threads at once,
with no lock, and the GIL is released while the C code runs. Every call gives
the bits it gives alone.

Memory: every array returned owns its memory (a copy out of the C buffers,
which are freed before the call returns).

Errors: a failing library call raises a subclass of ds3.Error carrying ds3's
message: FileError, FormatError, ConfigError, MissingTensorError, ShapeError,
OutOfMemoryError, ArgumentError (bad tokens, options, shapes or dtypes, also
when caught before the library is called).
"""

import ctypes
import json
import os
import threading
from collections.abc import Mapping
from ctypes import byref, c_int, c_int32, c_size_t, c_uint64, c_void_p

import numpy as np

from . import _st
from ._lib import (ArgumentError, CompareOpts, ConfigError, Emulation, Error, FileError, FormatError,
                   MissingTensorError, MkmodelOpts, OutOfMemoryError, ReplayOpts, ShapeError, SpecStats, cstr, lib)

__version__ = "0.1.0"
__all__ = ["Model", "Dump", "Tokenizer", "Report", "TensorRow", "compare", "mkmodel", "info", "builtin_configs",
           "Error", "FileError", "FormatError", "ConfigError", "MissingTensorError", "ShapeError",
           "OutOfMemoryError", "ArgumentError"]

_KERNELS = ("fast", "deterministic", "ref")
_ATTN = {"absorb": 0, "naive": 1}


def _ids(tokens, what="tokens", allow_empty=False):
    """Token ids as a contiguous int32 array (1-D), or ArgumentError."""
    if isinstance(tokens, (str, bytes)):
        raise ArgumentError(f"{what}: expected token ids (a list of ints or a 1-D integer array), got a string")
    try:
        a = np.asarray(tokens)
    except Exception as e:  # ragged lists and the like
        raise ArgumentError(f"{what}: not a sequence of token ids ({e})") from None
    if a.ndim != 1:
        raise ArgumentError(f"{what}: expected a 1-D sequence of token ids, got shape {a.shape}")
    if a.size == 0:
        if allow_empty:
            return np.zeros(0, np.int32)
        raise ArgumentError(f"{what}: no tokens")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        if a.dtype == object and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in a):
            a = np.array([int(t) for t in a], dtype=object)
        else:
            raise ArgumentError(f"{what}: token ids must be integers, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 2**31 - 1:
        bad = lo if lo < 0 else hi
        idx = int(np.nonzero(a == bad)[0][0])
        raise ArgumentError(f"{what}: token {bad} at index {idx} is out of range")
    return np.ascontiguousarray(a.astype(np.int32))


def _ptr(a, ctype):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


# ===========================================================================
# Models
# ===========================================================================

class Dump(dict):
    """A dump: {name: ndarray} in the order the forward pass produced them
    (docs/DUMP_FORMAT.md), with the file's metadata in `.metadata`."""

    def __init__(self, tensors=(), metadata=None):
        super().__init__(tensors)
        self.metadata = dict(metadata or {})


class Model:
    """A checkpoint loaded by ds3 (a Hugging Face model directory).

    precision  "f32" (the library built with float) or "f64" (double: the oracle mode)
    kernels    "fast" | "deterministic" | "ref" (docs/ARCHITECTURE.md §6; same bits for any thread count)
    attn       "absorb" (latent KV cache) | "naive" (per-head cache)
    """

    def __init__(self, path, precision="f32", kernels="fast", attn="absorb"):
        self._m = None
        self._lib = lib(precision)
        if kernels not in _KERNELS:
            raise ArgumentError(f"kernels '{kernels}' is not one of fast, deterministic, ref")
        if attn not in _ATTN:
            raise ArgumentError(f"attn '{attn}' is not one of absorb, naive")
        self.path, self.precision, self.kernels, self.attn = os.fspath(path) if isinstance(path, os.PathLike) \
            else path, precision, kernels, attn
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False
        self._decode_ready = False
        p = c_void_p()
        self._lib.check(self._lib.model_load(cstr(path, "path"), byref(p)))
        self._m = p
        L = self._lib
        self.vocab_size = L.model_vocab_size(p)
        self.num_layers = L.model_num_layers(p)
        self.num_mtp = L.model_num_mtp(p)
        self.top_k = L.model_top_k(p)
        self.max_positions = L.model_max_positions(p)
        self._config = None

    # -- lifetime: close() waits for no one; the last call in flight frees -----

    def close(self):
        """Release the checkpoint (also done when the Model is garbage-collected)."""
        with self._lock:
            self._closing = True
            free = self._users == 0 and self._m is not None
            m, self._m = (self._m, None) if free else (self._m, self._m)
        if free:
            self._lib.model_free(m)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_m", None) is not None and getattr(self, "_users", 0) == 0:
            self._lib.model_free(self._m)
            self._m = None

    def _acquire(self):
        with self._lock:
            if self._m is None or self._closing:
                raise ArgumentError("the model is closed")
            self._users += 1
            return self._m

    def _prepare_decode(self, m):
        """ds3_model_prepare_decode once, before the first generate: lm_head laid out
        for one-token steps (the same ids; only faster). It wants no forward running
        on the model, so only a generate that is the model's one user does it, with
        the lock held so that none starts meanwhile."""
        with self._lock:
            if not self._decode_ready and self._users == 1:
                self._lib.check(self._lib.model_prepare_decode(m), "prepare decode")
                self._decode_ready = True

    def _release(self):
        with self._lock:
            self._users -= 1
            free = self._closing and self._users == 0 and self._m is not None
            m = self._m
            if free:
                self._m = None
        if free:
            self._lib.model_free(m)

    def __repr__(self):
        return (f"ds3.Model({self.path!r}, precision={self.precision!r}, kernels={self.kernels!r}, "
                f"attn={self.attn!r})")

    @property
    def config(self):
        """config.json as ds3 read it (Hugging Face's defaults filled in), a dict."""
        if self._config is None:
            m = self._acquire()
            try:
                out = c_void_p()
                self._lib.check(self._lib.model_config_json(m, byref(out)))
                self._config = json.loads(self._lib.take_string(out.value).decode("utf-8"))
            finally:
                self._release()
        return dict(self._config)

    def describe(self):
        """`ds3 info -m DIR`'s text: architecture, parameters, KV cache per token, files."""
        m = self._acquire()
        try:
            out = c_void_p()
            self._lib.check(self._lib.model_describe_str(m, byref(out)))
            return self._lib.take_string(out.value).decode("utf-8", "replace")
        finally:
            self._release()

    # -- states ------------------------------------------------------------------

    def _positions(self, need, what):
        if self.max_positions > 0 and need > self.max_positions:
            raise ArgumentError(f"{what} needs {need} positions, the model has max_position_embeddings "
                                f"{self.max_positions}")

    def _state(self, m, max_seq):
        L = self._lib
        s = c_void_p()
        L.check(L.state_new(m, max_seq, _ATTN[self.attn], byref(s)), "creating state")
        st = L.state_set_kernels(s, _KERNELS.index(self.kernels))
        if st:
            L.state_free(s)
            L.check(st, "kernels")
        return s

    # -- the calls -----------------------------------------------------------------

    def forward(self, tokens):
        """Logits of every position, numpy [T, vocab] (float32, or float64 for f64):
        one forward pass over positions 0..T-1, as `ds3 dump`'s "logits"."""
        toks = _ids(tokens)
        T, V = len(toks), self.vocab_size
        self._positions(T, "the token list")
        out = np.empty((T, V), dtype=self._lib.np_real)
        L = self._lib
        m = self._acquire()
        try:
            s = self._state(m, T)
            try:
                L.check(L.forward(s, _ptr(toks, c_int32), T, 0, _ptr(out, L.real)), "forward")
            finally:
                L.state_free(s)
        finally:
            self._release()
        return out

    def dump(self, tokens, emulate=None, decode_from=0):
        """The named activations of a forward pass over `tokens`, as `ds3 dump`
        writes them (docs/DUMP_FORMAT.md, MTP included): a Dump, {name: ndarray}.
        emulate: a GPU build's rounding ("bf16", "fp8,ue8m0", …; docs/COMPARING.md).
        decode_from=K: prefill K tokens, then one at a time (`--decode-from`)."""
        toks = _ids(tokens)
        T = len(toks)
        self._positions(T, "the token list")
        if not isinstance(decode_from, (int, np.integer)) or isinstance(decode_from, bool) or \
                not 0 <= decode_from <= T:
            raise ArgumentError(f"decode_from: {decode_from!r} is not an integer in 0..{T}")
        L = self._lib
        emu = Emulation()
        if emulate is not None:
            L.check(L.emulation_parse(cstr(emulate, "emulate"), byref(emu)), "emulate")
        meta = {"command": "ds3.Model.dump (Python)", "model_dir": str(self.path),
                "tokens": ",".join(str(int(t)) for t in toks), "attn": self.attn,
                "decode_from": str(int(decode_from)), "emulate": emulate or "none", "kernels": self.kernels}
        kv = []
        for k, v in meta.items():
            kv += [k.encode(), v.encode("utf-8", "surrogateescape")]
        kv_arr = (ctypes.c_char_p * (len(kv) + 1))(*kv, None)
        m = self._acquire()
        try:
            s = self._state(m, T)
            try:
                L.check(L.set_emulation(s, byref(emu)), "emulate")
                L.check(L.dump_begin(s, T), "dump")
                p = _ptr(toks, c_int32)
                if decode_from == 0:
                    L.check(L.forward(s, p, T, 0, None), "forward")
                else:
                    K = int(decode_from)
                    L.check(L.forward(s, p, K, 0, None), "forward")
                    for i in range(K, T):
                        L.check(L.forward(s, _ptr(toks[i:], c_int32), 1, i, None), "forward")
                buf, n = c_void_p(), c_size_t()
                L.check(L.dump_write_mem(s, kv_arr, byref(buf), byref(n)), "dump")
                try:
                    tensors, file_meta = _st.parse(buf.value, n.value)
                finally:
                    L.free(buf)
            finally:
                L.state_free(s)
        finally:
            self._release()
        return Dump(tensors, file_meta)

    def generate(self, tokens, n, temperature=0.0, top_p=1.0, seed=0, mtp=False, draft=1):
        """n ids after `tokens`, as `ds3 run --tokens … -n n` prints them (no stop at
        EOS): greedy at temperature 0, else top-p sampling with a seeded PRNG.
        mtp=True: speculative decoding with the checkpoint's MTP layer, `draft`
        (1..16) tokens per step (`run --mtp --draft`): greedy output is the same ids."""
        toks = _ids(tokens)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ArgumentError(f"n: {n!r} is not a non-negative integer")
        if not isinstance(draft, (int, np.integer)) or isinstance(draft, bool) or not 1 <= draft <= 16:
            raise ArgumentError(f"draft: {draft!r} is not an integer in 1..16")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ArgumentError(f"seed: {seed!r} is not an integer in 0..2^64-1")
        n, T, V = int(n), len(toks), self.vocab_size
        if n == 0:
            return []
        self._positions(T + n, "the prompt plus n")
        if mtp and self.num_mtp == 0:
            raise ArgumentError(f"mtp: the model in {self.path} has no MTP layers")
        L = self._lib
        smp = c_void_p()
        L.check(L.sampler_new(float(temperature), float(top_p), int(seed), byref(smp)), "sampler")
        m = self._acquire()
        try:
            self._prepare_decode(m)
            s = self._state(m, T + n)
            try:
                if mtp:
                    L.check(L.state_set_mtp(s, 1), "mtp")
                # The prefill as `ds3 run` does it: the logits of the last position
                # only (ds3_forward_last), so the ids are run's ids.
                real = np.dtype(L.np_real)
                last = np.empty((1, V), dtype=real)
                L.check(L.forward_last(s, _ptr(toks, c_int32), T, 0, _ptr(last, L.real)), "prefill")
                if mtp:
                    out = np.zeros(n, dtype=np.int32)
                    stats = SpecStats()
                    L.check(L.generate_spec(s, smp, T, _ptr(last, L.real), n, int(draft), _ptr(out, c_int32),
                                            None, None, byref(stats)), "decode")
                    return [int(t) for t in out[:stats.generated]]
                ids = []
                cur = last
                step = np.empty((1, V), dtype=real)
                for k in range(n):
                    tok = L.sample(smp, _ptr(cur, L.real), V)
                    if tok < 0:
                        L.check(7, "sampling")
                    ids.append(int(tok))
                    if k + 1 < n:
                        t32 = c_int32(tok)
                        L.check(L.forward(s, byref(t32), 1, T + k, _ptr(step, L.real)), "decode")
                        cur = step
                return ids
            finally:
                L.state_free(s)
        finally:
            self._release()
            L.sampler_free(smp)


    def replay(self, build, tokens=None, profile="fp32", atol=None, rtol=None, routing=None, emulate=None):
        """`ds3 replay -m DIR BUILD` (docs/COMPARING.md, "Replay"): every layer of a
        build's dump recomputed by ds3 from the build's own inputs, then compared
        with the build's values (the replay profiles: one layer's error, not the
        sum of all before it). build: a dict of arrays, a Dump, or a safetensors
        path; tokens: the ids it ran (default: its "tokens" metadata).
        routing "build" | "own" (default: the build's experts when it has
        topk_idx); emulate: round like a GPU build. Returns a Report; str() is
        the CLI's table (its first line names the model)."""
        if profile not in ("fp32", "bf16", "fp8"):
            raise ArgumentError(f"profile '{profile}' is not one of fp32, bf16, fp8")
        if routing not in (None, "build", "own"):
            raise ArgumentError(f"routing '{routing}' is not one of build, own")
        data, label = _side(build, "BUILD")
        meta_tokens = _st.header_metadata(data).get("tokens")
        if tokens is None:
            if meta_tokens is None:
                raise ArgumentError("replay: no tokens: give tokens= (BUILD has no 'tokens' metadata)")
            try:
                tokens = [int(t) for t in meta_tokens.split(",")]
            except ValueError:
                raise ArgumentError(f"replay: BUILD's tokens metadata '{meta_tokens[:80]}' is not a list of ids") \
                    from None
            source = "BUILD's metadata"
        else:
            source = "--tokens"
        toks = _ids(tokens)
        if source == "--tokens" and meta_tokens is not None and \
                meta_tokens != ",".join(str(int(t)) for t in toks):
            raise ArgumentError(f"replay: tokens differ from BUILD's tokens metadata ({meta_tokens[:80]}): the "
                                "replay would be of other inputs")
        T = len(toks)
        self._positions(T, "the token list")
        L = self._lib
        o = ReplayOpts(profile=profile.encode(), routing={None: 0, "build": 1, "own": 2}[routing],
                       build_label=cstr(label, "label"), model_label=cstr(str(self.path), "path"),
                       tokens_from=source.encode())
        _tolerances(o, atol, rtol)
        emu = Emulation()
        if emulate is not None:
            L.check(L.emulation_parse(cstr(emulate, "emulate"), byref(emu)), "emulate")
        ok, table, js = c_int(), c_void_p(), c_void_p()
        m = self._acquire()
        try:
            s = self._state(m, T)
            try:
                L.check(L.set_emulation(s, byref(emu)), "emulate")
                L.check(L.replay_mem(s, data, len(data), byref(o), _ptr(toks, c_int32), T, byref(ok), byref(table),
                                     byref(js)), "replay")
            finally:
                L.state_free(s)
        finally:
            self._release()
        t = L.take_string(table.value).decode("utf-8", "replace")
        j = json.loads(L.take_string(js.value).decode("utf-8", "replace"))
        return Report(ok.value, t, j)


# ===========================================================================
# Comparing
# ===========================================================================

class TensorRow:
    """One tensor of a comparison: the fields of `ds3 compare --json` (name,
    shape, kind, ok, why, max_abs, max_rel, scaled, cos, nmse, worst_index, …)."""

    def __init__(self, fields):
        self.__dict__.update(fields)
        self.fields = dict(fields)

    def __getattr__(self, name):  # fields a kind does not have
        return None

    def __repr__(self):
        return f"TensorRow({self.name!r}, ok={self.ok}{'' if self.ok else ', why=' + repr(self.why)})"


class Report:
    """The outcome of ds3.compare: `.ok`, `.rows` (one TensorRow per tensor, in
    REF's order), `.first_failure` (the first row that failed, None if ok),
    `.missing`, `.tokens_differ`, `.json` (the `--json` object); str() is the
    table `ds3 compare` prints."""

    def __init__(self, ok, table, obj):
        self.ok = bool(ok)
        self.table = table
        self.json = obj
        self.rows = [TensorRow(t) for t in obj.get("tensors", [])]
        self.missing = list(obj.get("missing", []))
        self.tokens_differ = bool(obj.get("tokens_differ"))
        first = next((r for r in self.rows if not r.ok), None)
        if first is None and self.missing:
            first = TensorRow({"name": self.missing[0].split(" (")[0], "ok": False, "why": self.missing[0]})
        if first is None and not self.ok:
            why = "the dumps are of different tokens" if self.tokens_differ else "no tensors compared"
            first = TensorRow({"name": None, "ok": False, "why": why})
        self.first_failure = first

    def __bool__(self):
        return self.ok

    def __str__(self):
        return self.table

    def __repr__(self):
        n_bad = sum(not r.ok for r in self.rows)
        return f"<ds3.Report {'PASS' if self.ok else 'FAIL'}: {len(self.rows)} compared, {n_bad} outside>"


def _tolerances(o, atol, rtol):
    """atol/rtol into an options structure: either given means the elementwise bound."""
    if atol is None and rtol is None:
        return
    o.elementwise = 1
    for nm, v in (("atol", atol), ("rtol", rtol)):
        try:
            fv = float(v) if v is not None else 0.0
        except (TypeError, ValueError):
            raise ArgumentError(f"{nm}: {v!r} is not a number") from None
        if not np.isfinite(fv) or fv < 0:
            raise ArgumentError(f"{nm}: {v!r} is not a finite non-negative number")
        setattr(o, nm, fv)


def _side(x, what):
    """One side of a comparison as (safetensors bytes, label)."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        try:
            with open(path, "rb") as f:
                return f.read(), path
        except OSError as e:
            raise FileError(f"{what}: {path}: cannot open: {e.strerror or e}") from None
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x), f"({what.lower()} bytes)"
    if isinstance(x, Mapping):
        return _st.image(x, getattr(x, "metadata", None)), f"({what.lower()}: {len(x)} arrays)"
    raise ArgumentError(f"{what}: expected a dict of arrays, a safetensors path or bytes, got {type(x).__name__}")


def compare(ref, test, profile="bf16", atol=None, rtol=None, names=None, all_rows=False):
    """`ds3 compare REF TEST`: each side a dict of arrays (numpy; torch tensors
    are read with .numpy(), bfloat16 by its bits), a Dump, or a safetensors
    path. profile "fp32" | "bf16" | "fp8" (docs/COMPARING.md); atol/rtol:
    the elementwise bound instead of the profile's scaled one; names: globs
    ("layers.*,!mtp.*"); all_rows: keep routing-divergent rows. Returns a Report."""
    if profile not in ("fp32", "bf16", "fp8"):
        raise ArgumentError(f"profile '{profile}' is not one of fp32, bf16, fp8")
    o = CompareOpts(profile=profile.encode(), all_rows=1 if all_rows else 0)
    _tolerances(o, atol, rtol)
    if names is not None:
        if not isinstance(names, str):
            names = ",".join(names)
        o.names = cstr(names, "names")
    rb, rl = _side(ref, "REF")
    tb, tl = _side(test, "TEST")
    L = lib("f32")
    ok, table, js = c_int(), c_void_p(), c_void_p()
    L.check(L.compare_mem(rb, len(rb), cstr(rl, "label"), tb, len(tb), cstr(tl, "label"), byref(o), byref(ok),
                          byref(table), byref(js)))
    t = L.take_string(table.value).decode("utf-8", "replace")
    j = json.loads(L.take_string(js.value).decode("utf-8", "replace"))
    return Report(ok.value, t, j)


# ===========================================================================
# Tokenizer
# ===========================================================================

class Tokenizer:
    """DeepSeek-V3's tokenizer from a tokenizer.json (the file or its directory,
    e.g. a model directory): the ids of Hugging Face `tokenizers` (docs/TOKENIZER.md).
    Read-only once loaded: safe to share between threads."""

    def __init__(self, path):
        self._t = None
        self._lib = lib("f32")
        p = c_void_p()
        self._lib.check(self._lib.tokenizer_load(cstr(path, "path"), byref(p)))
        self._t = p
        self.n_ids = self._lib.tokenizer_n_ids(p)
        b, e = self._lib.tokenizer_bos(p), self._lib.tokenizer_eos(p)
        self.bos = None if b < 0 else int(b)
        self.eos = None if e < 0 else int(e)

    def __del__(self):
        if getattr(self, "_t", None):
            self._lib.tokenizer_free(self._t)
            self._t = None

    def _encode(self, data, flags):
        ids, n = c_void_p(), c_size_t()
        self._lib.check(self._lib.tokenizer_encode(self._t, data, len(data), flags, byref(ids), byref(n)))
        if not ids.value:
            return []
        try:
            return np.ctypeslib.as_array(ctypes.cast(ids.value, ctypes.POINTER(c_int32)), (n.value,)).tolist()
        finally:
            self._lib.free(ids)

    def encode(self, text, bos=False, special_as_text=False):
        """Ids of `text` (str, or bytes taken as they are); bos=True puts BOS first.
        Special tokens written in the text ("<｜User｜>") become their ids unless
        special_as_text."""
        if isinstance(text, str):
            data = text.encode("utf-8", "surrogatepass")
        elif isinstance(text, (bytes, bytearray)):
            data = bytes(text)
        else:
            raise ArgumentError(f"text: expected str or bytes, got {type(text).__name__}")
        return self._encode(data, (1 if bos else 0) | (2 if special_as_text else 0))

    def decode_bytes(self, ids):
        """The exact bytes of the ids (may be invalid UTF-8: a model can stop inside a character)."""
        a = _ids(ids, "ids", allow_empty=True)
        text, n = c_void_p(), c_size_t()
        self._lib.check(self._lib.tokenizer_decode(self._t, _ptr(a, c_int32), len(a), byref(text), byref(n)))
        return self._lib.take_string(text.value, n.value)

    def decode(self, ids, errors="replace"):
        """The text of the ids (bytes that are not UTF-8 become U+FFFD; errors= as bytes.decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    def chat_prompt(self, user, system=None):
        """DeepSeek-V3's chat prompt for one user turn, as text (BOS, system, <｜User｜>, user, <｜Assistant｜>)."""
        text, n = c_void_p(), c_size_t()
        self._lib.check(self._lib.tokenizer_chat_prompt(
            self._t, None if system is None else cstr(system, "system"), cstr(user, "user"), byref(text), byref(n)))
        return self._lib.take_string(text.value, n.value).decode("utf-8", "surrogateescape")

    def chat(self, user, system=None):
        """The ids of the chat prompt: what transformers' apply_chat_template(…,
        add_generation_prompt=True) gives, and `ds3 run --chat`."""
        text, n = c_void_p(), c_size_t()
        self._lib.check(self._lib.tokenizer_chat_prompt(
            self._t, None if system is None else cstr(system, "system"), cstr(user, "user"), byref(text), byref(n)))
        return self._encode(self._lib.take_string(text.value, n.value), 0)


# ===========================================================================
# Tools: synthetic checkpoints, summaries
# ===========================================================================

_DTYPES = {"f32": 0, "bf16": 1, "fp8": 2}
_V3_VOCAB = 129280
_PKG_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tokenizers", "deepseek-v3")


def builtin_configs():
    """Names of the built-in configs (v3, v2-lite, kimi-k2, tiny, small, …)."""
    L = lib("f32")
    f = L.dll.ds3_builtin_configs
    f.restype = ctypes.POINTER(ctypes.c_char_p)
    arr, out, i = f(), [], 0
    while arr[i]:
        out.append(arr[i].decode())
        i += 1
    return out


def mkmodel(config, dtype, seed, out, bias_shift=0.0, mtp_agree=0.0, tokenizer=None):
    """`ds3 mkmodel`: a deterministic synthetic checkpoint in Hugging Face layout
    written to `out` (docs/MKMODEL.md). config: a built-in name or a config.json
    path; dtype "f32" | "bf16" | "fp8". A model with DeepSeek-V3's vocabulary
    gets its tokenizer; tokenizer=PATH copies another (file or directory). Returns out."""
    if dtype not in _DTYPES:
        raise ArgumentError(f"dtype '{dtype}' is not one of f32, bf16, fp8")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ArgumentError(f"seed: {seed!r} is not an integer in 0..2^64-1")
    L = lib("f32")
    o = MkmodelOpts(config=cstr(config, "config"), dtype=_DTYPES[dtype], seed=int(seed),
                    bias_shift=float(bias_shift), mtp_agree=float(mtp_agree), tokenizer=None)
    size, vocab = c_uint64(0), c_int(0)
    L.check(L.mkmodel_estimate(byref(o), byref(size), byref(vocab)), "mkmodel")
    vocab = vocab.value
    src = tokenizer
    if src is None and vocab == _V3_VOCAB and os.path.isfile(os.path.join(_PKG_TOKENIZER, "tokenizer.json")):
        src = _PKG_TOKENIZER
    if src is not None:
        src = os.fspath(src)
        t = Tokenizer(src)              # a broken tokenizer is refused here, not at first use
        if t.n_ids > vocab:
            raise ArgumentError(f"tokenizer {src} has {t.n_ids} ids, more than the model's vocab_size {vocab}")
        # copied into the model with the weights (the whole directory appears at once)
        o.tokenizer = cstr(src, "tokenizer")
    L.check(L.mkmodel(byref(o), cstr(out, "out")), "mkmodel")
    return os.fspath(out)


def info(path_or_name):
    """`ds3 info`'s text: for a model directory with weights, the loaded model
    (`info -m DIR`); for a built-in name or a config.json (or a directory with
    only one), the config (`info --config X`)."""
    p = os.fspath(path_or_name) if isinstance(path_or_name, os.PathLike) else path_or_name
    if not isinstance(p, str):
        raise ArgumentError(f"info: expected a path or a config name, got {type(p).__name__}")
    L = lib("f32")
    if os.path.isdir(p):
        weights = any(os.path.isfile(os.path.join(p, f))
                      for f in ("model.safetensors", "model.safetensors.index.json"))
        if weights:
            with Model(p) as m:
                return m.describe()
        p = os.path.join(p, "config.json")
    out = c_void_p()
    L.check(L.config_describe_str(cstr(p, "path_or_name"), byref(out)))
    return L.take_string(out.value).decode("utf-8", "replace")


from . import testing  # noqa: E402,F401  (ds3.testing.assert_matches_reference)
