"""runtime/bodies.py: the latest ModelDeployment body a pass starts from instead of a GET."""

from peakserve.runtime.bodies import Deployments, LatestBodies


def body(version: str, ready: str = "False") -> dict:
    return {"metadata": {"name": "m", "resourceVersion": version, "managedFields": [{"manager": "kubectl"}]},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def test_a_late_watch_event_does_not_replace_the_newer_body_our_status_write_returned():
    bodies = LatestBodies()
    bodies.put("ns/m", body("120", ready="True"))  # our status write's answer
    bodies.put("ns/m", body("110"))                 # the watch, still catching up
    assert bodies.get("ns/m")["status"]["conditions"][0]["status"] == "True"
    bodies.put("ns/m", body("130"))                 # a newer change by anyone is taken
    assert bodies.get("ns/m")["metadata"]["resourceVersion"] == "130"


def test_kept_without_managed_fields_and_handed_out_as_a_copy():
    bodies = LatestBodies()
    bodies.put("ns/m", body("1"))
    first = bodies.get("ns/m")
    assert "managedFields" not in first["metadata"]
    first["status"]["conditions"].clear()  # a pass may change what it holds
    assert bodies.get("ns/m")["status"]["conditions"]


def test_forgotten_and_unknown_keys_are_none():
    bodies = LatestBodies()
    bodies.put("ns/m", body("1"))
    bodies.forget("ns/m")
    assert bodies.get("ns/m") is None and bodies.get("ns/other") is None and len(bodies) == 0


def test_a_version_that_is_not_a_number_is_taken_as_newer():
    bodies = LatestBodies()
    bodies.put("ns/m", body("9"))
    bodies.put("ns/m", body("opaque-1"))
    assert bodies.get("ns/m")["metadata"]["resourceVersion"] == "opaque-1"


def deployment(version: str, ready: int = 0) -> dict:
    return {"kind": "Deployment",
            "metadata": {"name": "ranker", "namespace": "shop", "resourceVersion": version,
                         "managedFields": [{"manager": "peakserve", "operation": "Apply",
                                            "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                                           {"manager": "kube-controller-manager", "operation": "Update",
                                            "subresource": "status", "fieldsV1": {"f:status": {}}}]},
            "spec": {"replicas": 2}, "status": {"readyReplicas": ready}}


def test_deployments_keep_who_owns_the_replicas_and_never_go_back():
    held = Deployments()
    held.saw(deployment("200", ready=1))  # what our own apply returned
    held.saw(deployment("190"))           # the watch, behind it
    got = held.get("shop", "ranker")
    assert got["status"]["readyReplicas"] == 1
    # owns_replicas reads peakserve's entry; no pass reads the others
    assert got["metadata"]["managedFields"] == [{"manager": "peakserve", "operation": "Apply",
                                                 "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    held.gone("shop", "ranker")
    assert held.get("shop", "ranker") is None and len(held) == 0
