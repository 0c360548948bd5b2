"""Metrics (paper Eq. 5-8) against numbers computed by hand."""
import math

import numpy as np
import pytest

from smdownscale.core import metrics

P = [0.1, 0.2, 0.3, 0.4]
O = [0.12, 0.18, 0.33, 0.37]
# By hand:
#   p - o        = [-0.02, 0.02, -0.03, 0.03]; squares 0.0004, 0.0004, 0.0009, 0.0009 -> sum 0.0026
#   RMSE         = sqrt(0.0026 / 4) = sqrt(0.00065)
#   E[p] = 1.0/4 = 0.25, E[o] = (0.12+0.18+0.33+0.37)/4 = 0.25 -> bias = 0, ubRMSE = RMSE
#   p - E[p]     = [-0.15, -0.05, 0.05, 0.15];  o - E[o] = [-0.13, -0.07, 0.08, 0.12]
#   sum products = 0.0195 + 0.0035 + 0.0040 + 0.0180 = 0.045
#   sum squares  = 0.05 (p), 0.0169 + 0.0049 + 0.0064 + 0.0144 = 0.0426 (o)
#   R            = 0.045 / sqrt(0.05 * 0.0426) = 0.97504...
R_HAND = 0.045 / math.sqrt(0.05 * 0.0426)
RMSE_HAND = math.sqrt(0.00065)


def test_hand_computed_values():
    assert metrics.r(P, O) == pytest.approx(R_HAND, abs=1e-12)
    assert R_HAND == pytest.approx(0.97504, abs=1e-5)
    assert metrics.rmse(P, O) == pytest.approx(RMSE_HAND, abs=1e-12)
    assert metrics.bias(P, O) == pytest.approx(0.0, abs=1e-12)
    assert metrics.ubrmse(P, O) == pytest.approx(RMSE_HAND, abs=1e-9)


def test_wet_bias_is_removed_by_ubrmse():
    # p + 0.05: bias = 0.05; RMSE^2 = E[(d + 0.05)^2] = 0.00065 + 2*0.05*E[d] + 0.0025, E[d] = 0
    #   -> RMSE = sqrt(0.00315); ubRMSE = sqrt(0.00315 - 0.0025) = sqrt(0.00065); R unchanged
    wet = [v + 0.05 for v in P]
    assert metrics.bias(wet, O) == pytest.approx(0.05, abs=1e-12)
    assert metrics.rmse(wet, O) == pytest.approx(math.sqrt(0.00315), abs=1e-12)
    assert metrics.ubrmse(wet, O) == pytest.approx(RMSE_HAND, abs=1e-9)
    assert metrics.r(wet, O) == pytest.approx(R_HAND, abs=1e-12)
    # dry product: negative bias
    assert metrics.bias([v - 0.02 for v in P], O) == pytest.approx(-0.02, abs=1e-12)


def test_nan_pairs_are_dropped():
    p = [0.1, np.nan, 0.2, 0.3, 0.4, 0.9]
    o = [0.12, 0.5, 0.18, 0.33, 0.37, np.nan]
    assert metrics.r(p, o) == pytest.approx(R_HAND, abs=1e-12)
    assert metrics.rmse(p, o) == pytest.approx(RMSE_HAND, abs=1e-12)
    got = metrics.all_metrics(p, o)
    assert got["n"] == 4
    assert got["bias"] == pytest.approx(0.0, abs=1e-12)


def test_too_few_pairs_and_constant_series():
    # two pairs: R undefined (documented), the others defined: d = [-0.02, 0.02]
    assert math.isnan(metrics.r([0.1, 0.2], [0.12, 0.18]))
    assert metrics.rmse([0.1, 0.2], [0.12, 0.18]) == pytest.approx(0.02, abs=1e-12)
    # constant product: zero variance -> NaN R; bias = 0.3 - 0.25 = 0.05
    assert math.isnan(metrics.r([0.3, 0.3, 0.3, 0.3], O))
    assert metrics.bias([0.3] * 4, O) == pytest.approx(0.05, abs=1e-12)
    # nothing valid at all
    empty = metrics.all_metrics([np.nan, 1.0], [0.2, np.nan])
    assert empty["n"] == 0
    assert all(math.isnan(empty[k]) for k in ("r", "rmse", "bias", "ubrmse"))
    with pytest.raises(ValueError):
        metrics.rmse([1, 2], [1, 2, 3])


def test_summarise_and_paper_classes():
    values = [0.7, 0.5, 0.2, np.nan, 0.9]
    s = metrics.summarise(values)
    # finite: 0.7, 0.5, 0.2, 0.9 -> mean 2.3/4 = 0.575, median (0.5+0.7)/2 = 0.6
    assert s == {"n": 4, "n_undefined": 1, "mean": pytest.approx(0.575), "median": pytest.approx(0.6),
                 "min": 0.2, "max": 0.9}
    assert math.isnan(metrics.summarise([np.nan])["mean"])
    # boundaries: 0.6 and 0.4 are moderate; -0.1 is low
    assert metrics.r_classes([0.61, 0.6, 0.4, 0.39, -0.1, np.nan]) == {
        "high": 1, "moderate": 2, "low": 2, "undefined": 1}
    assert metrics.ubrmse_classes([0.039, 0.04, 0.06, 0.061, 0.1]) == {
        "meets": 1, "acceptable": 2, "poor": 2, "undefined": 0}
