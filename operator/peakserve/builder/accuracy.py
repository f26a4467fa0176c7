"""The accuracy gate: pure functions on numpy arrays, candidate outputs vs the fp32 ONNX reference.

Every candidate is measured on the held-out evaluation set. Output differences are always
checked; the task adds what matters for its use: embeddings must keep their neighbours, rankers
their AUC, logloss and top of the list.

Figure names (camelCase, as status.build.figures shows them):
  maxAbsDiff, p99AbsDiff             |candidate - fp32| over all outputs
  minCosine, meanCosine, recallAtK   embedding: first output, one vector per row
  auc, aucFp32, aucDelta             ranker: aucDelta = aucFp32 - auc (the drop; > 0 is worse)
  logloss, loglossFp32, loglossDelta ranker: loglossDelta = logloss - loglossFp32 (the increase)
  topKAgreement                      ranker: overlap of the k best-scored rows
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..api.spec import Gates

SIMILARITY_CHUNK_ROWS = 256  # rows of the n x n similarity matrix held at once


# --- output differences ---------------------------------------------------------------------

def abs_diff_stats(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max, p99) of |candidate - reference| over every element of every output.

    A NaN, an infinity or a changed shape makes both infinite: such a candidate must fail.
    """
    if len(reference) != len(candidate):
        return math.inf, math.inf
    diffs = []
    for a, b in zip(reference, candidate):
        if a.shape != b.shape:
            return math.inf, math.inf
        diffs.append(np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(-1))
    diff = np.concatenate(diffs) if diffs else np.zeros(0)
    if diff.size == 0:
        return 0.0, 0.0
    if not np.isfinite(diff).all():
        return math.inf, math.inf
    return float(diff.max()), float(np.percentile(diff, 99))


# --- embeddings -----------------------------------------------------------------------------

def _rows(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).reshape(len(x), -1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each candidate row to the same reference row.

    Two zero rows count as identical (1.0); a zero row against a non-zero one as 0.0.
    """
    a, b = _rows(reference), _rows(candidate)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    cos = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def _nearest(unit: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """Indices of the k rows most cosine-similar to rows start:stop, each row itself excluded."""
    sims = unit[start:stop] @ unit.T
    sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
    sims = np.nan_to_num(sims, nan=-np.inf)
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean over rows of |kNN_fp32(row) ∩ kNN_candidate(row)| / k, neighbours by cosine within the set.

    k is capped at rows - 1 (a row is not its own neighbour).
    """
    n = len(reference)
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    ref, cand = _unit_rows(_rows(reference)), _unit_rows(_rows(candidate))
    overlap = 0.0
    for start in range(0, n, SIMILARITY_CHUNK_ROWS):
        stop = min(start + SIMILARITY_CHUNK_ROWS, n)
        ref_nn, cand_nn = _nearest(ref, start, stop, k), _nearest(cand, start, stop, k)
        is_ref_nn = np.zeros((stop - start, n), dtype=bool)
        np.put_along_axis(is_ref_nn, ref_nn, True, axis=1)
        overlap += np.take_along_axis(is_ref_nn, cand_nn, axis=1).sum()
    return float(overlap / (n * k))


# --- rankers --------------------------------------------------------------------------------

def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank (Mann-Whitney U) formula, ties counted half. NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(labels).reshape(-1) > 0.5
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(scores).all():
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(probabilities: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 - eps] so 0 and 1 stay finite."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def scores_are_probabilities(reference_scores: np.ndarray) -> bool:
    """A ranker outputs either probabilities or logits; the fp32 outputs tell which.

    Decided once, on fp32, and applied to both, so a candidate cannot change the interpretation.
    """
    s = np.asarray(reference_scores, dtype=np.float64)
    return bool(s.size) and bool(((s >= 0) & (s <= 1)).all())


def top_k_agreement(reference_scores: np.ndarray, candidate_scores: np.ndarray, k: int) -> float:
    """|top-k rows by fp32 score ∩ top-k rows by candidate score| / k (k capped at the row count)."""
    ref = np.asarray(reference_scores, dtype=np.float64).reshape(-1)
    cand = np.nan_to_num(np.asarray(candidate_scores, dtype=np.float64).reshape(-1), nan=-np.inf)
    k = min(k, len(ref))
    if k < 1:
        return 1.0
    # Stable sorts: among tied scores the lower row index wins, the same way for both models.
    top_ref = np.argsort(-ref, kind="stable")[:k]
    top_cand = np.argsort(-cand, kind="stable")[:k]
    return float(len(np.intersect1d(top_ref, top_cand)) / k)


# --- the gate -------------------------------------------------------------------------------

def accuracy_figures(task: str, reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
                     labels: np.ndarray | None, k: int) -> dict[str, float]:
    """Every figure the task's gate looks at. reference/candidate: outputs in spec order."""
    max_diff, p99_diff = abs_diff_stats(reference, candidate)
    figures = {"maxAbsDiff": max_diff, "p99AbsDiff": p99_diff}
    if task == "embedding":
        cos = row_cosines(reference[0], candidate[0])
        # np.min/np.mean propagate NaN, and a NaN figure fails its gate.
        figures.update(minCosine=float(np.min(cos)), meanCosine=float(np.mean(cos)),
                       recallAtK=recall_at_k(reference[0], candidate[0], k))
    elif task == "ranker":
        if labels is None:
            raise ValueError("a ranker gate needs labels")
        ref, cand = reference[0].reshape(-1), candidate[0].reshape(-1)
        if scores_are_probabilities(ref):
            p_ref, p_cand = ref, cand
        else:
            p_ref, p_cand = sigmoid(ref), sigmoid(cand)
        auc_ref, auc_cand = auc(ref, labels), auc(cand, labels)
        ll_ref, ll_cand = logloss(p_ref, labels), logloss(p_cand, labels)
        figures.update(auc=auc_cand, aucFp32=auc_ref, aucDelta=auc_ref - auc_cand,
                       logloss=ll_cand, loglossFp32=ll_ref, loglossDelta=ll_cand - ll_ref,
                       topKAgreement=top_k_agreement(ref, cand, k))
    return figures


def _fmt(value: float, other: float) -> str:
    """Enough digits that value and threshold read differently when they differ."""
    for digits in range(3, 12):
        a, b = f"{value:.{digits}g}", f"{other:.{digits}g}"
        if a != b:
            return a
    return f"{value:.12g}"


# metric, threshold field, direction: "max" means the figure must stay <= the threshold.
GATES = {
    "generic": [("maxAbsDiff", "maxAbsDiff", "max"), ("p99AbsDiff", "p99AbsDiff", "max")],
    "embedding": [("minCosine", "minCosine", "min"), ("recallAtK", "minRecallAtK", "min")],
    "ranker": [("aucDrop", "maxAucDrop", "max"), ("loglossIncrease", "maxLoglossIncrease", "max"),
               ("topKAgreement", "minTopKAgreement", "min")],
}
_FIGURE = {"aucDrop": "aucDelta", "loglossIncrease": "loglossDelta"}


def accuracy_failures(task: str, figures: dict[str, float], gates: Gates) -> list[str]:
    """One line per failed threshold, naming metric, value and threshold ("aucDrop 0.0123 > maxAucDrop 0.005").

    Written so that a NaN figure fails: NaN compares false with everything.
    """
    limits = gates.model_dump(by_alias=True)
    failures = []
    for metric, limit_name, direction in GATES["generic"] + (GATES[task] if task != "generic" else []):
        value, limit = figures[_FIGURE.get(metric, metric)], limits[limit_name]
        if direction == "max" and not value <= limit:
            failures.append(f"{metric} {_fmt(value, limit)} > {limit_name} {_fmt(limit, value)}")
        elif direction == "min" and not value >= limit:
            failures.append(f"{metric} {_fmt(value, limit)} < {limit_name} {_fmt(limit, value)}")
    return failures
