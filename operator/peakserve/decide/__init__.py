"""Deciding: from a typed snapshot of the cluster to a plan of writes, status and wake-up. No I/O here."""

from .decision import decide
from .plan import Plan
from .snapshot import CHILD, DRIFT, SPEC, WAKE, Snapshot

__all__ = ["decide", "Plan", "Snapshot", "SPEC", "CHILD", "DRIFT", "WAKE"]
