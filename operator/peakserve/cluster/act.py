"""Act: carry out a Plan against the API server. The only writes of a reconcile pass happen here."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..decide.plan import Plan
from .client import ApiException, Kube, error_message
from .observe import Held

log = logging.getLogger("peakserve.act")

# (body of the ModelDeployment, event type, reason, message) -> None
EventSink = Callable[[dict[str, Any], str, str, str], None]


class Rejected(Exception):
    """The API server refused a rendered child as invalid: the spec asks for something it cannot be."""


# What server-side apply answers with a 500 for content it cannot take (kubernetes/kubernetes#139253): a field
# the child's schema does not declare (an unknown key in a free-form affinity), or a value its types refuse
# (a quantity the parser rejects).
APPLY_INPUT_ERRORS = ("failed to create typed patch object", "failed to convert new object")


def refuses_input(err: ApiException) -> bool:
    """The API server refused what was sent, rather than failed: 400 or 422, or one of the 500s above.
    Retrying such a request can only fail again."""
    return err.status in (400, 422) or (err.status == 500 and error_message(err).startswith(APPLY_INPUT_ERRORS))


def act(kube: Kube, body: dict[str, Any], plan: Plan, emit: EventSink,
        held: Held | None = None) -> dict[str, Any] | None:
    """Returns the ModelDeployment as the status write left it (None when the plan wrote no status).
    `held` (the children a pass reads instead of a GET, cluster/observe.py) learns what this pass applied (the
    API server's answer) and deleted, so the next pass never reads an older one."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        for obj in plan.dry_run:  # the API server's own validation, before anything changes
            kube.apply(obj, dry_run=True)
        for item in plan.applies:
            child = kube.apply(item.obj, manager=item.manager)
            if held is not None and child.get("kind") == held.KIND:
                held.saw(child)
    except ApiException as err:
        if refuses_input(err):
            raise Rejected(error_message(err)) from err
        raise
    for patch in plan.patches:
        kube.merge_patch(patch.api_version, patch.kind, namespace, patch.name, patch.patch)
    for gone in plan.deletions:
        kube.delete(gone.api_version, gone.kind, namespace, gone.name)
        if held is not None and gone.kind == held.KIND:
            held.gone(namespace, gone.name)
    if plan.status_patch is None:
        return None
    written = kube.patch_status(namespace, meta["name"], plan.status_patch)
    for event in plan.events:
        log.info("%s/%s %s (%s)", namespace, meta["name"], event.message, event.reason)
        emit(body, event.type, event.reason, event.message)
    return written
