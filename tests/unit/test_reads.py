"""Which children a pass reads (decide/snapshot.first_reads): every read is a request to the API server,
and at 1,000 objects created at once the reads of children that could not exist were most of them."""

from __future__ import annotations

from typing import Any

import pytest

from peakserve.api.validation import spec_or_reason
from peakserve.decide.snapshot import CHILD, DRIFT, SPEC, WAKE, Snapshot, first_reads, never_reconciled

SPEC_BODY = {
    "model": {"name": "ranker", "uri": "pvc://model-store/ranker/1", "maxBatchSize": 8,
              "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
              "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
    "serving": {"gpus": 1},
    "replicas": 2,
}
PRUNING_ONLY = {"hpa", "headroom", "canary"}


def snapshot(cause: str, generation: int, status: dict[str, Any] | None) -> Snapshot:
    body = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "ranker", "namespace": "shop", "uid": "u-1", "generation": generation},
            "spec": SPEC_BODY, **({"status": status} if status is not None else {})}
    return Snapshot(body=body, cause=cause, keda_served=False)


def slots(snap: Snapshot) -> set[str]:
    return {r.slot for r in first_reads(snap, spec_or_reason(snap.body["spec"]))}


STABLE = {"observedGeneration": 1, "rollout": {"phase": "Stable", "stableHash": "abc"}}
CANARY = {"observedGeneration": 2, "rollout": {"phase": "Canary", "stableHash": "abc", "canaryHash": "def"}}


@pytest.mark.parametrize("cause,generation,status,expected", [
    # the first pass of a new object: nothing to prune, no rollout begun
    (SPEC, 1, None, set()),
    (SPEC, 1, {}, set()),
    # a spec edited before any status was written: an earlier generation's children may need pruning
    (SPEC, 2, None, PRUNING_ONLY),
    # once a status is written, spec, drift and wake-up passes prune
    (SPEC, 1, STABLE, PRUNING_ONLY),
    (DRIFT, 1, STABLE, PRUNING_ONLY),
    (WAKE, 1, STABLE, PRUNING_ONLY),
    # a child event prunes nothing; it reads the canary only while a rollout is in flight
    (CHILD, 1, STABLE, set()),
    (CHILD, 2, CANARY, {"canary"}),
    (CHILD, 2, {**CANARY, "rollout": {**CANARY["rollout"], "phase": "Held"}}, {"canary"}),
])
def test_pruning_reads_only_where_something_may_be_there(cause, generation, status, expected):
    snap = snapshot(cause, generation, status)
    found = slots(snap)
    # the first pass of a new object creates the Deployment: it reads none
    assert ("deployment" in found) == (not (cause == SPEC and never_reconciled(snap)))
    assert found & PRUNING_ONLY == expected


def test_never_reconciled_is_the_first_generation_without_a_status_write():
    assert never_reconciled(snapshot(SPEC, 1, None))
    assert not never_reconciled(snapshot(SPEC, 1, {"observedGeneration": 1}))
    assert not never_reconciled(snapshot(SPEC, 2, None))


def test_a_canary_step_reads_its_analysis_job():
    snap = snapshot(CHILD, 2, {**CANARY, "rollout": {**CANARY["rollout"], "step": 1}})
    jobs = {r.slot: r.name for r in first_reads(snap, spec_or_reason(SPEC_BODY))}
    assert jobs["analysis_job"] == "ranker-analysis-def-1"


class _RecordingKube:
    """Answers observe's reads (our Deployment exists, nothing else) and records what was asked."""

    def __init__(self) -> None:
        self.gets: list[str] = []

    def get(self, api_version, kind, namespace, name):
        self.gets.append(kind)
        if kind != "Deployment":
            return None
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "annotations": {}},
                "spec": {"replicas": 2}, "status": {}}

    def list(self, *args):
        return []

    def serves(self, group_version):
        return False


@pytest.mark.parametrize("applied_generation,claim_read", [(None, True), (1, False)])
def test_the_first_report_of_a_new_object_reads_no_claim(applied_generation, claim_read):
    """observe builds its snapshot with what this process applied, so the reads that depend on it see it: the pass
    that writes a new object's first status (the generation it applied, no status yet) reads no claim."""
    from peakserve.cluster.observe import Discovery, observe

    snap = snapshot(CHILD, 1, None)
    kube = _RecordingKube()
    observed = observe(kube, snap.body, spec_or_reason(SPEC_BODY), CHILD, Discovery(kube),
                       applied_generation=applied_generation)
    assert observed.applied_generation == applied_generation
    assert ("PersistentVolumeClaim" in kube.gets) == claim_read
