"""HA as the chart ships it: two operator processes with the chart's own `ha.enabled` args and the chart
ServiceAccount's token, one Lease between them.

Checked: exactly one replica acts (the standby's reconcile counter stays at zero, its metrics say standby);
the standby takes over within 15 s of a SIGKILL of the active one, over five kills; a clean stop hands the
Lease over at once; an active replica frozen past its renew deadline (SIGSTOP) is replaced and, woken up,
exits without acting again.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest

from peakserve.runtime.leader import LeaderElection, Timing
from peakserve.cluster.client import Kube
from peakserve_harness.operator_process import OperatorProcess

from integration.chart import admin_operators_paused, chart_run_args, helm, token_kubeconfig
from integration.cluster import ROOT, condition, md, wait_for

from .figures import record
from .secrets import assert_no_leaks, plant

pytestmark = pytest.mark.timeout(600)

RELEASE, NAMESPACE = "ha", "peakserve-ha"
HA_VALUES = ("--set", "ha.enabled=true", "--set", "replicaCount=2")
LEASE = "ha-peakserve"  # the release's full name: ha.leaseName's default
KILLS = 5
TAKEOVER_GOAL = 15.0


def _lease(kubectl) -> dict:
    return kubectl.get("lease", LEASE, NAMESPACE) or {}


def _holder(kubectl) -> str:
    return (_lease(kubectl).get("spec") or {}).get("holderIdentity") or ""


def _reconciles(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("peakserve_reconcile_total"))


def _leading(op: OperatorProcess) -> bool:
    return op.metrics().get("peakserve_leader") == 1.0


def _ready(kubectl, name: str, ns: str) -> bool:
    return condition(kubectl.get("modeldeployment", name, ns), "Ready").get("status") == "True"


@pytest.fixture
def chart_ha(kubectl, cluster, tmp_path):
    """The chart installed with HA values; yields a kubeconfig holding only its ServiceAccount's token."""
    with admin_operators_paused():
        helm(cluster, "install", RELEASE, str(ROOT / "charts" / "peakserve"), "-n", NAMESPACE, "--create-namespace",
             *HA_VALUES)
        try:
            yield token_kubeconfig(kubectl, NAMESPACE, LEASE, tmp_path / "sa.kubeconfig")
        finally:
            helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
            kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_one_active_replica_and_failover_within_15_s(chart_ha, kubectl, ns, tmp_path):
    args = chart_run_args(RELEASE, NAMESPACE, *HA_VALUES)
    assert "--leader-elect" in args and f"--leader-election-id={LEASE}" in args
    ops = [OperatorProcess(chart_ha, tmp_path / f"op-{i}.log", args=args) for i in range(2)]
    started: list[OperatorProcess] = []
    figures: dict = {"kills": [], "graceful": None, "frozen": None}
    try:
        for op in ops:
            op.start()  # a standby answers /healthz too, or its liveness probe would restart it
            started.append(op)
        active = wait_for(lambda: next((o for o in ops if _leading(o)), None), timeout=30, what="one leader")
        standby = next(o for o in ops if o is not active)
        planted = plant(kubectl, ns, seed=31)
        kubectl.apply(md("m0", ns, model=planted.model_source()))  # fetched from S3 with the planted Secret
        for i in range(1, 3):
            kubectl.apply(md(f"m{i}", ns))
        wait_for(lambda: all(_ready(kubectl, f"m{i}", ns) for i in range(3)), timeout=90, what="Ready")
        assert not _leading(standby) and _reconciles(standby) == 0

        transitions = (_lease(kubectl).get("spec") or {}).get("leaseTransitions", 0)
        for kill in range(KILLS):
            holder = _holder(kubectl)
            active.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            active.proc.wait(timeout=10)
            kubectl.apply(md(f"after-kill-{kill}", ns))  # an object only the new active replica can serve
            wait_for(lambda: _holder(kubectl) not in ("", holder), timeout=30, interval=0.1, what="takeover")
            takeover = time.monotonic() - killed_at
            wait_for(lambda: _ready(kubectl, f"after-kill-{kill}", ns), timeout=60, interval=0.2,
                     what="the new object served")
            served = time.monotonic() - killed_at
            kubectl.run("delete", "modeldeployment", f"after-kill-{kill}", "-n", ns, "--wait=false")  # its GPU
            assert _leading(standby)
            figures["kills"].append({"takeover_s": round(takeover, 1), "new_object_ready_s": round(served, 1)})
            # The killed pod comes back, as the Deployment's would, and stands by.
            active, standby = standby, active
            standby.start()
            time.sleep(3)  # a few retry periods: a standby that would act does so by now
            assert not _leading(standby) and _reconciles(standby) == 0
            assert takeover <= TAKEOVER_GOAL, figures
        lease = _lease(kubectl)["spec"]
        assert lease["leaseTransitions"] == transitions + KILLS

        # A clean stop (SIGTERM: a rolling update) hands the Lease over without waiting for it to expire.
        stopped_at = time.monotonic()
        active.stop()
        wait_for(lambda: _leading(standby), timeout=15, interval=0.1, what="handover")
        figures["graceful"] = {"takeover_s": round(time.monotonic() - stopped_at, 1)}
        assert figures["graceful"]["takeover_s"] <= 5
        active, standby = standby, active
        standby.start()

        # Frozen past its renew deadline: the standby takes over; woken up, the old one exits untouched.
        os.kill(active.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_for(lambda: _leading(standby), timeout=30, interval=0.2, what="takeover from a frozen leader")
        figures["frozen"] = {"takeover_s": round(time.monotonic() - frozen_at, 1)}
        os.kill(active.proc.pid, signal.SIGCONT)
        assert active.proc.wait(timeout=15) == 1, active.tail()
        assert "lost" in active.tail(200)
        kubectl.apply(md("after-freeze", ns))
        wait_for(lambda: _ready(kubectl, "after-freeze", ns), timeout=60, what="served after the freeze")
        scanned = assert_no_leaks(planted, kubectl, logs=[tmp_path / f"op-{i}.log" for i in range(2)])
        worst = max(k["takeover_s"] for k in figures["kills"])
        record("ha", {"kills": KILLS, "worst_takeover_s": worst, **figures, "secretsScan": scanned,
                      "timing": {"lease_s": Timing.duration, "renew_deadline_s": Timing.renew_deadline,
                                 "retry_s": Timing.retry}})
        # Nothing either replica did was refused to the chart's identity (the Lease's Role included).
        for i in range(2):
            log = (tmp_path / f"op-{i}.log").read_text()
            assert "Forbidden" not in log and " 403 " not in log, log[-2000:]
    finally:
        for op in started:
            if op.alive():
                os.kill(op.proc.pid, signal.SIGCONT)
            op.stop()


def test_two_electors_never_both_hold_the_lease(cluster, kubectl, ns):
    """The election itself against the real API server: one winner at a time, expiry by the local clock,
    a released Lease taken at once."""
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    fast = Timing(duration=3, renew_deadline=2, retry=0.5)
    a = LeaderElection(kube, ns, "lease", "a", fast)
    b = LeaderElection(kube, ns, "lease", "b", fast)
    assert a.try_acquire_or_renew() and a.holding()
    assert not b.try_acquire_or_renew() and not b.holding()
    assert a.try_acquire_or_renew()  # a renewal
    # b has seen the Lease change just now: it waits out the whole lease from that moment.
    deadline = time.monotonic() + 3 - 0.5
    while time.monotonic() < deadline:
        assert not b.try_acquire_or_renew()
        time.sleep(0.25)
    time.sleep(1.0)
    assert b.try_acquire_or_renew() and b.holding()
    lease = kubectl.get("lease", "lease", ns)["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    # a, not renewed within its deadline, holds nothing and cannot take it back while b renews.
    assert not a.holding() and not a.try_acquire_or_renew()
    b.release()
    assert not b.holding() and a.try_acquire_or_renew()
    renewed = dt.datetime.fromisoformat(kubectl.get("lease", "lease", ns)["spec"]["renewTime"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - renewed).total_seconds()) < 5
