"""The rollout's arithmetic and its rendered objects: pure functions, no cluster."""

from __future__ import annotations

import pytest

from peakserve.api.spec import ModelDeploymentSpec
from peakserve.decide.rollout import canary_replicas, promoted, share, template_hash_of
from peakserve.render import render_canary_children, render_children
from peakserve.render.owner import Owner
from peakserve.render.route import render_route

OWNER = Owner("ranker", "shop", "uid-1")
SPEC = {
    "model": {"name": "ranker", "uri": "pvc://store/ranker/1",
              "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
              "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
    "replicas": 4,
}


def spec(**serving) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({**SPEC, "serving": serving})


@pytest.mark.parametrize("weight, stable, pods, percent", [
    (None, 4, 1, 20),   # no steps: one surge pod
    (10, 2, 1, 33),     # the split is by pods: 10% of two pods rounds up to one, a third of the traffic
    (10, 9, 1, 10),
    (25, 9, 3, 25),
    (50, 4, 4, 50),
    (50, 1, 1, 50),
    (90, 1, 9, 90),
])
def test_canary_pods_follow_the_weight_rounded_up(weight, stable, pods, percent):
    assert canary_replicas(weight, stable) == pods
    assert share(pods, stable) == percent


def test_canary_share_comes_from_the_stable_side_live_replicas():
    # With an HPA the stable side's replicas are the HPA's: an HPA at 12 gives a bigger canary than at 3,
    # and the canary never feeds back into the stable count (the HPA targets the stable Deployment only).
    assert canary_replicas(10, 12) == 2 and canary_replicas(10, 3) == 1


def test_canary_runs_the_new_template_beside_stable_with_its_own_selector_and_config():
    new = spec(image="nvcr.io/nvidia/tritonserver:25.11-py3")
    config, canary = render_canary_children(OWNER, new, None, 2)
    stable = next(c for c in render_children(OWNER, new) if c["kind"] == "Deployment")
    assert canary["metadata"]["name"] == "ranker-canary" and canary["spec"]["replicas"] == 2
    assert config["metadata"]["name"] == "ranker-canary-triton-config"
    # both sides carry the Service's selector label; each Deployment selects only its own track
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert labels["peakserve.io/model-deployment"] == "ranker" and labels["peakserve.io/track"] == "canary"
    assert canary["spec"]["selector"]["matchLabels"]["peakserve.io/track"] == "canary"
    assert stable["spec"]["template"]["metadata"]["labels"]["peakserve.io/track"] == "stable"
    volumes = {v["name"]: v for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert volumes["triton-config"]["configMap"]["name"] == "ranker-canary-triton-config"
    # one identity for the template on both sides, whatever the track
    assert template_hash_of(canary) == template_hash_of(stable)
    old = next(c for c in render_children(OWNER, spec()) if c["kind"] == "Deployment")
    assert template_hash_of(old) != template_hash_of(stable)


def test_replica_count_is_not_part_of_the_template():
    one = next(c for c in render_children(OWNER, spec()) if c["kind"] == "Deployment")
    more = next(c for c in render_children(OWNER, ModelDeploymentSpec.model_validate({**SPEC, "replicas": 9}))
                if c["kind"] == "Deployment")
    assert template_hash_of(one) == template_hash_of(more)


def test_stable_side_replaces_one_pod_at_a_time_by_default_covered_by_the_canary():
    stable = next(c for c in render_children(OWNER, spec()) if c["kind"] == "Deployment")
    assert stable["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    surge = next(c for c in render_children(OWNER, spec(rollout={"maxSurge": 1})) if c["kind"] == "Deployment")
    assert surge["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_http_route_carries_the_exact_weight():
    stable_svc, canary_svc, route = render_route(OWNER, spec(rollout={"routeParents": [{"name": "shop-gw"}]}), 10)
    assert stable_svc["spec"]["selector"] == {"peakserve.io/model-deployment": "ranker", "peakserve.io/track": "stable"}
    assert canary_svc["spec"]["selector"]["peakserve.io/track"] == "canary"
    assert route["spec"]["parentRefs"] == [{"name": "shop-gw"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "ranker-stable", "port": 8000, "weight": 90}, {"name": "ranker-canary", "port": 8000, "weight": 10}]
    *_, only_stable = render_route(OWNER, spec(), 0)
    assert [b["name"] for b in only_stable["spec"]["rules"][0]["backendRefs"]] == ["ranker-stable"]


def _deployment(replicas, updated, available, generation=3, observed=3):
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                       "availableReplicas": available}}


def test_promotion_is_done_only_when_every_stable_pod_runs_the_template_and_is_available():
    assert promoted(_deployment(3, 3, 3))
    assert not promoted(_deployment(3, 2, 3))
    assert not promoted(_deployment(3, 3, 2))
    assert not promoted(_deployment(3, 3, 3, generation=4, observed=3))  # the controller has not seen it yet


def test_the_client_knows_every_kind_peakserve_renders():
    from peakserve.cluster.client import PLURALS
    from peakserve.render import CHILD_KINDS

    assert set(CHILD_KINDS) | {"Job", "PersistentVolumeClaim"} <= set(PLURALS)
