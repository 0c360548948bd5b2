"""Agreement metrics of the paper (Eq. 5-8) and their summaries over sites.

All functions take two array-likes of equal length, ``pred`` (the product: SMAP, downscaled...)
and ``obs`` (the reference: in-situ or truth). Pairs where either value is NaN/inf are dropped
first. With no pair left, every metric is NaN. Correlation additionally needs at least
``MIN_PAIRS_FOR_R`` (3) pairs and non-zero variance in both series, otherwise it is NaN: with two
points R is always +-1 and says nothing, and with a constant series it is undefined.
"""
import math

import numpy as np

#: Fewer valid pairs than this give NaN correlation.
MIN_PAIRS_FOR_R = 3

#: The paper's agreement metrics (Eq. 5-8), in report order.
METRIC_NAMES = ("r", "rmse", "bias", "ubrmse")

#: The paper's classes (Section 4.2). Bounds: "high" is R > 0.6, "moderate" 0.4 <= R <= 0.6,
#: "low" R < 0.4; ubRMSE "meets" (the SMAP requirement) < 0.04, "acceptable" 0.04..0.06
#: (inclusive), "poor" > 0.06. NaN values are counted as "undefined". The one home of these
#: bounds: the reports, the summary counts and the QGIS style all read them from here.
R_CLASSES = ("high", "moderate", "low")
R_BOUNDS = (0.4, 0.6)
UBRMSE_CLASSES = ("meets", "acceptable", "poor")
UBRMSE_BOUNDS = (0.04, 0.06)
UNDEFINED_CLASS = "undefined"


def valid_pairs(pred, obs):
    """Return ``(pred, obs)`` as float64 arrays with the non-finite pairs removed.

    Parameters
    ----------
    pred, obs : array-like, shape (n,)

    Returns
    -------
    tuple of ndarray, shape (m,), m <= n
    """
    pred = np.asarray(pred, dtype="float64").ravel()
    obs = np.asarray(obs, dtype="float64").ravel()
    if pred.shape != obs.shape:
        raise ValueError(f"pred and obs differ in length ({pred.size} vs {obs.size}).")
    keep = np.isfinite(pred) & np.isfinite(obs)
    return pred[keep], obs[keep]


def r(pred, obs):
    """Pearson correlation coefficient (paper Eq. 5).

    ``E[(p - E p)(o - E o)] / (sigma_p sigma_o)``. NaN with fewer than 3 valid pairs or when
    either series is constant.
    """
    p, o = valid_pairs(pred, obs)
    if p.size < MIN_PAIRS_FOR_R:
        return math.nan
    dp = p - p.mean()
    do = o - o.mean()
    denominator = math.sqrt(float(np.sum(dp * dp)) * float(np.sum(do * do)))
    if denominator == 0.0:
        return math.nan
    return float(np.sum(dp * do) / denominator)


def rmse(pred, obs):
    """Root mean square error ``sqrt(E[(p - o)^2])`` (paper Eq. 6); NaN without pairs."""
    p, o = valid_pairs(pred, obs)
    if p.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((p - o) ** 2)))


def bias(pred, obs):
    """Mean bias ``E[p] - E[o]`` (paper Eq. 7); positive = product wetter than reference."""
    p, o = valid_pairs(pred, obs)
    if p.size == 0:
        return math.nan
    return float(p.mean() - o.mean())


def ubrmse(pred, obs):
    """Unbiased RMSE ``sqrt(RMSE^2 - bias^2)`` (paper Eq. 8); NaN without pairs.

    Equals the RMS of the anomalies ``(p - E p) - (o - E o)``; a tiny negative radicand from
    rounding is clipped to zero.
    """
    p, o = valid_pairs(pred, obs)
    if p.size == 0:
        return math.nan
    radicand = rmse(p, o) ** 2 - bias(p, o) ** 2
    return float(math.sqrt(max(radicand, 0.0)))


def all_metrics(pred, obs):
    """``dict(n, r, rmse, bias, ubrmse)`` for one series pair (n = valid pairs)."""
    p, o = valid_pairs(pred, obs)
    functions = {"r": r, "rmse": rmse, "bias": bias, "ubrmse": ubrmse}
    return {"n": int(p.size), **{name: functions[name](p, o) for name in METRIC_NAMES}}


def summarise(values):
    """Mean, median, min, max and count of the finite values (NaN when there is none).

    Parameters
    ----------
    values : array-like
        Metric values, e.g. R of every site; NaN entries are ignored and counted in
        ``"n_undefined"``.

    Returns
    -------
    dict with keys ``n``, ``n_undefined``, ``mean``, ``median``, ``min``, ``max``.
    """
    values = np.asarray(list(values), dtype="float64").ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        stats = dict.fromkeys(("mean", "median", "min", "max"), math.nan)
    else:
        stats = {"mean": float(finite.mean()), "median": float(np.median(finite)),
                 "min": float(finite.min()), "max": float(finite.max())}
    return {"n": int(finite.size), "n_undefined": int(values.size - finite.size), **stats}


def _classes(values, bounds, names):
    """Counts per class of ``names`` (above the upper bound, between inclusive, below the lower),
    plus ``undefined`` for NaN."""
    values = np.asarray(list(values), dtype="float64").ravel()
    finite = np.isfinite(values)
    lower, upper = bounds
    above = finite & (values > upper)
    below = finite & (values < lower)
    counts = {"above": int(above.sum()), "between": int((finite & ~above & ~below).sum()),
              "below": int(below.sum())}
    return {**{name: counts[where] for name, where in names}, UNDEFINED_CLASS: int((~finite).sum())}


def r_classes(values):
    """Count sites per paper R class: high (> 0.6), moderate (0.4..0.6), low (< 0.4), undefined."""
    high, moderate, low = R_CLASSES
    return _classes(values, R_BOUNDS, ((high, "above"), (moderate, "between"), (low, "below")))


def ubrmse_classes(values):
    """Count sites per paper ubRMSE class: meets (< 0.04), acceptable (0.04..0.06), poor (> 0.06),
    undefined."""
    meets, acceptable, poor = UBRMSE_CLASSES
    return _classes(values, UBRMSE_BOUNDS, ((meets, "below"), (acceptable, "between"), (poor, "above")))
