"""peakserve.analysis: the probe statistics on hand-checked numbers, the probe file format, and the
pure part of the probe comparison (figures from two output arrays, request chunks, input checks)."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from peakserve.analysis import stats
from peakserve.analysis.errors import AnalysisError
from peakserve.analysis.probe import check_inputs, compare_outputs, requests_of, resolve_kind
from peakserve.builder.probe_data import LABELS, ProbeDataError, read_probe, write_probe

RNG = np.random.default_rng(0)
SCORES = RNG.random(512)


# ------------------------------------------------------------------------------------------ PSI

def test_psi_of_identical_scores_is_zero():
    assert stats.psi(SCORES, SCORES.copy()) == 0.0


def test_psi_of_all_canary_scores_in_the_top_bin():
    stable = np.arange(1000) / 1000          # ten bins of 100 scores each: 0.1 per bin
    canary = np.full(1000, 0.999)            # all in the top bin; the other nine floored at 1e-4
    expected = 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + (1.0 - 0.1) * math.log(1.0 / 0.1)
    assert stats.psi(stable, canary) == pytest.approx(expected)
    assert expected == pytest.approx(8.2831, abs=1e-4)


def test_psi_of_half_the_rows_moved_one_bin_up():
    stable = np.arange(1000) / 1000
    canary = stable.copy()
    canary[:50] += 0.1                       # half of bin 0 moves into bin 1: shares 0.05 and 0.15
    expected = (0.05 - 0.1) * math.log(0.05 / 0.1) + (0.15 - 0.1) * math.log(0.15 / 0.1)
    assert stats.psi(stable, canary) == pytest.approx(expected)


def test_psi_with_tied_stable_scores_and_non_finite_scores():
    constant = np.full(100, 0.5)
    assert stats.psi(constant, constant) == 0.0          # one edge, one bin: nothing moved
    assert stats.psi(constant, np.full(100, 0.6)) > 5    # everything moved to the other side
    assert stats.psi(SCORES, np.where(SCORES > 0.5, np.nan, SCORES)) == math.inf
    with pytest.raises(ValueError):
        stats.psi(np.array([]), SCORES)


def test_psi_of_a_small_shift_is_small_and_of_a_large_one_large():
    small, large = stats.psi(SCORES, SCORES + 0.01), stats.psi(SCORES, SCORES * 0.5)
    assert 0 < small < 0.05 < 0.25 < large


# ------------------------------------------------------------------------------------------ KS

def test_ks_statistic_on_hand_checked_samples():
    assert stats.ks_statistic(SCORES, SCORES) == 0.0
    assert stats.ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5     # at x=2: 0.5 vs 0.0
    assert stats.ks_statistic([1, 2], [10, 20]) == 1.0
    assert stats.ks_statistic([1.0, np.inf], [1.0, 2.0]) == 1.0


# ------------------------------------------------------------------------------------------ top-k, AUC, cosine

def test_top_k_agreement_identical_permuted_and_reversed():
    assert stats.top_k_agreement(SCORES, SCORES, 50) == 1.0
    assert stats.top_k_agreement(SCORES, -SCORES, 50) == 0.0
    scores = np.arange(10, dtype=float)                 # top 4 by score: rows 9, 8, 7, 6
    swapped = scores.copy()
    swapped[[9, 0]] = swapped[[0, 9]]                   # row 9 falls to the bottom, row 0 rises to the top
    assert stats.top_k_agreement(scores, swapped, 4) == 0.75
    assert stats.top_k_agreement(scores, RNG.permutation(scores), 10) == 1.0  # k = all rows


def test_auc_of_perfect_inverted_and_uninformative_rankers():
    labels = np.array([0, 0, 1, 1, 0, 1])
    assert stats.auc(labels + 0.1 * np.arange(6), labels) == 1.0
    assert stats.auc(-labels, labels) == 0.0
    assert stats.auc(np.ones(6), labels) == 0.5                       # ties count half
    assert stats.auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert math.isnan(stats.auc(SCORES[:4], np.ones(4)))              # one class only


def test_row_cosines():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    assert stats.row_cosines(a, a) == pytest.approx([1, 1, 1])
    assert stats.row_cosines(a, np.array([[0.0, 1.0], [-1.0, -1.0], [0.0, 5.0]])) == pytest.approx([0, -1, 1])


def test_max_abs_diff():
    assert stats.max_abs_diff(np.zeros((3, 2)), np.array([[0, 0.5], [-1.5, 0], [0, 0]])) == 1.5
    assert stats.max_abs_diff(np.zeros(3), np.array([0, np.nan, 0])) == math.inf
    assert stats.max_abs_diff(np.zeros((3, 1)), np.zeros((3, 2))) == math.inf


# ------------------------------------------------------------------------------------------ compare_outputs

def test_identical_ranker_outputs_give_no_drift():
    out = SCORES.reshape(-1, 1)
    labels = (SCORES + RNG.normal(0, 0.2, len(SCORES)) > 0.5).astype(np.int8)
    figures = compare_outputs(out, out.copy(), resolve_kind("auto", out), 50, labels)
    assert figures == {"probeRows": 512, "maxAbsDiff": 0.0, "psi": 0.0, "ks": 0.0, "topKAgreement": 1.0,
                       "stableAuc": figures["canaryAuc"], "canaryAuc": figures["canaryAuc"]}
    assert 0.7 < figures["stableAuc"] < 1.0


def test_a_ranker_that_scores_other_rows_drops_top_k_and_auc():
    labels = (SCORES > 0.7).astype(np.int8)
    canary = RNG.permutation(SCORES)         # the same score distribution, given to other rows
    figures = compare_outputs(SCORES.reshape(-1, 1), canary.reshape(-1, 1), "ranker", 50, labels)
    assert figures["psi"] == 0.0 and figures["ks"] == 0.0           # distribution unchanged ...
    assert figures["topKAgreement"] < 0.3                            # ... but the ranking is gone
    assert figures["stableAuc"] == 1.0 and figures["canaryAuc"] < 0.65


def test_top_k_is_capped_at_the_rows_and_one_class_labels_give_no_auc():
    figures = compare_outputs(SCORES[:20, None], -SCORES[:20, None], "ranker", 50, np.ones(20))
    assert figures["topKAgreement"] == 1.0   # k = 20 = every row
    assert "stableAuc" not in figures and "canaryAuc" not in figures


def test_embedding_and_generic_outputs():
    stable = RNG.normal(size=(64, 8))
    assert resolve_kind("auto", stable) == "embedding"
    figures = compare_outputs(stable, stable.copy(), "embedding", 50)
    assert figures["cosineMin"] == pytest.approx(1.0) and figures["cosineMean"] == pytest.approx(1.0)
    flipped = stable.copy()
    flipped[3] *= -1
    assert compare_outputs(stable, flipped, "embedding", 50)["cosineMin"] == pytest.approx(-1.0)
    assert compare_outputs(stable, stable + 0.25, "generic", 50) == {"probeRows": 64,
                                                                     "maxAbsDiff": pytest.approx(0.25)}


def test_outputs_that_do_not_compare_are_an_analysis_error():
    with pytest.raises(AnalysisError, match="differ in shape"):
        compare_outputs(np.zeros((4, 1)), np.zeros((4, 2)), "ranker", 2)
    with pytest.raises(AnalysisError, match="8 values per row"):
        compare_outputs(np.zeros((4, 8)), np.zeros((4, 8)), "ranker", 2)


# ------------------------------------------------------------------------------------------ probe.npz

def _inputs(rows: int) -> dict[str, np.ndarray]:
    return {"sparse_ids": np.arange(rows * 3, dtype=np.int64).reshape(rows, 3),
            "dense": np.linspace(0, 1, rows * 2, dtype=np.float32).reshape(rows, 2)}


def test_probe_file_round_trip_with_labels(tmp_path):
    path = tmp_path / "probe.npz"
    labels = np.array([0.0, 1.0] * 50)
    assert write_probe(path, _inputs(100), labels) == 100
    inputs, read_labels = read_probe(path, ["dense", "sparse_ids"])
    assert list(inputs) == ["dense", "sparse_ids"]
    for name, array in _inputs(100).items():
        assert inputs[name].dtype == array.dtype and np.array_equal(inputs[name], array)
    assert read_labels.dtype == np.int8 and np.array_equal(read_labels, labels)
    with np.load(path) as npz:                        # a plain .npz, as documented
        assert sorted(npz.files) == ["dense", LABELS, "sparse_ids"]


def test_probe_file_keeps_the_first_rows_and_is_reproducible(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert write_probe(a, _inputs(50), max_rows=16) == 16
    write_probe(b, _inputs(50), max_rows=16)
    assert a.read_bytes() == b.read_bytes()           # no timestamps: the same build publishes the same bytes
    inputs, labels = read_probe(a, ["sparse_ids", "dense"])
    assert labels is None and np.array_equal(inputs["sparse_ids"], _inputs(50)["sparse_ids"][:16])
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zipfile.ZipFile(a).infolist())


def test_an_input_named_labels_wins_over_the_labels(tmp_path):
    path = tmp_path / "probe.npz"
    write_probe(path, {"labels": np.ones((4, 2), np.float32)}, labels=np.array([0, 1, 0, 1]))
    inputs, labels = read_probe(path, ["labels"])
    assert labels is None and inputs["labels"].shape == (4, 2)


def test_probe_files_that_do_not_fit(tmp_path):
    with pytest.raises(ProbeDataError, match="not found"):
        read_probe(tmp_path / "missing.npz", ["x"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ProbeDataError, match="cannot be read"):
        read_probe(tmp_path / "junk.npz", ["x"])
    path = tmp_path / "probe.npz"
    write_probe(path, _inputs(8))
    with pytest.raises(ProbeDataError, match=r"no array for model input\(s\) \['token_ids'\]"):
        read_probe(path, ["dense", "token_ids"])
    np.savez(tmp_path / "ragged.npz", dense=np.zeros((8, 2)), labels=np.zeros(7))
    with pytest.raises(ProbeDataError, match="different row counts"):
        read_probe(tmp_path / "ragged.npz", ["dense"])
    with pytest.raises(ValueError, match="different row counts"):
        write_probe(path, {"a": np.zeros((3, 1)), "b": np.zeros((4, 1))})


# ------------------------------------------------------------------------------------------ requests

def _signature(max_batch_size: int = 4):
    from peakserve.loadgen.data import Signature

    return Signature.from_config({"name": "ranker", "max_batch_size": max_batch_size,
                                  "input": [{"name": "sparse_ids", "data_type": "TYPE_INT64", "dims": [3]},
                                            {"name": "dense", "data_type": "TYPE_FP32", "dims": [-1]}],
                                  "output": [{"name": "score", "data_type": "TYPE_FP32", "dims": [1]}]})


def test_requests_are_chunked_by_max_batch_size():
    chunks = requests_of(_inputs(10), 4)
    assert [len(c["dense"]) for c in chunks] == [4, 4, 2]
    assert np.array_equal(np.concatenate([c["sparse_ids"] for c in chunks]), _inputs(10)["sparse_ids"])
    single = requests_of(_inputs(3), 0)               # no batch dimension: one row per request, no row axis
    assert len(single) == 3 and single[1]["dense"].shape == (2,)


def test_probe_inputs_are_checked_against_the_signature():
    check_inputs(_signature(), _inputs(5), "stable")  # -1 takes any length
    wrong_type = dict(_inputs(5), dense=np.zeros((5, 2), np.float64))
    with pytest.raises(AnalysisError, match="'dense' is float64, the canary model takes FP32"):
        check_inputs(_signature(), wrong_type, "canary")
    wrong_dims = dict(_inputs(5), sparse_ids=np.zeros((5, 4), np.int64))
    with pytest.raises(AnalysisError, match=r"rows of shape \[4\], the stable model takes \[3\]"):
        check_inputs(_signature(), wrong_dims, "stable")
