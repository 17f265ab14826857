"""Fuzz worker: parse seeded mutations of real models, print one line per case (run in a subprocess).

Usage: python fuzz_reader_worker.py WORKDIR FIRST COUNT MODEL...
Each case prints "<case> ok|modelerror"; any other exception or a signal kills the run, and the
parent test reports the last case printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgert.errors import ModelError
from edgert.model import load_model


def mutate(data: bytes, rng: np.random.Generator, donors: list[bytes]) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 5)
    if kind == 0:  # truncation
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:  # byte flips
        for _ in range(int(rng.integers(1, 17))):
            i = int(rng.integers(0, len(b)))
            b[i] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == 2:  # 32-bit word overwrite with an interesting value (offsets, lengths)
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, max(1, len(b) - 4)))
            v = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(b), len(b) - 4, int(rng.integers(0, 1 << 32))]))
            b[i:i + 4] = v.to_bytes(4, "little")
        return bytes(b)
    if kind == 3:  # splice: a chunk from a donor model pasted over this one
        donor = donors[int(rng.integers(0, len(donors)))]
        n = int(rng.integers(1, min(len(donor), 4096)))
        src = int(rng.integers(0, len(donor) - n + 1))
        dst = int(rng.integers(0, max(1, len(b) - n)))
        b[dst:dst + n] = donor[src:src + n]
        return bytes(b)
    # chunk deletion / duplication shifts every later offset
    i = int(rng.integers(0, len(b)))
    n = int(rng.integers(1, 257))
    if rng.integers(0, 2):
        del b[i:i + n]
    else:
        b[i:i] = b[i:i + n]
    return bytes(b)


def main() -> None:
    workdir, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    models = [Path(p).read_bytes() for p in sys.argv[4:]]
    for case in range(first, first + count):
        rng = np.random.default_rng(case)
        data = mutate(models[case % len(models)], rng, models)
        path = workdir / f"case{case}.tflite"
        path.write_bytes(data)
        try:
            graph = load_model(path)
            # touch every constant byte, so a view past the mapping would fault here
            total = sum(int(t.data.reshape(-1).view(np.uint8).sum()) for sg in graph.subgraphs for t in sg.tensors if t.data is not None)
            outcome = f"ok {total % 997}"
        except ModelError:
            outcome = "modelerror"
        path.unlink()
        print(case, outcome, flush=True)


if __name__ == "__main__":
    main()
