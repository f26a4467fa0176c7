"""The probe statistics, pure numpy: how far the canary's answers are from the stable's.

Rankers: the population stability index (PSI) of the canary's scores against the stable's, the
two-sample Kolmogorov-Smirnov statistic (reported), top-k agreement and AUC on labels. Embeddings:
per-row cosine similarity. Every model: the largest absolute difference.

AUC, top-k agreement, row cosines and the absolute difference are the model builder's own
(peakserve.builder.accuracy, numpy only): a build's accuracy gate and a canary's analysis measure
the same figure the same way. The stable side takes the place of the fp32 reference there.

Non-finite outputs never pass: PSI and the largest difference become infinite, AUC NaN (and the
checks are written so that NaN fails), cosine NaN.
"""

from __future__ import annotations

import math

import numpy as np

from ..builder.accuracy import abs_diff_stats, auc, row_cosines, top_k_agreement

__all__ = ["PSI_BINS", "PSI_EPSILON", "auc", "ks_statistic", "max_abs_diff", "psi", "row_cosines",
           "top_k_agreement"]

PSI_BINS = 10
PSI_EPSILON = 1e-4  # a bin share of 0 would make the logarithm infinite


def _scores(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected``: sum((a - e) * ln(a / e)) over bins.

    The bins are cut at ``expected``'s quantiles (10 bins: 10% of the expected scores each, fewer
    where tied scores make quantiles equal), closed on the right like pandas' qcut; a bin's share
    is floored at ``epsilon``. 0 for identical distributions; 0.1 is the usual "look at it", 0.25
    "it moved".
    """
    e, a = _scores(expected), _scores(actual)
    if not e.size or not a.size:
        raise ValueError("psi needs scores on both sides")
    if not (np.isfinite(e).all() and np.isfinite(a).all()):
        return math.inf
    edges = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    shares = []
    for x in (e, a):
        counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
        shares.append(np.maximum(counts / len(x), epsilon))
    pe, pa = shares
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def ks_statistic(expected: np.ndarray, actual: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs.

    1.0 when either side has a non-finite score.
    """
    e, a = np.sort(_scores(expected)), np.sort(_scores(actual))
    if not e.size or not a.size:
        raise ValueError("ks_statistic needs scores on both sides")
    if not (np.isfinite(e).all() and np.isfinite(a).all()):
        return 1.0
    points = np.concatenate([e, a])
    cdf_e = np.searchsorted(e, points, side="right") / len(e)
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    return float(np.max(np.abs(cdf_e - cdf_a)))


def max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |actual - expected| over every element; infinite for a non-finite value or another shape."""
    return abs_diff_stats([np.asarray(expected)], [np.asarray(actual)])[0]
