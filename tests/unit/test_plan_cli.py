"""`peakserve plan` end to end: the table, the recommendation, plan.json and plan.png."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from peakserve.plan import cli

SHIPPED = Path(__file__).resolve().parents[2] / "traces" / "singles-day.csv"

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
    for text in ("static peak", "reactive HPA", "schedule + metric HPA", "oracle", "GPU-hours",
                 "recommendation: minReplicas 36 from 4 min before", "leadTimeSeconds: 240"):
        assert text in captured.out
    assert "simulating schedule" in captured.err and "100%" in captured.err
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "plan.png").stat().st_size > 50_000
    document = json.loads((out / "plan.json").read_text())
    by_name = {r["policy"]: r for r in document["results"]}
    assert set(by_name) == {"static", "reactive", "schedule", "metric", "oracle"}
    assert by_name["static"]["gpuHours"] == 864.0 and by_name["static"]["sloViolationMinutes"] == 0
    assert by_name["schedule"]["sloViolationMinutesAtStep"] == 0
    assert by_name["oracle"]["gpuHours"] < by_name["schedule"]["gpuHours"] < by_name["static"]["gpuHours"]
    assert document["recommendation"]["minReplicas"] == 36
    assert document["recommendation"]["leadTimeSeconds"] == 240
    assert document["hpa"]["floors"][0]["startOffsetSeconds"] == 8 * 3600
    assert len(document["perMinute"]["schedule"]["replicas"]) == 24 * 60


def test_plan_takes_bounds_target_and_schedules_from_the_spec(tmp_path, capsys):
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--dt", "5", "--out", str(out)]) == 0
    document = json.loads((out / "plan.json").read_text())
    hpa = document["hpa"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["target"]) == (2, 40, 1500.0)
    assert hpa["floors"] == [{"name": "singles-day", "startOffsetSeconds": 8 * 3600.0,
                              "endOffsetSeconds": 11 * 3600.0, "minReplicas": 38, "leadSeconds": 300.0}]
    assert document["model"]["batchDelayUs"] == 0.0  # dynamic batching off in the spec
    assert "floors: 1 window(s) from spec.autoscaling.schedules" in capsys.readouterr().out


def test_plan_warns_about_a_target_past_capacity(tmp_path, capsys):
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC.replace("target: 1500", "target: 50000"))
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--dt", "5"]) == 0
    assert "above the queue time at capacity" in capsys.readouterr().out


def test_plan_daily_schedule_and_clock_announcement(tmp_path):
    spec = tmp_path / "md.yaml"
    spec.write_text(SPEC.replace('"2025-11-11T00:00:00"', '"00:00"').replace('"2025-11-11T03:00:00"', '"03:00"'))
    out = tmp_path / "out"
    assert run(["--trace", str(SHIPPED), "-f", str(spec), "--announced", "00:00", "--dt", "5",
                "--out", str(out)]) == 0
    floors = json.loads((out / "plan.json").read_text())["hpa"]["floors"]
    assert [(f["startOffsetSeconds"], f["endOffsetSeconds"]) for f in floors] == [(8 * 3600.0, 11 * 3600.0)]


@pytest.mark.parametrize("argv,message", [
    (["--trace", "no/such.csv"], "trace not found"),
    (["--trace", str(SHIPPED), "--service-ms", "200"], "below the SLO"),
    (["--trace", str(SHIPPED), "--announced", "not-a-time"], "--announced"),
])
def test_plan_usage_errors(argv, message, capsys):
    assert run(argv) == 2
    assert message in capsys.readouterr().err
