"""Promotion schedules: the floor is a function of the clock and the spec, so any restart lands right."""

from __future__ import annotations

import datetime as dt

import pytest

from peakserve.api.spec import AutoscalingSpec
from peakserve.render.keda import cron_triggers, prometheus_trigger
from peakserve.render.owner import Owner
from peakserve.decide.scaling import startup_seconds
from peakserve.api.schedules import DEFAULT_LEAD_SECONDS, floor_at, lead_time
from peakserve.api.validation import InvalidSpec, parse_spec

UTC = dt.timezone.utc
SINGLES_DAY = {"name": "singles-day", "start": "2026-11-11T00:00:00", "end": "2026-11-11T02:00:00",
               "timezone": "Asia/Shanghai", "minReplicas": 12}


def spec(*schedules, **extra) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"minReplicas": 2, "maxReplicas": 40, "schedules": list(schedules),
                                           **extra})


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("now,floor,active,next_change", [
    # Midnight in Shanghai is 16:00 UTC; a 600 s lead raises the floor at 15:50 UTC.
    ("2026-11-10T15:49:59", 2, None, "2026-11-10T15:50:00"),
    ("2026-11-10T15:50:00", 12, "singles-day", "2026-11-10T18:00:00"),
    ("2026-11-10T17:59:59", 12, "singles-day", "2026-11-10T18:00:00"),
    ("2026-11-10T18:00:00", 2, None, None),   # ended: back to the base floor, no further change
    ("2025-01-01T00:00:00", 2, None, "2026-11-10T15:50:00"),
])
def test_floor_follows_the_clock(now, floor, active, next_change):
    result = floor_at(at(now), spec(SINGLES_DAY), 600)
    assert (result.replicas, result.active) == (floor, active)
    assert result.next_change == (at(next_change) if next_change else None)


def test_overlapping_promotions_take_the_higher_floor_and_the_next_change():
    flash = {"name": "flash", "start": "2026-11-11T01:00:00", "end": "2026-11-11T01:30:00",
             "timezone": "Asia/Shanghai", "minReplicas": 30}
    result = floor_at(at("2026-11-10T17:10:00"), spec(SINGLES_DAY, flash), 0)
    assert (result.replicas, result.active) == (30, "flash")
    assert result.next_change == at("2026-11-10T17:30:00")


def test_lead_time_comes_from_the_spec_or_the_measured_start():
    assert lead_time(spec(SINGLES_DAY, leadTimeSeconds=120), 999) == 120
    assert lead_time(spec(SINGLES_DAY), None) == DEFAULT_LEAD_SECONDS
    # 200 s to Ready + 60 s of metric pipeline, rounded up to a whole minute
    assert lead_time(spec(SINGLES_DAY), 200) == 300


def test_startup_is_creation_to_ready():
    pods = [{"metadata": {"creationTimestamp": "2026-11-10T10:00:00Z"},
             "status": {"conditions": [{"type": "Ready", "status": "True",
                                        "lastTransitionTime": "2026-11-10T10:03:20Z"}]}},
            {"metadata": {"creationTimestamp": "2026-11-10T10:00:00Z"},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]
    assert startup_seconds(pods) == 200
    assert startup_seconds([]) is None


def test_unknown_time_zone_is_invalid_spec():
    raw = {"model": {"name": "m", "uri": "/m", "inputs": [{"name": "x", "dataType": "FP32", "dims": [1]}],
                     "outputs": [{"name": "y", "dataType": "FP32", "dims": [1]}]},
           "autoscaling": {"maxReplicas": 4, "schedules": [{**SINGLES_DAY, "timezone": "Mars/Olympus",
                                                             "minReplicas": 3}]}}
    with pytest.raises(InvalidSpec, match="unknown time zone 'Mars/Olympus'"):
        parse_spec(raw)


def test_keda_cron_starts_early_in_the_promotion_time_zone():
    [trigger] = cron_triggers(spec(SINGLES_DAY), 900)
    assert trigger["metadata"] == {"timezone": "Asia/Shanghai", "start": "45 23 10 11 *", "end": "0 2 11 11 *",
                                   "desiredReplicas": "12"}


@pytest.mark.parametrize("metric,target,metric_type,threshold", [
    ("queueTime", 20000, "Value", "20000"),
    ("pendingRequests", 8, "AverageValue", "8"),
    ("gpuUtilization", 80, "Value", "0.8"),
])
def test_keda_prometheus_trigger_units(metric, target, metric_type, threshold):
    trigger = prometheus_trigger(Owner("ranker", "shop", "u"), spec(metric=metric, target=target))
    assert (trigger["metricType"], trigger["metadata"]["threshold"]) == (metric_type, threshold)
    assert 'namespace="shop"' in trigger["metadata"]["query"]


def test_status_patch_removes_fields_that_went_away():
    from peakserve.decide.status import merge_patch

    before = {"autoscaling": {"floor": 3, "activeSchedule": "flash", "nextChange": "x"}, "precision": "int8",
              "build": {"hash": "a"}}
    after = {"autoscaling": {"floor": 1}, "precision": "int8"}
    assert merge_patch(before, after) == {"autoscaling": {"floor": 1, "activeSchedule": None, "nextChange": None},
                                          "precision": "int8", "build": None}
