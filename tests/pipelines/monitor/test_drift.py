"""PSI and shares on hand-made distributions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tsa_kedro.monitoring import drift


def test_identical_shares_give_zero():
    shares = [0.1, 0.2, 0.3, 0.4]
    assert drift.psi(shares, shares) == pytest.approx(0.0, abs=1e-12)


def test_known_shift_gives_its_value():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.2747, abs=1e-4)


def test_empty_bins_are_floored_not_infinite():
    value = drift.psi([1.0, 0.0], [0.5, 0.5])
    floor = drift.SHARE_FLOOR
    expected = (0.5 - 1.0) * math.log(0.5) + (0.5 - floor) * math.log(0.5 / floor)
    assert value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("reference", "current"),
    [([0.5, 0.5], [1.0]), ([], []), ([0.5, -0.5], [0.5, 0.5]), ([np.nan], [1.0])],
)
def test_rejects_mismatched_or_invalid_shares(reference, current):
    with pytest.raises(ValueError, match="PSI"):
        drift.psi(reference, current)


def test_bins_and_missing_share():
    values = np.array([1.0, 2.0, 2.0, 3.0, 10.0, np.nan, np.nan, 0.5])
    shares, missing = drift.bin_shares(values, [1.0, 2.0, 3.0])
    # <= 1: 1.0, 0.5; (1, 2]: 2, 2; (2, 3]: 3; > 3: 10
    assert shares == pytest.approx([2 / 8, 2 / 8, 1 / 8, 1 / 8])
    assert missing == pytest.approx(2 / 8)


def test_decile_edges_of_uniform_values():
    values = np.arange(1000, dtype=float)
    edges = drift.quantile_edges(values)
    assert len(edges) == 9
    shares, missing = drift.bin_shares(values, edges)
    assert shares == pytest.approx([0.1] * 10, abs=0.002) and missing == 0
    assert drift.quantile_edges(np.zeros(50)) == [0.0]  # tied deciles merge


def test_category_shares_count_top_other_and_missing():
    column = pd.Series(["a", "a", "b", "c", None, "", "NA"], dtype="string")
    shares = drift.category_shares(column, ["a", "b"], null_tokens=["NA"])
    assert shares == pytest.approx(
        {"a": 2 / 7, "b": 1 / 7, drift.OTHER: 1 / 7, drift.MISSING: 3 / 7}
    )
