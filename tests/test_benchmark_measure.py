"""The benchmarks' measurement helpers: the paired sign-flip test against hand-counted cases, interleaved timing."""

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _measure import paired_sign_flip_p, time_interleaved  # noqa: E402


def test_all_positive_differences_reach_the_smallest_p():
    # only the all-+ and all-- patterns are as extreme: 2 / 2^5
    assert paired_sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)


def test_symmetric_differences_give_p_one():
    assert paired_sign_flip_p([1.0, -1.0, 2.0, -2.0]) == 1.0


def test_matches_a_direct_count():
    d = [0.5, -0.2, 1.3, 0.9, -0.4, 0.7]
    observed = abs(sum(d))
    count = sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-9
                for signs in itertools.product((1, -1), repeat=len(d)))
    assert paired_sign_flip_p(d) == pytest.approx(count / 2 ** len(d))


def test_one_pair_has_no_p_and_many_pairs_are_estimated_from_random_patterns():
    assert paired_sign_flip_p([1.0]) is None
    assert paired_sign_flip_p([1.0] * 21, samples=5000) < 1e-3  # exact value 2 / 2^21
    assert paired_sign_flip_p([1.0, -1.0] * 11, samples=5000) == pytest.approx(1.0, abs=1e-3)


def test_interleaved_timing_runs_warmup_untimed_and_alternates_the_steps():
    calls, synced = [], []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2, repeats=3,
                             sync=lambda: synced.append(1))
    assert calls == ["a", "b"] * 5  # interleaved, warm-up rounds included
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and all(t >= 0 for v in times.values() for t in v)
    assert len(synced) == 2 * 10  # before and after every call
