"""One Model from several Python threads: each call its own state, the GIL released."""

import os
import threading
import time

import numpy as np

import ds3

TOKENS = list(range(1, 25))


def test_threads_get_the_serial_bits(models):
    m = ds3.Model(os.path.join(models, "tiny-fp8"))
    m64 = ds3.Model(os.path.join(models, "tiny-fp8"), precision="f64")
    want = {"f": m.forward(TOKENS).tobytes(), "d": m.dump(TOKENS[:9])["logits"].tobytes(),
            "g": m.generate([1, 2, 3], 6), "64": m64.forward(TOKENS).tobytes()}
    got, errors = [], []

    def work(i):
        try:
            for _ in range(3):
                kind = ("f", "d", "g", "64")[i % 4]
                if kind == "f":
                    got.append((kind, m.forward(TOKENS).tobytes()))
                elif kind == "d":
                    got.append((kind, m.dump(TOKENS[:9])["logits"].tobytes()))
                elif kind == "g":
                    got.append((kind, m.generate([1, 2, 3], 6)))
                else:
                    got.append((kind, m64.forward(TOKENS).tobytes()))
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 24
    for kind, value in got:
        assert value == want[kind], kind


def test_the_gil_is_released_during_forward(models):
    """While one thread is inside forward, another Python thread keeps running."""
    m = ds3.Model(os.path.join(models, "tiny-f32"), kernels="ref")
    toks = np.arange(1, 121) % 500 + 1
    ticks, done = [0], threading.Event()

    def spin():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0)

    t = threading.Thread(target=spin)
    t.start()
    try:
        t0 = time.perf_counter()
        before = ticks[0]
        m.forward(toks)       # one foreign call: with the GIL held, spin() could not run at all
        during = ticks[0] - before
        elapsed = time.perf_counter() - t0
    finally:
        done.set()
        t.join()
    assert elapsed > 0.02, "the call is long enough to tell"
    assert during > 100, f"the other thread ran {during} times during {elapsed:.3f} s"
