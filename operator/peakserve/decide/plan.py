"""What one reconcile pass will do: the output of decide, the input of act. Plain data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .. import api
from ..api.spec import ModelDeploymentStatus

# The field manager that parks a Deployment's live replica count when an HPA takes the field over.
HANDOVER_MANAGER = "peakserve-handover-to-hpa"


@dataclass(frozen=True)
class Apply:
    """Server-side apply of `obj` with field manager `manager`."""

    obj: dict[str, Any]
    manager: str = api.FIELD_MANAGER


@dataclass(frozen=True)
class Patch:
    """A JSON merge patch of one object in the ModelDeployment's namespace."""

    api_version: str
    kind: str
    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """Act carries these out in field order: dry runs, applies, patches, deletions, status, Events."""

    status: ModelDeploymentStatus
    dry_run: tuple[dict[str, Any], ...] = ()   # validated by the API server before anything is written
    applies: tuple[Apply, ...] = ()
    patches: tuple[Patch, ...] = ()
    deletions: tuple[Delete, ...] = ()
    status_patch: dict[str, Any] | None = None  # merge patch from the status read to `status`; None: unchanged
    events: tuple[Event, ...] = ()              # one per condition transition, posted after the status patch
    wake_at: dt.datetime | None = None          # reconcile again then (a promotion floor changes)
    status_at: dt.datetime | None = None        # no status written: a pass that reports writes it then
    invalid: str | None = None                  # why the spec cannot be served, when it cannot

    def summary(self) -> dict[str, Any]:
        """The plan as data, for table tests and logs: what is written, not how."""
        return {
            "dryRun": [f"{o['kind']}/{o['metadata']['name']}" for o in self.dry_run],
            "apply": [f"{a.obj['kind']}/{a.obj['metadata']['name']}" + ("" if a.manager == api.FIELD_MANAGER
                                                                           else f" (manager {a.manager})")
                      for a in self.applies],
            "patch": [f"{p.kind}/{p.name}" for p in self.patches],
            "delete": [f"{d.kind}/{d.name}" for d in self.deletions],
            "status": status_dict(self.status),
            "statusChanged": self.status_patch is not None,
            "events": [f"{e.type} {e.reason}: {e.message}" for e in self.events],
            "wakeAt": self.wake_at.isoformat() if self.wake_at else None,
            "statusAt": self.status_at.isoformat() if self.status_at else None,
            "invalid": self.invalid,
        }


def status_dict(status: BaseModel) -> dict[str, Any]:
    """status (or a part of it) as the API server stores it: camelCase keys, unset fields left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
