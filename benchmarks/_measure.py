"""Measurement helpers shared by the benchmarks: interleaved step timing (and hubtune's paired sign-flip test)."""

from __future__ import annotations

import time
from collections.abc import Callable

from hubtune.stats import paired_sign_flip_p  # noqa: F401  (re-exported for the benchmarks)


def time_interleaved(steps: dict[str, Callable[[], object]], *, warmup: int, repeats: int,
                     sync: Callable[[], object] = lambda: None) -> dict[str, list[float]]:
    """Seconds of each call of each step, the steps interleaved (A, B, C, A, B, C, ...) so that drifts of a shared
    machine's load hit every step alike; ``warmup`` rounds first, untimed. ``sync`` waits for the device (e.g.
    ``torch.cuda.synchronize``) before and after each timed call. Returns ``repeats`` times per step, in round
    order, so ``zip`` pairs the calls of one round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times
