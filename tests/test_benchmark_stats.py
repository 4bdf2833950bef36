"""The paired sign-flip test of the benchmark tables, against hand-counted cases."""

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _stats import paired_sign_flip_p  # noqa: E402


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


def test_one_pair_has_no_p_and_too_many_pairs_is_an_error():
    assert paired_sign_flip_p([1.0]) is None
    with pytest.raises(ValueError, match="at most 20"):
        paired_sign_flip_p([1.0] * 21)
