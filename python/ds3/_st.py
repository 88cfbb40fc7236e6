"""
_st.py — safetensors images in memory: the dumps the library hands over, and
the arrays a caller hands to ds3.compare. The format is an 8-byte
little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}, "__metadata__": {...}}, then the data (docs/DUMP_FORMAT.md).
The C library validates every image it reads (ds3_compare_mem); this module
reads only images the library itself wrote.
"""

import ctypes
import json
import struct
import sys

import numpy as np

# safetensors dtype name <-> numpy dtype (BF16 and F8_E4M3 have no numpy type:
# read as their raw bits, uint16 / uint8).
_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "F8_E4M3": np.uint8}
_ST = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
       np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "U8"}


def parse(ptr, length):
    """(tensors, metadata) from `length` bytes at the C pointer `ptr`: every
    array is a copy that owns its memory, so the buffer can be freed at once."""
    base = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8))
    raw = np.ctypeslib.as_array(base, shape=(length,))
    (hlen,) = struct.unpack("<Q", raw[:8].tobytes())
    header = json.loads(raw[8:8 + hlen].tobytes().decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = 8 + hlen
    out = {}
    for name, e in header.items():   # JSON object order = file order
        dt = np.dtype(_NP[e["dtype"]]).newbyteorder("<")
        b, end = e["data_offsets"]
        a = raw[data + b:data + end].view(dt).reshape(e["shape"]).copy()
        out[name] = a.astype(a.dtype.newbyteorder("=")) if sys.byteorder != "little" else a
    return out, meta


def header_metadata(data):
    """The __metadata__ of a safetensors image ({} when absent or unreadable:
    the library validates the image itself)."""
    try:
        (hlen,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + hlen].decode("utf-8")).get("__metadata__") or {}
        return meta if isinstance(meta, dict) else {}
    except Exception:
        return {}


def _to_numpy(name, v):
    """An array-like value as (numpy array, safetensors dtype). torch tensors are
    converted with .numpy() (bfloat16 through its bits), never importing torch."""
    if hasattr(v, "detach") and type(v).__module__.split(".")[0] == "torch":
        t = v.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            torch = sys.modules["torch"]
            return t.contiguous().view(torch.int16).numpy().view(np.uint16), "BF16"
        v = t.numpy()
    a = np.asarray(v)
    if a.dtype.name == "bfloat16":          # ml_dtypes / jax arrays
        return a.view(np.uint16), "BF16"
    st = _ST.get(a.dtype)
    if st is None:
        from ._lib import ArgumentError
        raise ArgumentError(f"{name}: dtype {a.dtype} is not one ds3 compares (float64, float32, float16, "
                            "bfloat16, int64, int32, uint8, bool)")
    return a, st


def image(tensors, metadata=None):
    """A dict of arrays (numpy, torch, anything np.asarray takes) as safetensors bytes."""
    from ._lib import ArgumentError
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, v in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ArgumentError(f"tensor name {name!r} is not a non-empty string")
        a, st = _to_numpy(name, v)
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
            a = a.astype(a.dtype.newbyteorder("<"))
        buf = a.tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(buf)]}
        chunks.append(buf)
        off += len(buf)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)
