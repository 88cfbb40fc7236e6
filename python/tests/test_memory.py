"""1,000 calls do not grow the process (resident set size before and after)."""

import ctypes
import gc
import os
import sys

import pytest

import ds3

TOKENS = [1, 2, 3, 4]


def rss_bytes():
    """Resident bytes, after glibc has given its free memory back: otherwise a leak
    could sit in pages freed earlier (by other tests) and never show."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except AttributeError:      # not glibc
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm (Linux)")
@pytest.mark.parametrize("call", ["forward", "dump", "generate"])
def test_1000_calls_do_not_grow_the_process(models, call):
    m = ds3.Model(os.path.join(models, "tiny-fp8"))
    fn = {"forward": lambda: m.forward(TOKENS), "dump": lambda: m.dump(TOKENS),
          "generate": lambda: m.generate(TOKENS[:3], 2)}[call]
    for _ in range(50):           # warm up: allocator pools, OpenMP and BLAS buffers, lazy pages
        fn()
    before = rss_bytes()
    for _ in range(1000):
        out = fn()
    del out
    after = rss_bytes()
    growth = after - before
    # What a leak of one call's result would add over 1,000 calls: forward's logits are
    # 4 x 512 floats (8 KB; 8 MB in all), a dump is ~50 KB; a leaked state is larger
    # still. 4 MB leaves room for allocator noise and catches any of them.
    print(f"{call}: RSS {before / 2**20:.1f} MB before, {after / 2**20:.1f} MB after 1,000 calls")
    assert growth < 4 * 2**20, f"grew {growth / 2**20:.2f} MB over 1,000 {call} calls"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm (Linux)")
def test_the_measure_sees_a_leak():
    """The check above can fail: 1,000 leaked 8 KB buffers (one forward's logits each) show."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    before = rss_bytes()
    for _ in range(1000):
        p = libc.malloc(8192)
        ctypes.memset(p, 1, 8192)       # touched, as logits would be; never freed
    assert rss_bytes() - before >= 4 * 2**20
