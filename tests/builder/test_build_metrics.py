"""peakserve.build's pure parts: accuracy metrics and gates on hand-made arrays with known answers,
speed verdicts, URI redaction, the result summary's size limit, and the signature checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from peakserve.api.spec import Gates, ModelSpec
from peakserve.builder import accuracy, speed
from peakserve.builder.errors import BuildError
from peakserve.builder.pipeline import SUMMARY_LIMIT_BYTES, BuildResult
from peakserve.builder.progress import Progress
from peakserve.redact import redact_text, redact_uri
from peakserve.builder.signature import check_array, check_buildable, dims_match


# --- AUC, logloss, top-k ----------------------------------------------------------------------

def test_auc_of_a_perfect_ranking_is_one():
    assert accuracy.auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0


def test_auc_of_a_reversed_ranking_is_zero():
    assert accuracy.auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0


def test_auc_of_all_tied_scores_is_one_half():
    assert accuracy.auc(np.full(6, 0.3), np.array([0, 1, 0, 1, 1, 0])) == 0.5


def test_auc_counts_a_tie_between_classes_as_half():
    # Pairs (pos, neg): (0.5 vs 0.5) tie -> 0.5, (0.5 vs 0.1) win, (0.9 vs 0.5) win, (0.9 vs 0.1) win: 3.5 / 4.
    assert accuracy.auc(np.array([0.5, 0.9, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.875)


def test_auc_matches_the_pairwise_definition_on_random_data():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.integers(0, 2, 200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    pairwise = wins / (len(pos) * len(neg))
    assert accuracy.auc(scores, labels) == pytest.approx(pairwise)


def test_auc_without_both_classes_is_nan():
    assert math.isnan(accuracy.auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_logloss_known_value():
    # -(ln 0.8 + ln 0.6) / 2
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert accuracy.logloss(np.array([0.8, 0.4]), np.array([1, 0])) == pytest.approx(expected)


def test_logloss_of_certain_wrong_answers_is_finite():
    assert math.isfinite(accuracy.logloss(np.array([0.0, 1.0]), np.array([1, 0])))


def test_top_k_agreement():
    ref = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert accuracy.top_k_agreement(ref, ref, 2) == 1.0
    assert accuracy.top_k_agreement(ref, np.array([5.0, 1.0, 4.0, 2.0, 3.0]), 2) == 0.5  # {0,1} vs {0,2}
    assert accuracy.top_k_agreement(ref, -ref, 2) == 0.0
    assert accuracy.top_k_agreement(ref, ref, 100) == 1.0  # k capped at the row count


def test_ranker_figures_use_logits_when_scores_leave_0_1():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    worse = np.array([[-2.0], [1.5], [1.0], [2.0]])  # one negative now outranks a positive
    figures = accuracy.accuracy_figures("ranker", [logits], [worse], labels, k=2)
    assert figures["aucFp32"] == 1.0 and figures["auc"] == 0.75 and figures["aucDelta"] == 0.25
    assert figures["loglossFp32"] == pytest.approx(accuracy.logloss(accuracy.sigmoid(logits), labels))
    assert figures["loglossDelta"] > 0
    assert figures["topKAgreement"] == 0.5


# --- cosine, recall@k --------------------------------------------------------------------------

def test_row_cosines_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(accuracy.row_cosines(a, b), [0.0, 1.0, 1.0, 0.0])


def test_recall_at_k_identical_is_one_and_scrambled_is_lower():
    # Four points in two tight clusters: each point's nearest neighbour is its twin.
    ref = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert accuracy.recall_at_k(ref, ref, 1) == 1.0
    swapped = ref[[0, 2, 1, 3]]  # rows 1 and 2 traded places: 0's twin is now row 2 and so on
    assert accuracy.recall_at_k(ref, swapped, 1) == 0.0
    assert accuracy.recall_at_k(ref, ref, 10) == 1.0  # k capped at rows - 1


def test_recall_at_k_partial_overlap():
    # Unit vectors at distinct angles; nearest neighbours by angle: 0-1, 1-0, 2-1, 3-4, 4-3.
    def at(angles):
        a = np.array(angles)
        return np.stack([np.cos(a), np.sin(a)], 1)
    ref = at([0.0, 0.1, 0.3, 1.5, 1.7])
    cand = at([0.0, 0.1, 1.65, 1.5, 1.7])  # row 2 moves next to row 4: now 2-4, 3-2, 4-2
    # Rows 0 and 1 keep their neighbour, rows 2, 3 and 4 lose it: 2 / 5.
    assert accuracy.recall_at_k(ref, cand, 1) == pytest.approx(0.4)


def test_embedding_figures_and_gate():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 8))
    noisy = ref + 0.3 * rng.standard_normal((50, 8))
    figures = accuracy.accuracy_figures("embedding", [ref], [noisy], None, k=5)
    assert -1 <= figures["minCosine"] <= figures["meanCosine"] < 1
    assert 0 < figures["recallAtK"] < 1
    failures = accuracy.accuracy_failures("embedding", figures, Gates(max_abs_diff=100, p99_abs_diff=100,
                                                                      min_cosine=0.999, min_recall_at_k=0.99))
    assert any(f.startswith("minCosine ") and f.endswith("< minCosine 0.999") for f in failures)
    assert any(f.startswith("recallAtK ") and "< minRecallAtK 0.99" in f for f in failures)


# --- differences and the gate --------------------------------------------------------------------

def test_abs_diff_stats_max_and_p99():
    ref = [np.zeros((100, 1)), np.zeros((100, 2))]
    cand = [np.zeros((100, 1)), np.zeros((100, 2))]
    cand[1][7, 1] = 0.5  # one element of 300 differs
    max_diff, p99 = accuracy.abs_diff_stats(ref, cand)
    assert max_diff == 0.5
    assert p99 == pytest.approx(np.percentile(np.r_[np.zeros(299), 0.5], 99))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_outputs_fail_every_gate(bad):
    ref = [np.zeros((4, 1))]
    cand = [np.array([[0.0], [bad], [0.0], [0.0]])]
    figures = accuracy.accuracy_figures("generic", ref, cand, None, k=2)
    assert figures["maxAbsDiff"] == math.inf
    assert len(accuracy.accuracy_failures("generic", figures, Gates())) == 2


def test_nan_cosine_fails_the_gate():
    figures = {"maxAbsDiff": 0.0, "p99AbsDiff": 0.0, "minCosine": math.nan, "meanCosine": math.nan, "recallAtK": 1.0}
    assert accuracy.accuracy_failures("embedding", figures, Gates()) == ["minCosine nan < minCosine 0.99"]


def test_gate_reason_names_metric_value_and_threshold():
    figures = {"maxAbsDiff": 0.001, "p99AbsDiff": 0.0001, "auc": 0.7, "aucFp32": 0.7123, "aucDelta": 0.0123,
               "logloss": 0.5, "loglossFp32": 0.5, "loglossDelta": 0.0, "topKAgreement": 1.0}
    assert accuracy.accuracy_failures("ranker", figures, Gates()) == ["aucDrop 0.0123 > maxAucDrop 0.005"]


def test_gate_reason_shows_enough_digits_to_tell_value_from_threshold():
    figures = {"maxAbsDiff": 0.0500001, "p99AbsDiff": 0.0}
    (failure,) = accuracy.accuracy_failures("generic", figures, Gates())
    value, threshold = failure.split(" > ")
    assert value.split()[1] != threshold.split()[1], failure


def test_passing_figures_have_no_failures():
    figures = {"maxAbsDiff": 0.01, "p99AbsDiff": 0.001}
    assert accuracy.accuracy_failures("generic", figures, Gates()) == []


# --- speed verdicts ------------------------------------------------------------------------------

def test_speedups_geomean_and_failures():
    results = {"fp32": {1: {"rowsPerS": 100.0}, 32: {"rowsPerS": 1000.0}},
               "int8Dynamic": {1: {"rowsPerS": 90.0}, 32: {"rowsPerS": 4000.0}}}
    per_batch = speed.speedups(results, "int8Dynamic")
    assert per_batch == {1: 0.9, 32: 4.0}
    assert speed.geometric_mean(list(per_batch.values())) == pytest.approx(math.sqrt(3.6))
    # Fast enough on average (1.9x), and batch 1 at 0.9x is within the allowed per-batch slack.
    assert speed.speed_failures(per_batch, 1.1, 0.9) == []
    assert speed.speed_failures(per_batch, 1.1, 0.95) == ["speedup 0.90x at batch 1 < minBatchSpeedup 0.95"]
    assert speed.speed_failures(per_batch, 2.0, 0.9) == ["speedup 1.90x (geometric mean) < minSpeedup 2"]
    assert speed.speed_failures({}, 1.1, 0.9) == ["no batch size was measured"]
    figures = speed.speed_figures(per_batch)
    assert figures["speedupB1"] == 0.9 and figures["speedupB32"] == 4.0
    assert figures["speedup"] == pytest.approx(math.sqrt(3.6), abs=1e-4)


# --- redaction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("uri,expected", [
    ("s3://AKIA:secret@bucket/models/x", "s3://bucket/models/x"),
    ("https://bucket.s3.amazonaws.com/m.onnx?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
     "https://bucket.s3.amazonaws.com/m.onnx"),
    ("https://user:pw@host:8443/path?token=t#frag", "https://host:8443/path"),
    ("pvc://model-store/ranker", "pvc://model-store/ranker"),
    ("/data/models/ranker", "/data/models/ranker"),
    ("/data/m.onnx?sig=1", "/data/m.onnx"),
    ("https://user:pa/ss@host/x", "https://host/x"),  # a '/' in the password must not hide the userinfo
    ("s3://u:p@ss@bucket/k", "s3://bucket/k"),
])
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_redact_text_cleans_uris_inside_messages():
    text = "cannot read s3://AKIA:topsecret@bucket/x and https://h/p?X-Amz-Signature=deadbeef, giving up"
    cleaned = redact_text(text)
    assert "topsecret" not in cleaned and "deadbeef" not in cleaned and "AKIA" not in cleaned
    assert "s3://bucket/x" in cleaned and cleaned.endswith("giving up")


# --- summary ---------------------------------------------------------------------------------------

def test_summary_stays_under_the_termination_message_limit():
    result = BuildResult(hash="abc123def456", phase="Failed", reason="GateFailed", message="x" * 20000,
                         candidate=None, precision=None, artifact=None, digest=None,
                         figures={f"figure{i}": float(i) / 7 for i in range(200)},
                         rejected={f"cand{i}": "y" * 5000 for i in range(3)})
    summary = result.summary()
    assert len(json.dumps(summary)) <= SUMMARY_LIMIT_BYTES
    assert set(summary) == {"hash", "phase", "reason", "message", "candidate", "precision", "artifact", "digest",
                            "figures", "rejected", "cached"}
    assert summary["reason"] == "GateFailed" and summary["message"].startswith("xxx") and set(summary["rejected"]) == {
        "cand0", "cand1", "cand2"}


def test_summary_keeps_headline_figures_when_it_must_shrink():
    figures = {"speedup": 1.5, "maxAbsDiff": 0.01, **{f"extraFigure{i}": 1.0 for i in range(300)}}
    result = BuildResult(hash="h", phase="Succeeded", reason="GatesPassed", message="ok", candidate="int8Dynamic",
                         precision="int8", artifact="h", digest="sha256:" + "0" * 64, figures=figures)
    summary = result.summary()
    assert len(json.dumps(summary)) <= SUMMARY_LIMIT_BYTES
    assert summary["figures"] == {"speedup": 1.5, "maxAbsDiff": 0.01}


def test_summary_redacts_credentials_and_encodes_non_finite_figures():
    result = BuildResult.failed("h", "InvalidModel", "cannot fetch s3://key:secret@b/m?sig=zzz")
    result.figures = {"maxAbsDiff": math.inf}
    summary = result.summary()
    text = json.dumps(summary, allow_nan=False)  # strict JSON: Kubernetes refuses NaN/Infinity
    assert "secret" not in text and "zzz" not in text and summary["figures"]["maxAbsDiff"] == "inf"


# --- signature -----------------------------------------------------------------------------------

def _model(**patch) -> ModelSpec:
    raw = {"name": "m", "inputs": [{"name": "x", "dataType": "FP32", "dims": [4]}],
           "outputs": [{"name": "y", "dataType": "FP32", "dims": [1]}]}
    raw.update(patch)
    return ModelSpec.model_validate(raw)


def test_dims_match_wildcards():
    assert dims_match([4, -1], (4, 9)) and dims_match([4], (None,))
    assert not dims_match([4], (5,)) and not dims_match([4], (4, 1))


def test_check_array_names_expected_and_found():
    tensor = _model().inputs[0]
    check_array(np.zeros((3, 4), np.float32), tensor, "data")
    with pytest.raises(BuildError) as err:
        check_array(np.zeros((3, 5), np.float64), tensor, "data")
    assert err.value.reason == "SignatureMismatch"
    assert "expected x: FP32['N', 4]" in err.value.message and "found x: FP64['N', 5]" in err.value.message


def test_string_tensors_and_multi_value_ranker_scores_are_refused():
    with pytest.raises(BuildError, match="STRING"):
        check_buildable(_model(inputs=[{"name": "x", "dataType": "STRING", "dims": [1]}]), "generic")
    with pytest.raises(BuildError, match="one value per row"):
        check_buildable(_model(outputs=[{"name": "y", "dataType": "FP32", "dims": [3]}]), "ranker")


def test_build_error_rejects_unknown_reasons():
    assert BuildError("GateFailed", "m").exit_code == 3
    with pytest.raises(ValueError):
        BuildError("SomethingElse", "m")


# --- calibration data ----------------------------------------------------------------------------

def test_calibration_reader_feeds_exactly_the_calibration_rows():
    from peakserve.builder.candidates import NpzCalibrationReader

    data = {"x": np.arange(20, dtype=np.float32).reshape(10, 2), "ids": np.arange(10, dtype=np.int64).reshape(10, 1)}
    seen: list[int] = []
    reader = NpzCalibrationReader(data, batch_rows=4, on_batch=seen.append)
    batches = list(iter(reader.get_next, None))
    assert seen == [4, 4, 2]
    for name in data:
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), data[name])
    reader.rewind()
    assert reader.get_next()["ids"].ravel().tolist() == [0, 1, 2, 3]


# --- progress ------------------------------------------------------------------------------------

def test_progress_prints_steps_and_records_timings(capsys):
    progress = Progress()
    with progress.step("quantizing int8Static"):
        with progress.counter("rows", 3) as bar:
            for _ in range(3):
                bar.advance()
    err = capsys.readouterr().err
    assert "-> quantizing int8Static" in err and "ok quantizing int8Static (" in err and "3/3" in err
    (timing,) = progress.timings()
    assert timing["step"] == "quantizing int8Static" and timing["ok"] and timing["seconds"] >= 0


def test_progress_quiet_prints_nothing_but_records_failures(capsys):
    progress = Progress(quiet=True)
    with pytest.raises(RuntimeError):
        with progress.step("exporting"):
            raise RuntimeError("x")
    assert capsys.readouterr().err == ""
    assert progress.timings()[0]["ok"] is False
