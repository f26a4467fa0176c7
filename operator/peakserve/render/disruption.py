"""The PodDisruptionBudget: node drains take Triton pods down one at a time."""

from __future__ import annotations

from typing import Any

from . import names
from .owner import Owner


def render_pdb(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(names.child_name(owner.name)),
        "spec": {
            "selector": {"matchLabels": names.selector_labels(owner.name)},
            # maxUnavailable (not minAvailable) so a single-replica model never blocks a drain forever.
            "maxUnavailable": 1,
            # A pod that is not serving anyway must not hold a drain hostage.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
