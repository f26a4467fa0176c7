"""peakserve.analysis.verdict (thresholds -> failing checks -> the result JSON) and the `peakserve analyze`
command as far as it runs without a Triton: arguments, thresholds, skips, exit codes, the result file."""

from __future__ import annotations

import json
import math

from peakserve import cli
from peakserve.analysis import cli as analyze_cli
from peakserve.analysis import prometheus, verdict
from peakserve.analysis.promql import SideMetrics
from peakserve.api.spec import ProbeAnalysis, RolloutAnalysis

T = RolloutAnalysis()   # windowSeconds 120, minRequests 20, maxErrorRate 0.01, +50% latency, +100% queue
P = ProbeAnalysis()     # maxPsi 0.1, topK 50, minTopKAgreement 0.8, maxAucDrop 0.02, minCosine 0.99


def side(requests: float = 1000, failures: float = 0, latency_ms: float = 10, queue_ms: float = 1) -> SideMetrics:
    success = requests - failures
    return SideMetrics(success=success, failure=failures, duration_us=latency_ms * 1000 * success,
                       queue_us=queue_ms * 1000 * success)


# ------------------------------------------------------------------------------------------ metrics

def test_a_canary_like_stable_passes_the_metric_checks():
    assert verdict.metric_checks(side(), side(), T) == ([], [])


def test_error_rate_above_the_threshold_fails():
    failures, _ = verdict.metric_checks(side(failures=50), side(), T)
    assert failures == [verdict.Failure("ErrorRate", "canary error rate 0.05 > 0.01 over 120 s (1000 requests)")]
    assert verdict.metric_checks(side(failures=10), side(), T)[0] == []   # exactly 0.01 passes


def test_latency_may_grow_by_the_fraction_plus_two_milliseconds():
    # stable 10 ms: the limit is 10 x 1.5 + 2 = 17 ms
    assert verdict.metric_checks(side(latency_ms=17), side(latency_ms=10), T)[0] == []
    failures, _ = verdict.metric_checks(side(latency_ms=17.5), side(latency_ms=10), T)
    assert failures == [verdict.Failure("Latency", "canary mean latency 17.5 ms > 17 ms (stable 10 ms x 1.5 + 2 ms)")]
    # a near-zero stable queue: the 2 ms slack keeps noise from failing it
    assert verdict.metric_checks(side(queue_ms=1.9), side(queue_ms=0.01), T)[0] == []
    failures, _ = verdict.metric_checks(side(queue_ms=5), side(queue_ms=1), T)
    assert [f.reason for f in failures] == ["QueueTime"] and "> 4 ms (stable 1 ms x 2 + 2 ms)" in failures[0].message


def test_too_little_canary_traffic_skips_the_metric_checks():
    failures, skipped = verdict.metric_checks(side(requests=3), side(), T)
    assert failures == [] and skipped == ["metrics: 3 canary requests < minRequests 20 over 120 s"]


def test_too_little_traffic_still_fails_when_its_failures_exceed_what_min_requests_allow():
    # 3 of 3 failed: even 17 more successes would leave 15% > 1% of minRequests 20; never a pass by silence
    failures, skipped = verdict.metric_checks(side(requests=3, failures=3), side(), T)
    assert skipped == [] and failures == [verdict.Failure(
        "ErrorRate", "3 of 3 canary requests failed over 120 s, more than 0.01 x minRequests 20 allow")]
    assert verdict.metric_checks(side(requests=3, failures=1), side(), RolloutAnalysis(maxErrorRate=0.1))[0] == []
    assert verdict.metric_checks(side(requests=0), side(), RolloutAnalysis(minRequests=0)) == (
        [], ["metrics: no canary requests over 120 s"])


def test_latency_is_not_compared_without_successful_stable_requests():
    failures, skipped = verdict.metric_checks(side(), side(requests=0), T)
    assert failures == []
    assert skipped == ["metrics: stable served no successful requests over 120 s; mean latency not compared",
                       "metrics: stable served no successful requests over 120 s; mean queue time not compared"]


def test_metric_figures_hold_only_what_is_defined():
    assert verdict.metric_figures(side(), side(requests=0)) == {
        "canaryRequests": 1000, "stableRequests": 0, "canaryErrorRate": 0.0, "canaryLatencyMs": 10.0,
        "canaryQueueMs": 1.0}


# ------------------------------------------------------------------------------------------ probe

def ranker_figures(**changes) -> dict[str, float]:
    return {"probeRows": 512, "maxAbsDiff": 0.0, "psi": 0.0, "ks": 0.0, "topKAgreement": 1.0,
            "stableAuc": 0.8, "canaryAuc": 0.8, **changes}


def test_probe_checks_name_figure_threshold_and_rows():
    assert verdict.probe_checks(ranker_figures(), P) == []
    failures = verdict.probe_checks(ranker_figures(psi=0.41, topKAgreement=0.62, canaryAuc=0.7, maxAbsDiff=0.5), P)
    assert failures == [
        verdict.Failure("ScoreDrift", "score PSI 0.41 > 0.1 on 512 probe rows"),
        verdict.Failure("TopKAgreement", "top-50 agreement 0.62 < 0.8 on 512 probe rows"),
        verdict.Failure("AucDrop", "AUC 0.7 vs stable 0.8: drop 0.1 > 0.02 on 512 probe rows"),
    ]   # maxAbsDiff is reported, not gated, while its threshold is unset


def test_max_abs_diff_is_gated_when_set_and_cosine_for_embeddings():
    p = ProbeAnalysis(maxAbsDiff=0.05, minCosine=0.99)
    embedding = {"probeRows": 64, "maxAbsDiff": 0.2, "cosineMin": 0.95, "cosineMean": 0.999}
    assert verdict.probe_checks(embedding, p) == [
        verdict.Failure("Cosine", "min cosine 0.95 < 0.99 on 64 probe rows (mean 0.999)"),
        verdict.Failure("MaxAbsDiff", "max |canary - stable| 0.2 > 0.05 on 64 probe rows")]


def test_nan_figures_fail_their_checks():
    failures = verdict.probe_checks(ranker_figures(psi=math.inf, topKAgreement=math.nan, canaryAuc=math.nan), P)
    assert [f.reason for f in failures] == ["ScoreDrift", "TopKAgreement", "AucDrop"]


def test_a_labelled_probe_without_both_classes_is_reported_as_skipped():
    assert verdict.probe_skips({"psi": 0.0}, "ranker", has_labels=True) == [
        "probe: the labels hold one class only; AUC not compared"]
    assert verdict.probe_skips(ranker_figures(), "ranker", has_labels=True) == []


# ------------------------------------------------------------------------------------------ result

def test_a_passing_result():
    figures = {**verdict.metric_figures(side(), side()), **ranker_figures(psi=0.0123456)}
    out = verdict.result(figures, [], ["probe: x"])
    assert (out["phase"], out["passed"], out["reason"]) == ("Succeeded", True, "Passed")
    assert out["message"].startswith("canary within thresholds: canary error rate 0 on 1000 requests")
    assert "score PSI 0.01235" in out["message"] and out["figures"]["psi"] == 0.01235   # 4 significant digits
    assert type(out["figures"]["probeRows"]) is int and out["figures"]["canaryRequests"] == 1000.0
    assert out["skipped"] == ["probe: x"]


def test_a_failing_result_has_the_first_failure_as_reason_and_every_failure_in_the_message():
    failures = verdict.probe_checks(ranker_figures(psi=0.41, topKAgreement=0.5), P)
    out = verdict.result(ranker_figures(psi=0.41, topKAgreement=0.5), failures, [])
    assert (out["passed"], out["reason"]) == (False, "ScoreDrift")
    assert out["message"] == "score PSI 0.41 > 0.1 on 512 probe rows; top-50 agreement 0.5 < 0.8 on 512 probe rows"


def test_non_finite_figures_are_strings_and_the_json_is_strict():
    out = verdict.result(ranker_figures(psi=math.inf, canaryAuc=math.nan), [], [])
    assert out["figures"]["psi"] == "inf" and out["figures"]["canaryAuc"] == "nan"
    json.loads(verdict.dumps(out))


def test_the_result_fits_a_termination_message():
    failures = [verdict.Failure("ErrorRate", "x" * 5000)] * 3
    out = verdict.result(ranker_figures(), failures, ["metrics: " + "y" * 900] * 20)
    assert len(verdict.dumps(out).encode()) < 4096
    assert out["reason"] == "ErrorRate" and out["message"].endswith("...")
    error = verdict.analysis_error("Prometheus http://user:secret@p:9090 unreachable " + "z" * 9000)
    assert len(verdict.dumps(error).encode()) < 4096 and "secret" not in error["message"]
    assert set(error) == {"phase", "passed", "reason", "message"}
    assert (error["phase"], error["passed"], error["reason"]) == ("Failed", False, "AnalysisError")


# ------------------------------------------------------------------------------------------ the command

ARGS = ["analyze", "--model", "ranker", "--version", "1", "--stable", "127.0.0.1:1", "--canary", "127.0.0.1:2"]


def run(tmp_path, *extra: str) -> tuple[int, dict]:
    result = tmp_path / "termination-log"
    code = cli.main([*ARGS, "--result-file", str(result), *extra])
    return code, json.loads(result.read_text())


def test_analyze_needs_the_client_extra():
    args = cli.parser().parse_args(ARGS)
    assert args.extra == "client" and args.func is analyze_cli.main
    assert (args.stable, args.canary, args.version) == (["127.0.0.1:1"], ["127.0.0.1:2"], 1)


def test_the_operators_thresholds_round_trip():
    given = RolloutAnalysis(windowSeconds=300, minRequests=5, probe=ProbeAnalysis(maxPsi=0.2, kind="ranker"))
    text = json.dumps(given.model_dump(mode="json", by_alias=True))
    assert analyze_cli._thresholds(text) == given


def test_nothing_to_compare_passes_and_says_what_was_skipped(tmp_path, capsys):
    code, out = run(tmp_path)
    assert code == 0
    assert out == {"phase": "Succeeded", "passed": True, "reason": "Passed",
                   "message": "nothing compared (see skipped)", "figures": {},
                   "skipped": ["metrics: no Prometheus address (--prometheus)", "probe: no probe data (--probe)"]}
    assert json.loads(capsys.readouterr().out) == out    # the same JSON on stdout, for the Job's log


def test_probe_disabled_is_skipped_even_with_a_probe(tmp_path):
    code, out = run(tmp_path, "--probe", str(tmp_path / "missing.npz"),
                    "--thresholds", json.dumps({"probe": {"enabled": False}}))
    assert code == 0 and out["skipped"][1] == "probe: disabled (probe.enabled false)"


def test_a_missing_probe_file_is_an_analysis_error(tmp_path):
    code, out = run(tmp_path, "--probe", str(tmp_path / "missing.npz"))
    assert code == 3
    assert out == {"phase": "Failed", "passed": False, "reason": "AnalysisError",
                   "message": f"probe file {tmp_path / 'missing.npz'} not found"}


def test_bad_arguments_exit_2_with_a_result(tmp_path):
    code, out = run(tmp_path, "--thresholds", '{"maxErrorRate": 7}')
    assert code == 2 and out["reason"] == "AnalysisError" and "--thresholds is not a valid" in out["message"]
    code, out = run(tmp_path, "--prometheus", "http://p:9090")
    assert code == 2 and out["message"] == "--prometheus needs --namespace, --stable-pods and --canary-pods"


def _prometheus(monkeypatch, sides: dict[str, SideMetrics]) -> list[tuple]:
    asked = []

    def side_metrics(base, namespace, pod_regex, model, window):
        asked.append((base, namespace, pod_regex, model, window))
        return sides[pod_regex]
    monkeypatch.setattr(prometheus, "side_metrics", side_metrics)
    return asked


def test_metrics_that_fail_fail_the_analysis(tmp_path, monkeypatch):
    asked = _prometheus(monkeypatch, {"canary-.*": side(failures=100, latency_ms=40), "stable-.*": side()})
    code, out = run(tmp_path, "--prometheus", "http://p:9090", "--namespace", "shop", "--stable-pods", "stable-.*",
                    "--canary-pods", "canary-.*", "--thresholds", json.dumps({"windowSeconds": 60}))
    assert code == 0 and (out["passed"], out["reason"]) == (False, "ErrorRate")
    assert out["message"] == ("canary error rate 0.1 > 0.01 over 60 s (1000 requests); "
                              "canary mean latency 40 ms > 17 ms (stable 10 ms x 1.5 + 2 ms)")
    assert out["figures"]["canaryErrorRate"] == 0.1 and out["figures"]["stableLatencyMs"] == 10.0
    assert out["skipped"] == ["probe: no probe data (--probe)"]
    assert asked == [("http://p:9090", "shop", "canary-.*", "ranker", 60),
                     ("http://p:9090", "shop", "stable-.*", "ranker", 60)]


def test_prometheus_unreachable_is_an_analysis_error(tmp_path, monkeypatch):
    from peakserve.analysis.errors import AnalysisError

    def unreachable(*args):
        raise AnalysisError("Prometheus http://p:9090 unreachable: [Errno 111] Connection refused")
    monkeypatch.setattr(prometheus, "side_metrics", unreachable)
    code, out = run(tmp_path, "--prometheus", "http://p:9090", "--namespace", "shop", "--stable-pods", "s",
                    "--canary-pods", "c")
    assert code == 3 and out["reason"] == "AnalysisError" and "unreachable" in out["message"]
