"""maj@k and the paired tests, against values computed by hand."""

import math

import pytest

from moa_lab.evaluate._significance import maj_at_k, majority, mcnemar, mcnemar_p, paired_bootstrap


def test_mcnemar_exact_against_hand_computed_values():
    # b=1, c=6: P(X<=1) for Binomial(7, 1/2) = (1 + 7) / 128; two-sided: 16/128 = 0.125
    assert mcnemar_p(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_p(6, 1) == pytest.approx(0.125)
    # b=0, c=5: 2 * (1/32) = 0.0625
    assert mcnemar_p(0, 5) == pytest.approx(0.0625)
    # b=2, c=10: 2 * (1 + 12 + 66) / 4096
    assert mcnemar_p(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    with pytest.raises(ValueError, match="b must be a count"):
        mcnemar_p(-1, 2)


def test_mcnemar_on_paired_answers():
    moa = [True] * 8 + [False] * 2 + [True] * 5  # 15 questions
    base = [True] * 8 + [True] * 2 + [False] * 5
    test = mcnemar(moa, base)
    assert test.difference == pytest.approx(100 * (13 - 10) / 15)
    assert test.p == pytest.approx(mcnemar_p(5, 2)) and "5 vs 2 discordant" in test.method
    low, high = test.interval
    assert low <= test.difference <= high
    with pytest.raises(ValueError, match="as many as each other"):
        mcnemar([True], [True, False])


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
    better = [1.0] * 40 + [0.0] * 10
    worse = [0.0] * 40 + [1.0] * 10
    test = paired_bootstrap(better, worse)
    assert test.difference == pytest.approx(0.6) and test.p < 0.001 and test.interval[0] > 0
    same = paired_bootstrap([1, 0] * 20, [0, 1] * 20)
    assert same.difference == 0 and same.p == pytest.approx(1.0, abs=0.05)
    assert paired_bootstrap(better, worse).interval == test.interval  # seeded


def test_maj_at_k_from_one_set_of_samples():
    samples = [
        ["3", "4", "4", "4"],  # maj@1 wrong, maj@2 tie -> "3" (first seen): wrong, maj@4 "4": right
        ["7", "7", "1", "1"],  # right at every k (a 2-2 tie goes to the first seen, "7")
        [None, "2", "5", "5"],  # None never wins: maj@1 none, maj@2 "2" wrong, maj@4 "5" right
    ]
    truth = ["4", "7", "5"]
    curve = maj_at_k(samples, truth, [1, 2, 4])
    assert curve == {1: pytest.approx(100 / 3), 2: pytest.approx(100 / 3), 4: 100.0}
    assert majority([None, None]) is None and majority(["a", "b", "b"]) == "b"
    with pytest.raises(ValueError, match="question 0 has 2 samples; maj@4 needs 4"):
        maj_at_k([["1", "2"]], ["1"], [1, 4])
    assert math.isclose(maj_at_k([["1"]], ["1"], [1])[1], 100.0)
