"""PromotionReady on a real control plane: a promotion a few hours away whose floor does not fit the free A10 GPUs
of the KWOK nodes is reported False with the figures and an Event; a new A10 node makes it True, cordoning that
node makes it False again, and a lower floor makes it True.

The session's nodes (harness controlplane/nodes.py): gpu-a10-0 and gpu-a10-1 with 4 A10 GPUs each are the
ones a Triton pod may use; the probed A10 nodes carry a taint the pods do not tolerate, and the H100 node is
another product, so neither counts."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from peakserve_harness.controlplane.nodes import GpuNode, node_manifest

from .cluster import condition, md, wait_for

pytestmark = pytest.mark.integration

EXTRA_NODE = GpuNode("gpu-a10-promotion", "NVIDIA-A10", 8, cpu="48", memory="192Gi")
PLAIN_A10_GPUS = 8


def _local(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def spec(floor: int, start: dt.datetime) -> dict:
    return {"autoscaling": {
        "minReplicas": 1, "maxReplicas": 40, "engine": "hpa", "leadTimeSeconds": 600,
        "schedules": [{"name": "flash-sale", "start": _local(start), "end": _local(start + dt.timedelta(hours=1)),
                       "timezone": "UTC", "minReplicas": floor}]}}


def promotion_ready(kubectl, ns, status: str, reason: str):
    def check():
        obj = kubectl.get("modeldeployment", "ranker", ns)
        c = condition(obj, "PromotionReady")
        return obj if (c.get("status"), c.get("reason")) == (status, reason) else None
    return wait_for(check, timeout=90, what=f"PromotionReady={status} {reason}")


def figures(obj) -> dict:
    return obj["status"]["autoscaling"]["promotion"]


def test_promotion_ready_follows_the_free_gpus(kubectl, operator, ns):
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=2)
    kubectl.apply(md("ranker", ns, **spec(16, start)))

    # 16 GPUs cannot fit in the 8 A10 GPUs of the nodes a Triton pod may use.
    obj = promotion_ready(kubectl, ns, "False", "InsufficientGpus")
    free = figures(obj)["freeGpus"]
    assert figures(obj) == {"schedule": "flash-sale", "neededGpus": 16, "freeGpus": free}
    assert free <= PLAIN_A10_GPUS, "the tainted probed nodes and the H100 node do not count"
    c = condition(obj, "PromotionReady")
    assert re.match(rf"needs 16 NVIDIA-A10 GPUs, {free} (is|are) free: promotion flash-sale", c["message"]), c
    assert c["observedGeneration"] == obj["metadata"]["generation"] and c["lastTransitionTime"]
    events = wait_for(lambda: [e for e in kubectl.list("events", ns)
                               if e["reason"] == "InsufficientGpus" and e["type"] == "Warning"],
                      what="the InsufficientGpus Event")
    assert "PromotionReady=False: needs 16 NVIDIA-A10 GPUs" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "ModelDeployment"
    wide = kubectl.run("get", "modeldeployment", "ranker", "-n", ns, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "PROMOTION" in header.split()
    assert row.split()[header.split().index("PROMOTION")] == "False", wide

    # A floor one GPU short of what is free, then a new A10 node: the floor fits.
    kubectl.apply(md("ranker", ns, **spec(free + 1, start)))
    wait_for(lambda: figures(kubectl.get("modeldeployment", "ranker", ns)).get("neededGpus") == free + 1,
             what="the new floor checked")
    assert condition(kubectl.get("modeldeployment", "ranker", ns), "PromotionReady")["status"] == "False"
    try:
        kubectl.apply(node_manifest(EXTRA_NODE))
        obj = promotion_ready(kubectl, ns, "True", "GpusAvailable")
        assert figures(obj)["freeGpus"] >= free + EXTRA_NODE.gpus - 1   # another test's pod may have started
        wait_for(lambda: any(e["reason"] == "GpusAvailable" and e["type"] == "Normal"
                             for e in kubectl.list("events", ns)), what="the GpusAvailable Event")

        # A cordoned node's GPUs are not free for the promotion.
        kubectl.run("cordon", EXTRA_NODE.name)
        promotion_ready(kubectl, ns, "False", "InsufficientGpus")
    finally:
        kubectl.run("delete", "node", EXTRA_NODE.name, "--wait=true", check=False)

    # A floor that fits: True again.
    kubectl.apply(md("ranker", ns, **spec(1, start)))
    obj = promotion_ready(kubectl, ns, "True", "GpusAvailable")
    assert figures(obj)["neededGpus"] == 1
