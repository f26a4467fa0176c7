"""`peakserve plan` end to end: the table, the recommendation, plan.json and plan.png."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from peakserve.api import validation
from peakserve.api.schedules import lead_time, window
from peakserve.planner import cli
from peakserve.planner.trace import load, loads

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "traces" / "singles-day.csv"
SERVICE_DAYS = REPO / "traces" / "service-days.csv"
CRD = REPO / "crds" / "peakserve.io_modeldeployments.yaml"

SPEC = """\
apiVersion: peakserve.io/v1alpha1
kind: ModelDeployment
metadata: {name: ranker}
spec:
  model:
    name: ranker
    uri: pvc://model-store/ranker/1
    inputs: [{name: dense, dataType: FP32, dims: [13]}]
    outputs: [{name: score, dataType: FP32, dims: [1]}]
  serving:
    dynamicBatching: {enabled: false}
  autoscaling:
    minReplicas: 2
    maxReplicas: 40
    metric: queueTime
    target: 1500
    scaleDown: {stabilizationWindowSeconds: 600}
    leadTimeSeconds: 300
    schedules:
      - name: singles-day
        start: "2025-11-11T00:00:00"
        end: "2025-11-11T03:00:00"
        timezone: Asia/Shanghai
        minReplicas: 38
"""


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="peakserve")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


def test_plan_end_to_end_writes_png_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--trace", str(SHIPPED), "--dt", "5", "--out", str(out), "--progress"]) == 0
    captured = capsys.readouterr()
    for text in ("static peak", "reactive HPA", "queueTime HPA + schedule", "requestRate HPA alone",
                 "requestRate HPA + schedule", "oracle", "GPU-hours", "x oracle",
                 "recommendation: minReplicas 36 from 4 min before", "leadTimeSeconds: 240"):
        assert text in captured.out
    assert "simulating predictive" in captured.err and "100%" in captured.err
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "plan.png").stat().st_size > 50_000
    document = json.loads((out / "plan.json").read_text())
    by_name = {r["policy"]: r for r in document["results"]}
    assert set(by_name) == {"static", "reactive", "queue", "signal", "schedule", "predictive", "oracle"}
    assert by_name["static"]["gpuHours"] == 864.0 and by_name["static"]["sloViolationMinutes"] == 0
    assert by_name["schedule"]["sloViolationMinutesAtStep"] == 0
    assert by_name["oracle"]["gpuHours"] < by_name["schedule"]["gpuHours"] < by_name["queue"]["gpuHours"]
    # The signal without the schedule is late for the announced step; the schedule fixes that.
    assert by_name["signal"]["sloViolationMinutesAtStep"] > 0
    # 24 hours hold no day of history: the predictive floor adds nothing to the schedule.
    assert by_name["predictive"]["gpuHours"] == by_name["schedule"]["gpuHours"]
    assert document["recommended"]["policy"] == "predictive"
    assert by_name["predictive"]["oracleRatio"] == document["recommended"]["oracleRatio"]
    assert document["recommendation"]["minReplicas"] == 36
    assert document["recommendation"]["leadTimeSeconds"] == 240
    assert document["hpa"]["floors"][0]["startOffsetSeconds"] == 8 * 3600
    assert len(document["perMinute"]["schedule"]["replicas"]) == 24 * 60


def test_plan_runs_on_a_trace_without_an_announced_promotion(tmp_path, capsys):
    """Eight days without a promotion: no schedule, the first 25 h are history, and the predictive floor is
    what keeps the recurring spikes within the SLO."""
    out = tmp_path / "out"
    assert run(["--trace", str(SERVICE_DAYS), "--dt", "10", "--out", str(out)]) == 0
    captured = capsys.readouterr().out
    assert "announced start none" in captured and "recommendation:" not in captured
    document = json.loads((out / "plan.json").read_text())
    by_name = {r["policy"]: r for r in document["results"]}
    assert set(by_name) == {"static", "reactive", "queue", "signal", "predictive", "oracle"}
    assert document["trace"]["historySeconds"] == 25 * 3600
    signal, predictive = by_name["signal"], by_name["predictive"]
    assert predictive["sloViolationMinutes"] * 5 < signal["sloViolationMinutes"]
    assert predictive["gpuHours"] < by_name["queue"]["gpuHours"] < by_name["static"]["gpuHours"]
    assert document["recommended"]["forecastMapePercent"] is not None
    assert document["recommendation"] is None


def test_plan_takes_bounds_target_and_schedules_from_the_spec(tmp_path, capsys):
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--dt", "5", "--out", str(out)]) == 0
    document = json.loads((out / "plan.json").read_text())
    hpa = document["hpa"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["queueTarget"]) == (2, 40, 1500.0)
    assert (hpa["metric"], hpa["target"]) == ("requestRate", 160.0)  # 80% of 200 requests/s
    assert hpa["floors"] == [{"name": "singles-day", "startOffsetSeconds": 8 * 3600.0,
                              "endOffsetSeconds": 11 * 3600.0, "minReplicas": 38, "leadSeconds": 300.0}]
    assert document["model"]["batchDelayUs"] == 0.0  # dynamic batching off in the spec
    assert "floors: 1 window(s) from spec.autoscaling.schedules" in capsys.readouterr().out


def test_plan_warns_about_a_target_past_capacity(tmp_path, capsys):
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC.replace("target: 1500", "target: 50000"))
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--dt", "5"]) == 0
    assert "above the queue time at capacity" in capsys.readouterr().out


def autoscaling(**changes):
    """spec.autoscaling of SPEC as `peakserve plan -f` reads it, with `changes` to its first schedule."""
    raw = yaml.safe_load(SPEC)["spec"]["autoscaling"]
    raw["schedules"][0].update(changes)
    return cli._autoscaling({"autoscaling": raw})


def test_schedule_floor_is_the_operators_window_as_trace_offsets():
    trace = load(SHIPPED)
    given = autoscaling(start="2025-11-10T11:00:00", end="2025-11-10T14:00:00", timezone="America/New_York")
    (floor,) = cli._schedule_floors(trace, given, startup_s=180.0)
    w = window(given.schedules[0], timedelta(seconds=300))  # the spec's leadTimeSeconds
    assert (floor.start_s - floor.lead_s, floor.start_s, floor.end_s) == (
        trace.offset_at(w.raise_at), trace.offset_at(w.start), trace.offset_at(w.end))
    # 11:00 EST is 16:00 UTC, 00:00 in the trace's +08:00: eight hours after its start.
    assert (floor.start_s - floor.lead_s, floor.end_s) == (8 * 3600.0 - 300, 11 * 3600.0)
    assert (floor.name, floor.min_replicas) == ("singles-day", 38)


def test_schedule_floor_without_a_lead_time_takes_the_operators():
    trace = load(SHIPPED)
    raw = yaml.safe_load(SPEC)["spec"]["autoscaling"]
    del raw["leadTimeSeconds"]
    given = cli._autoscaling({"autoscaling": raw})
    (floor,) = cli._schedule_floors(trace, given, startup_s=170.5)
    # Pod start 171 s + the metric pipeline 60 s, rounded up to whole minutes, as lead_time() does.
    assert floor.lead_s == lead_time(given, 171) == 240
    w = window(given.schedules[0], timedelta(seconds=240))
    assert floor.start_s - floor.lead_s == trace.offset_at(w.raise_at)


def test_schedules_need_a_trace_with_a_start():
    bare = loads("minute,requests_per_second\n0,1\n1,2\n")
    with pytest.raises(cli.PlanError, match=r"^spec\.autoscaling\.schedules: the trace has no `# start:` line"):
        cli._schedule_floors(bare, autoscaling(), startup_s=180.0)


def test_what_the_crd_accepts_is_accepted(tmp_path):
    # Unquoted, YAML would read a timestamp; kubectl keeps the string, and so does the planner.
    text = SPEC.replace('"2025-11-11T00:00:00"', "2025-11-11T00:00:00")
    text = text.replace("        timezone: Asia/Shanghai\n", "")
    assert not isinstance(yaml.safe_load(text)["spec"]["autoscaling"]["schedules"][0]["start"], str)
    (tmp_path / "md.yaml").write_text(text)
    given = cli._autoscaling(cli._read_spec(str(tmp_path / "md.yaml")))
    schedule = given.schedules[0]
    assert (schedule.start, schedule.timezone) == ("2025-11-11T00:00:00", "UTC")  # the CRD's default zone
    one_second = autoscaling(end="2025-11-11T00:00:01", minReplicas=40)
    assert one_second.schedules[0].min_replicas == one_second.max_replicas == 40


@pytest.mark.parametrize("old,new,field", [
    ('"2025-11-11T00:00:00"', '"00:00"', "spec.autoscaling.schedules.0.start"),
    ('"2025-11-11T03:00:00"', '"03:00"', "spec.autoscaling.schedules.0.end"),
    ('"2025-11-11T00:00:00"', '"2025-11-11T00:00:00+08:00"', "spec.autoscaling.schedules.0.start"),
    ("Asia/Shanghai", "Asia/Atlantis", "spec.autoscaling.schedules[singles-day].timezone"),
    ('"2025-11-11T03:00:00"', '"2025-11-11T00:00:00"', "spec.autoscaling.schedules[0].end"),
    ('"2025-11-11T03:00:00"', '"2025-11-10T23:00:00"', "spec.autoscaling.schedules[0].end"),
    ("minReplicas: 38", "minReplicas: 41", "spec.autoscaling.schedules"),
    ("minReplicas: 2", "minReplicas: 41", "spec.autoscaling.minReplicas"),
    ("target: 1500", "target: 150\n    metric: gpuUtilization", "spec.autoscaling.target"),
    ("    maxReplicas: 40\n", "", "spec.autoscaling.maxReplicas"),
    ('"2025-11-11T03:00:00"', '"2025-11-31T03:00:00"', "spec.autoscaling.schedules[singles-day].end"),
    ("      - name: singles-day", "      - name: promo\n        start: 2025-11-12T00:00:00\n"
     "        end: 2025-11-12T01:00:00\n        minReplicas: 3\n      - name: promo",
     "spec.autoscaling.schedules[1].name"),
])
def test_what_the_crd_or_the_operator_refuses_is_refused(tmp_path, capsys, old, new, field):
    assert old in SPEC
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC.replace(old, new, 1))
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--dt", "5"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"peakserve plan: {field}:"), captured.err
    assert captured.out == ""


def test_every_cel_rule_of_autoscaling_has_its_twin():
    crd = yaml.safe_load(CRD.read_text())
    autoscaling = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "autoscaling"]
    schedule = autoscaling["properties"]["schedules"]["items"]
    assert {r["rule"] for r in autoscaling["x-kubernetes-validations"]} == set(validation.AUTOSCALING_RULES)
    assert {r["rule"] for r in schedule["x-kubernetes-validations"]} == set(validation.SCHEDULE_RULES)
    assert autoscaling["properties"]["schedules"]["x-kubernetes-list-map-keys"] == ["name"]


@pytest.mark.parametrize("argv,message", [
    (["--trace", "no/such.csv"], "trace not found"),
    (["--trace", str(SHIPPED), "--service-ms", "200"], "below the SLO"),
    (["--trace", str(SHIPPED), "--announced", "not-a-time"], "--announced"),
])
def test_plan_usage_errors(argv, message, capsys):
    assert run(argv) == 2
    assert message in capsys.readouterr().err
