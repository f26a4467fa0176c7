"""Promotion schedules: the replica floor at a given instant. Pure: the clock is an argument.

The floor is always recomputed from the clock and the spec, never remembered, so an operator that
restarts at any moment (in a window, just before one, or after one) lands on the right floor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .spec import AutoscalingSpec, PromotionSchedule

UTC = dt.timezone.utc
# Scrape interval + adapter relist + HPA sync: how long the metrics take to notice a step by themselves.
METRIC_PIPELINE_SECONDS = 60
DEFAULT_LEAD_SECONDS = 600  # until a pod start has been measured


@dataclass(frozen=True)
class Window:
    name: str
    raise_at: dt.datetime   # start minus the lead time, UTC
    start: dt.datetime
    end: dt.datetime
    min_replicas: int


@dataclass(frozen=True)
class Floor:
    replicas: int
    active: str | None              # the schedule holding the floor up now
    next_schedule: str | None       # the next schedule whose floor has not risen yet
    next_change: dt.datetime | None  # when the floor may change next (a raise or an end)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from err


def window(schedule: PromotionSchedule, lead: dt.timedelta) -> Window:
    tz = zone(schedule.timezone)
    start = dt.datetime.fromisoformat(schedule.start).replace(tzinfo=tz).astimezone(UTC)
    end = dt.datetime.fromisoformat(schedule.end).replace(tzinfo=tz).astimezone(UTC)
    return Window(schedule.name, start - lead, start, end, schedule.min_replicas)


def lead_time(autoscaling: AutoscalingSpec, measured_startup: int | None) -> int:
    """Seconds before start: the spec's, else the measured start + load time plus the metric delay,
    rounded up to a whole minute."""
    if autoscaling.lead_time_seconds is not None:
        return autoscaling.lead_time_seconds
    if not measured_startup:
        return DEFAULT_LEAD_SECONDS
    seconds = measured_startup + METRIC_PIPELINE_SECONDS
    return -(-seconds // 60) * 60


def floor_at(now: dt.datetime, autoscaling: AutoscalingSpec, lead_seconds: int) -> Floor:
    lead = dt.timedelta(seconds=lead_seconds)
    windows = [window(s, lead) for s in autoscaling.schedules]
    active = [w for w in windows if w.raise_at <= now < w.end]
    upcoming = sorted((w for w in windows if now < w.raise_at), key=lambda w: w.raise_at)
    changes = [w.raise_at for w in upcoming] + [w.end for w in active]
    top = max(active, key=lambda w: w.min_replicas, default=None)
    replicas = max([autoscaling.min_replicas] + [w.min_replicas for w in active])
    return Floor(replicas=replicas, active=top.name if top and top.min_replicas > autoscaling.min_replicas else None,
                 next_schedule=upcoming[0].name if upcoming else None,
                 next_change=min(changes) if changes else None)
