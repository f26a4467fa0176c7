"""Kubernetes timestamps (metav1.Time): UTC, whole seconds, RFC 3339 with a Z."""

from __future__ import annotations

import datetime as dt


def rfc3339(moment: dt.datetime | None = None) -> str:
    """A Kubernetes timestamp; now when no moment is given."""
    moment = moment or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    """The moment a Kubernetes timestamp names, timezone-aware."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
