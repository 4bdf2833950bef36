"""Paired comparisons over seeds for the benchmark tables (pure Python, no SciPy)."""

from __future__ import annotations

import itertools
import statistics


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
