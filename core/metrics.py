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

#: The paper's classes (Section 4.2). Bounds: "high" is R > 0.6, "moderate" 0.4 <= R <= 0.6,
#: "low" R < 0.4; ubRMSE "meets" (the SMAP requirement) < 0.04, "acceptable" 0.04..0.06
#: (inclusive), "poor" > 0.06. NaN values are counted as "undefined".
R_CLASSES = ("high", "moderate", "low")
UBRMSE_CLASSES = ("meets", "acceptable", "poor")


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
    return {"n": int(p.size), "r": r(p, o), "rmse": rmse(p, o), "bias": bias(p, o),
            "ubrmse": ubrmse(p, o)}


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


def r_classes(values):
    """Count sites per paper R class: high (> 0.6), moderate (0.4..0.6), low (< 0.4), undefined."""
    values = np.asarray(list(values), dtype="float64").ravel()
    finite = np.isfinite(values)
    high = finite & (values > 0.6)
    low = finite & (values < 0.4)
    return {"high": int(high.sum()), "moderate": int((finite & ~high & ~low).sum()),
            "low": int(low.sum()), "undefined": int((~finite).sum())}


def ubrmse_classes(values):
    """Count sites per paper ubRMSE class: meets (< 0.04), acceptable (0.04..0.06), poor (> 0.06),
    undefined."""
    values = np.asarray(list(values), dtype="float64").ravel()
    finite = np.isfinite(values)
    meets = finite & (values < 0.04)
    poor = finite & (values > 0.06)
    return {"meets": int(meets.sum()), "acceptable": int((finite & ~meets & ~poor).sum()),
            "poor": int(poor.sum()), "undefined": int((~finite).sum())}
