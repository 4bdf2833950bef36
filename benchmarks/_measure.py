"""Measurement helpers shared by the benchmarks: interleaved step timing and paired tests over seeds (pure Python)."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable


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


def paired_sign_flip_p(differences: list[float]) -> float | None:
    """Exact two-sided p-value of a paired sign-flip (permutation) test of mean difference 0.

    Under the null hypothesis each seed's difference is as likely positive as negative, so all 2^n sign
    patterns are equally likely; p is the share whose |mean| is at least the observed one. None for fewer than
    2 pairs; n up to 20 (2^20 patterns).
    """
    n = len(differences)
    if n < 2:
        return None
    if n > 20:
        raise ValueError(f"{n} pairs: the exact test enumerates 2^n sign patterns; use at most 20")
    observed = abs(statistics.fmean(differences)) - 1e-12
    hits = sum(abs(sum(s * d for s, d in zip(signs, differences))) / n >= observed
               for signs in itertools.product((1, -1), repeat=n))
    return hits / 2 ** n
