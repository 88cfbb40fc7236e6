"""A reader of safetensors files for the tests (numpy only): {name: array}, metadata."""

import json
import struct

import numpy as np

DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
      "I32": np.int32, "U8": np.uint8, "F8_E4M3": np.uint8}


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def read(path):
    h, data = header(path)
    meta = h.pop("__metadata__", {})
    raw = np.fromfile(path, dtype=np.uint8)
    out = {}
    for name, e in h.items():
        b, end = e["data_offsets"]
        out[name] = raw[data + b:data + end].view(np.dtype(DT[e["dtype"]]).newbyteorder("<")).reshape(e["shape"])
    return out, meta


def write(path, tensors, dtypes=None, metadata=None):
    """Write raw arrays with the given safetensors dtype names (default from numpy)."""
    inv = {np.dtype(v): k for k, v in DT.items() if k not in ("BF16", "F8_E4M3")}
    hdr, chunks, off = {}, [], 0
    if metadata:
        hdr["__metadata__"] = metadata
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = (dtypes or {}).get(name) or inv[a.dtype]
        b = a.tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
