"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

With several replicas (the chart's `ha.enabled`) only the one holding the Lease runs kopf, the drift loop
and the wake-up timers; the others wait in `acquire` and do nothing else. kopf's own peering cannot do
this: replicas of one Deployment all start with the same priority, and kopf pauses every operator of
equal priority, the active one included.

Expiry is judged by the local monotonic clock, from the moment this replica last saw the Lease change,
never by comparing `renewTime` with the local wall clock: the replicas' clocks need not agree.

The holder renews every `retry` seconds. When it has not renewed for `renew_deadline` seconds it stops
writing at once (`holding()` turns False: the client refuses every write) and the process exits, so the
pod restarts as a standby. `renew_deadline` < `duration`, so a holder that is cut off stops before any
standby can take the Lease over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from typing import Any, Callable

from ..cluster.client import ApiException, Kube, resource_path

log = logging.getLogger("peakserve.leader")

LEASE_API = "coordination.k8s.io/v1"


@dataclasses.dataclass(frozen=True)
class Timing:
    # Shorter than client-go's 15/10/2 so that a standby takes over within 15 s of the holder's death:
    # at most `duration` after the last renewal it saw, plus one `retry` period.
    duration: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0


def _micro_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic):
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.timing, self.clock = timing, clock
        self._seen: tuple[str, float] = ("", 0.0)  # (resourceVersion last seen, when it was first seen)
        self._renewed_at: float | None = None

    # ---- one attempt ---------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease. True: this replica holds it now."""
        path = resource_path(LEASE_API, "Lease", self.namespace, self.name)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
            if lease is None:
                self.kube.create(resource_path(LEASE_API, "Lease", self.namespace), {
                    "apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, acquired=now, transitions=0)})
                return self._renewed()
            spec = lease.get("spec") or {}
            version = lease["metadata"]["resourceVersion"]
            if version != self._seen[0]:
                self._seen = (version, self.clock())
            holder = spec.get("holderIdentity") or ""
            duration = spec.get("leaseDurationSeconds") or self.timing.duration
            if holder and holder != self.identity and self.clock() < self._seen[1] + duration:
                return False  # another replica holds it and renewed within its lease
            ours = holder == self.identity
            acquired = spec.get("acquireTime") if ours else _micro_time(now)
            transitions = (spec.get("leaseTransitions") or 0) + (0 if ours or not holder else 1)
            lease["spec"] = self._spec(now, acquired=acquired, transitions=transitions)
            updated = self.kube.replace(path, lease)  # resourceVersion in the body: 409 if someone was faster
            self._seen = (updated["metadata"]["resourceVersion"], self.clock())
            if not ours:
                log.info("acquired lease %s/%s as %s (previous holder: %s)", self.namespace, self.name,
                         self.identity, holder or "none")
            return self._renewed()
        except ApiException as err:
            if err.status != 409:
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, err.status, err.reason)
            return False
        except OSError as err:  # API server unreachable: the renew deadline decides
            log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            return False

    def _spec(self, now: dt.datetime, acquired: Any, transitions: int) -> dict[str, Any]:
        acquired = _micro_time(acquired) if isinstance(acquired, dt.datetime) else acquired
        return {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.timing.duration),
                "acquireTime": acquired, "renewTime": _micro_time(now), "leaseTransitions": transitions}

    def _renewed(self) -> bool:
        self._renewed_at = self.clock()
        return True

    # ---- the loop ------------------------------------------------------------------------
    def holding(self) -> bool:
        """Whether this replica may write: it renewed within the renew deadline."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.timing.renew_deadline

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is set (False)."""
        log.info("waiting for lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            stop.wait(self.timing.retry * random.uniform(1.0, 1.2))  # jitter: standbys do not retry in step
        return False

    def keep_renewing(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew every `retry` seconds in a thread of its own; `on_lost` once the renew deadline passes."""
        def loop() -> None:
            while not stop.wait(self.timing.retry):
                if not self.try_acquire_or_renew() and not self.holding():
                    log.error("lease %s/%s lost: not renewed for %.0f s", self.namespace, self.name,
                              self.timing.renew_deadline)
                    on_lost()
                    return
        thread = threading.Thread(target=loop, name="lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Hand the Lease over at once on a clean stop, so a standby need not wait for it to expire."""
        if not self.holding():
            return
        try:
            lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                now = _micro_time(dt.datetime.now(dt.timezone.utc))
                lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=now)
                self.kube.replace(resource_path(LEASE_API, "Lease", self.namespace, self.name), lease)
                log.info("released lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError) as err:  # the Lease then expires by itself
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, err)
        self._renewed_at = None
