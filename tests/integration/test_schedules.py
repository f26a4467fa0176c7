"""Promotion schedules on a real control plane: the operator raises the HPA's floor lead time before
the window, the real HPA controller scales the Deployment up to it, an operator restart inside the
window keeps the floor, and the floor returns after the window. Short windows, real clock."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from .cluster import md, wait_for

pytestmark = pytest.mark.integration

LEAD, OPENS_IN, LENGTH = 20, 40, 40   # seconds


def _local(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def hpa_floor(kubectl, ns) -> int | None:
    hpa = kubectl.get("hpa", "ranker", ns)
    return hpa and hpa["spec"]["minReplicas"]


def autoscaling_status(kubectl, ns) -> dict:
    return ((kubectl.get("modeldeployment", "ranker", ns) or {}).get("status") or {}).get("autoscaling") or {}


def test_floor_rises_lead_time_before_the_window_and_returns_after(kubectl, operator, ns):
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    start, end = now + dt.timedelta(seconds=OPENS_IN), now + dt.timedelta(seconds=OPENS_IN + LENGTH)
    raise_at = start - dt.timedelta(seconds=LEAD)
    kubectl.apply(md("ranker", ns, autoscaling={
        "minReplicas": 1, "maxReplicas": 5, "engine": "hpa", "leadTimeSeconds": LEAD,
        "schedules": [{"name": "flash-sale", "start": _local(start), "end": _local(end), "timezone": "UTC",
                       "minReplicas": 3}]}))

    status = wait_for(lambda: autoscaling_status(kubectl, ns).get("nextSchedule") and autoscaling_status(kubectl, ns),
                      what="status.autoscaling")
    assert status["nextSchedule"] == "flash-sale" and status["floor"] == 1 and status["leadTimeSeconds"] == LEAD
    assert status["nextChange"] == raise_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert wait_for(lambda: hpa_floor(kubectl, ns), what="the HPA") == 1

    # Before the raise the floor stays at the base; after it, the operator has moved it on time.
    time.sleep(max(0.0, (raise_at - dt.datetime.now(dt.timezone.utc)).total_seconds() - 3))
    assert hpa_floor(kubectl, ns) == 1
    wait_for(lambda: hpa_floor(kubectl, ns) == 3, timeout=10, what="the floor raised at start - lead")
    raised = dt.datetime.now(dt.timezone.utc)
    assert (raised - raise_at).total_seconds() < 8, "the floor rose on time, not at the next drift pass"
    assert autoscaling_status(kubectl, ns).get("activeSchedule") == "flash-sale"
    # The real HPA controller (5 s sync) brings the Deployment up to the floor before the window opens.
    wait_for(lambda: (kubectl.get("deployment", "ranker", ns)["status"].get("readyReplicas") or 0) >= 3,
             timeout=LEAD, what="3 ready replicas before the window opens")
    assert dt.datetime.now(dt.timezone.utc) < start

    # A restart inside the window recomputes the same floor from the clock.
    operator.restart()
    time.sleep(2)
    assert hpa_floor(kubectl, ns) == 3

    # After the window the floor returns to the base (scale-down itself is the HPA's, under its window).
    time.sleep(max(0.0, (end - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    wait_for(lambda: hpa_floor(kubectl, ns) == 1, timeout=10, what="the floor back at the base after the window")
    status = autoscaling_status(kubectl, ns)
    assert status["floor"] == 1 and "activeSchedule" not in status and "nextChange" not in status
