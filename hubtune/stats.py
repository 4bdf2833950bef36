"""Paired statistics over seeds, pure Python: used by ``hubtune compare`` and the benchmarks."""

from __future__ import annotations

import itertools
import random
import statistics

__all__ = ["paired_sign_flip_p"]

_EXACT_UP_TO = 20


def paired_sign_flip_p(differences: list[float], samples: int = 200_000, seed: int = 0) -> float | None:
    """Two-sided p-value of a paired sign-flip (permutation) test of mean difference 0.

    Under the null hypothesis each seed's difference is as likely positive as negative, so all 2^n sign patterns
    are equally likely; p is the share whose |mean| is at least the observed one. Exact (every pattern) for up to
    20 pairs; above that, estimated from ``samples`` random patterns drawn with ``seed``. None for fewer than 2
    pairs.
    """
    n = len(differences)
    if n < 2:
        return None
    observed = abs(statistics.fmean(differences)) - 1e-12
    if n <= _EXACT_UP_TO:
        hits = sum(abs(sum(s * d for s, d in zip(signs, differences))) / n >= observed
                   for signs in itertools.product((1, -1), repeat=n))
        return hits / 2 ** n
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in differences)) / n >= observed for _ in range(samples))
    return (hits + 1) / (samples + 1)
