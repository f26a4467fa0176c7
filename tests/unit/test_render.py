"""Targeted rendering behaviour: each test pins one property of the manifests that matters on a GPU cluster."""

from __future__ import annotations

import pytest
import yaml

from peakserve import api
from peakserve.api.spec import SCALE_DOWN, SCALE_UP, ScalingRules
from peakserve.render import CHILD_KINDS
from peakserve.render.names import ANNOTATION_CONFIG_HASH
from peakserve.render.triton_config import config_hash, render_config_pbtxt
from peakserve.api.validation import parse_spec
from peakserve.yamlio import dump_all


def pod_spec(children):
    return children["Deployment"]["spec"]["template"]["spec"]


def triton(children):
    (container,) = [c for c in pod_spec(children)["containers"] if c["name"] == "triton"]
    return container


def config(children) -> str:
    return children["ConfigMap"]["data"]["config.pbtxt"]


def hpa_rules(rules: ScalingRules, select: str) -> dict:
    """The HPA behavior block that the given (fully set) rules mean."""
    return {"stabilizationWindowSeconds": rules.stabilization_window_seconds, "selectPolicy": select,
            "policies": [{"type": "Pods", "value": rules.max_pods, "periodSeconds": rules.period_seconds},
                         {"type": "Percent", "value": rules.max_percent, "periodSeconds": rules.period_seconds}]}


# --- children and ownership -------------------------------------------------------------------


def test_children_are_rendered_in_apply_order(render):
    assert list(render()) == ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]
    kinds = list(render({"autoscaling": {"maxReplicas": 4}}))
    assert kinds == [k for k in CHILD_KINDS if k in kinds] and "HorizontalPodAutoscaler" in kinds


@pytest.mark.parametrize("patch", [{}, {"autoscaling": {"maxReplicas": 4}}], ids=["fixed", "autoscaled"])
def test_every_child_is_controlled_by_the_model_deployment(render, patch):
    for kind, child in render(patch).items():
        meta = child["metadata"]
        assert meta["namespace"] == "default", kind
        (ref,) = meta["ownerReferences"]
        assert ref["controller"] is True, kind
        assert ref["blockOwnerDeletion"] is True, kind
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == (api.API_VERSION, api.KIND, "ranker"), kind
        assert ref["uid"], kind


def test_selectors_match_the_pod_labels(render):
    children = render()
    pod_labels = children["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = children["Deployment"]["spec"]["selector"]["matchLabels"]
    for name, sel in [("Deployment", selector),
                      ("Service", children["Service"]["spec"]["selector"]),
                      ("PodDisruptionBudget", children["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])]:
        assert sel and sel.items() <= pod_labels.items(), name


def test_pdb_lets_drains_take_one_pod_at_a_time(render):
    pdb = render()["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb


# --- rollout, replicas ------------------------------------------------------------------------


def test_default_rollout_never_surges_a_gpu_pod(render):
    strategy = render()["Deployment"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_rollout_overrides_are_passed_through(render):
    rolling = render({"serving": {"rollout": {"maxSurge": "25%", "maxUnavailable": 0}}})["Deployment"]["spec"][
        "strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": "25%", "maxUnavailable": 0}


@pytest.mark.parametrize("replicas", [0, 1, 3])
def test_fixed_replicas_are_written(render, replicas):
    assert render({"replicas": replicas})["Deployment"]["spec"]["replicas"] == replicas


def test_autoscaled_deployment_leaves_replicas_to_the_hpa(render):
    children = render({"replicas": 7, "autoscaling": {"minReplicas": 2, "maxReplicas": 10}})
    assert "replicas" not in children["Deployment"]["spec"]
    assert children["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 2
    assert children["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 10


def test_progress_deadline_outlasts_model_loading(render):
    spec = render({"serving": {"startupTimeoutSeconds": 1800}})["Deployment"]["spec"]
    assert spec["progressDeadlineSeconds"] > 1800


# --- GPUs and placement -----------------------------------------------------------------------


@pytest.mark.parametrize("resource,gpus", [("nvidia.com/gpu", 1), ("nvidia.com/gpu", 4),
                                           ("nvidia.com/mig-1g.10gb", 2)])
def test_gpu_request_equals_limit(render, resource, gpus):
    resources = triton(render({"serving": {"gpus": gpus, "gpuResource": resource}}))["resources"]
    assert resources["requests"][resource] == gpus
    assert resources["limits"][resource] == gpus


def test_cpu_and_memory_resources_are_kept_next_to_gpus(render):
    resources = triton(render({"serving": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                                                         "limits": {"memory": "16Gi"}}}}))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1}
    assert resources["limits"] == {"memory": "16Gi", "nvidia.com/gpu": 1}


def test_gpu_product_becomes_a_node_selector(render):
    pod = pod_spec(render({"serving": {"gpuProduct": "NVIDIA-A10", "nodeSelector": {"pool": "inference"}}}))
    assert pod["nodeSelector"] == {"pool": "inference", "nvidia.com/gpu.product": "NVIDIA-A10"}


def test_no_gpu_product_no_product_selector(render):
    assert "nvidia.com/gpu.product" not in pod_spec(render())["nodeSelector"]


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CPU_ONLY = {"serving": {"gpus": 0, "instanceGroups": [{"kind": "CPU"}]}}


def test_gpu_pods_tolerate_the_gpu_taint(render):
    tolerations = pod_spec(render({"serving": {"tolerations": [{"key": "team", "value": "ml",
                                                                "effect": "NoSchedule"}]}}))["tolerations"]
    assert GPU_TOLERATION in tolerations
    assert {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in tolerations


def test_cpu_only_pods_get_no_gpu_resources_or_toleration(render):
    children = render(CPU_ONLY)
    assert GPU_TOLERATION not in pod_spec(children)["tolerations"]
    resources = triton(children)["resources"]
    assert not any(k.startswith("nvidia.com/") for k in (*resources["requests"], *resources["limits"]))
    assert "--allow-gpu-metrics=false" in triton(children)["args"]


# --- probes, ports, security ------------------------------------------------------------------


def test_probes_use_triton_health_endpoints(render):
    container = triton(render())
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}


@pytest.mark.parametrize("timeout", [30, 900, 905, 7200])
def test_startup_probe_covers_the_startup_timeout(render, timeout):
    probe = triton(render({"serving": {"startupTimeoutSeconds": timeout}}))["startupProbe"]
    window = probe["failureThreshold"] * probe["periodSeconds"]
    # Long enough for the configured load time, and not a whole period longer.
    assert timeout <= window < timeout + probe["periodSeconds"]


def test_ports(render):
    children = render()
    ports = {p["name"]: p["containerPort"] for p in triton(children)["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in children["Service"]["spec"]["ports"]}
    assert service_ports == {"http": (8000, "http"), "grpc": (8001, "grpc"), "metrics": (8002, "metrics")}
    args = triton(children)["args"]
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)


def test_probe_ports_name_a_container_port(render):
    container = triton(render())
    names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in names, probe


@pytest.mark.parametrize("uri", ["pvc://model-store/ranker/1", "s3://bucket/models/ranker", "/mnt/models/ranker"])
def test_every_container_is_restricted(render, uri):
    pod = pod_spec(render({"model": {"uri": uri}}))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]


@pytest.mark.parametrize("uri", ["pvc://model-store/ranker/1", "s3://bucket/models/ranker", "/mnt/models/ranker"])
def test_every_mount_names_a_volume(render, uri):
    pod = pod_spec(render({"model": {"uri": uri}}))
    volumes = {v["name"] for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"]), "duplicate volume names"
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, (container["name"], mount["name"])


# --- model source -----------------------------------------------------------------------------


def test_pvc_uri_mounts_the_claim_subpath_read_only(render):
    children = render({"model": {"uri": "pvc://model-store/ranker/1", "version": 3}})
    pod = pod_spec(children)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model-source"]
    assert volume["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    (mount,) = [m for m in triton(children)["volumeMounts"] if m["name"] == "model-source"]
    # Triton finds version 3 of model "ranker" at <repository>/ranker/3.
    assert mount == {"name": "model-source", "mountPath": "/models/ranker/3", "readOnly": True, "subPath": "ranker/1"}
    assert "initContainers" not in pod


def test_s3_uri_fetches_into_the_model_repository(render):
    pod = pod_spec(render({"model": {"uri": "s3://bucket/models/x", "credentialsSecret": "s3-creds", "version": 2}}))
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model"
    assert fetch["command"][-2:] == ["s3://bucket/models/x", "/models/ranker/2"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert {"name": "models", "mountPath": "/models"} in fetch["volumeMounts"]
    assert not any(v["name"] == "model-source" for v in pod["volumes"])


def test_s3_without_credentials_has_no_env_from(render):
    (fetch,) = pod_spec(render({"model": {"uri": "s3://public-bucket/x"}}))["initContainers"]
    assert "envFrom" not in fetch


def test_local_path_is_a_host_path_directory(render):
    pod = pod_spec(render({"model": {"uri": "/mnt/models/x"}}))
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model-source"]
    assert volume["hostPath"] == {"path": "/mnt/models/x", "type": "Directory"}


def test_config_is_mounted_next_to_the_version_directory(render):
    children = render()
    (mount,) = [m for m in triton(children)["volumeMounts"] if m["name"] == "triton-config"]
    assert mount["mountPath"] == "/models/ranker/config.pbtxt" and mount["subPath"] == "config.pbtxt"
    (volume,) = [v for v in pod_spec(children)["volumes"] if v["name"] == "triton-config"]
    assert volume["configMap"]["name"] == children["ConfigMap"]["metadata"]["name"]
    assert "--model-repository=/models" in triton(children)["args"]


def test_extra_args_follow_the_managed_flags(render):
    args = triton(render({"serving": {"extraArgs": ["--log-verbose=1"]}}))["args"]
    assert args[-1] == "--log-verbose=1"
    assert "--strict-readiness=true" in args and "--model-control-mode=none" in args


# --- autoscaler -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric,target,name,value", [
    # Queue time per request is in microseconds, as is the spec's target.
    ("queueTime", 20000, "triton_queue_time_per_request_us", "20000"),
    ("pendingRequests", 8, "nv_inference_pending_request_count", "8"),
    # nv_gpu_utilization is a 0..1 gauge: 80 percent is 0.8, a quantity of 800m.
    ("gpuUtilization", 80, "nv_gpu_utilization", "800m"),
    ("gpuUtilization", 5, "nv_gpu_utilization", "50m"),
])
def test_hpa_metric_and_unit(render, metric, target, name, value):
    hpa = render({"autoscaling": {"maxReplicas": 4, "metric": metric, "target": target}})[
        "HorizontalPodAutoscaler"]["spec"]
    (m,) = hpa["metrics"]
    assert m["type"] == "Pods"
    assert m["pods"]["metric"] == {"name": name}
    assert m["pods"]["target"] == {"type": "AverageValue", "averageValue": value}


@pytest.mark.parametrize("autoscaling,name,value", [
    # targetUtilization (70%) of the capacity, per pod, as a quantity in milli-units
    ({"metric": "requestRate", "capacity": {"requestsPerSecond": 70}}, "triton_request_rate", "49000m"),
    ({"metric": "requestRate", "capacity": {"requestsPerSecond": 0.5}, "targetUtilization": 50},
     "triton_request_rate", "250m"),
    # in flight from the rate by Little's law: 70 requests/s x 100 ms = 7, 70% of it 4.9
    ({"metric": "concurrency", "capacity": {"requestsPerSecond": 70}}, "triton_requests_in_flight", "4900m"),
    ({"metric": "concurrency", "capacity": {"concurrency": 8}}, "triton_requests_in_flight", "5600m"),
    # no capacity known offline: queue time at its default target
    ({"metric": "requestRate"}, "triton_queue_time_per_request_us", "50000"),
])
def test_hpa_capacity_metrics_in_milli_units(render, autoscaling, name, value):
    hpa = render({"autoscaling": {"maxReplicas": 4, "targetUtilization": 70, **autoscaling}})[
        "HorizontalPodAutoscaler"]["spec"]
    (m,) = hpa["metrics"]
    assert m["pods"]["metric"] == {"name": name}
    assert m["pods"]["target"] == {"type": "AverageValue", "averageValue": value}


def test_hpa_takes_the_metric_and_target_in_force_from_the_plan(spec_dict):
    from peakserve.render import ScalingPlan, render_children
    from peakserve.render.owner import Owner

    spec = parse_spec(spec_dict({"autoscaling": {"maxReplicas": 4}}))
    plan = ScalingPlan(floor=3, metric="requestRate", target=42.1234)
    (hpa,) = [c for c in render_children(Owner("ranker", "default", "u"), spec, scaling=plan)
              if c["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "42123m"


@pytest.mark.parametrize("metric,target,query,threshold", [
    ("requestRate", 49.0, 'sum(rate(nv_inference_request_success{SEL}[30s]))', "49"),
    ("concurrency", 4.9, 'sum(rate(nv_inference_request_duration_us{SEL}[30s])) / 1e6', "4.9"),
])
def test_keda_capacity_triggers_are_deployment_sums_averaged_by_keda(spec_dict, metric, target, query, threshold):
    from peakserve.render.keda import render_scaled_object
    from peakserve.render.owner import Owner

    schedule = {"name": "promo", "start": "2026-11-11T00:00:00", "end": "2026-11-11T02:00:00", "minReplicas": 8}
    spec = parse_spec(spec_dict({"autoscaling": {"maxReplicas": 10, "schedules": [schedule]}}))
    obj = render_scaled_object(Owner("ranker", "shop", "u"), spec.autoscaling, 600, metric, target, 4)
    prom, cron = obj["spec"]["triggers"]
    sel = 'namespace="shop",pod=~"ranker-[a-z0-9]+-[a-z0-9]+"'
    # AverageValue: KEDA divides the Deployment-wide sum by the replicas, so the threshold is per pod
    assert prom == {"type": "prometheus", "metricType": "AverageValue", "metadata": {
        "serverAddress": spec.autoscaling.prometheus_address, "query": query.replace("SEL", sel),
        "threshold": threshold}}
    assert cron["type"] == "cron" and cron["metadata"]["desiredReplicas"] == "8"   # unchanged
    assert obj["spec"]["minReplicaCount"] == 4   # the predictive floor


def test_hpa_targets_the_deployment(render):
    children = render({"autoscaling": {"maxReplicas": 4}})
    ref = children["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": children["Deployment"]["metadata"]["name"]}


def test_hpa_default_behavior(render):
    behavior = render({"autoscaling": {"maxReplicas": 4}})["HorizontalPodAutoscaler"]["spec"]["behavior"]
    assert behavior == {"scaleUp": hpa_rules(SCALE_UP, "Max"), "scaleDown": hpa_rules(SCALE_DOWN, "Min")}


def test_defaults_scale_up_fast_and_down_slowly():
    assert SCALE_UP.stabilization_window_seconds < SCALE_DOWN.stabilization_window_seconds
    assert SCALE_UP.max_pods > SCALE_DOWN.max_pods and SCALE_UP.max_percent > SCALE_DOWN.max_percent


def test_hpa_partial_overrides_merge_with_defaults(render):
    behavior = render({"autoscaling": {"maxReplicas": 20,
                                       "scaleUp": {"maxPods": 10},
                                       "scaleDown": {"stabilizationWindowSeconds": 600, "periodSeconds": 120}}})[
        "HorizontalPodAutoscaler"]["spec"]["behavior"]
    up = SCALE_UP.model_copy(update={"max_pods": 10})
    down = SCALE_DOWN.model_copy(update={"stabilization_window_seconds": 600, "period_seconds": 120})
    assert behavior["scaleUp"] == hpa_rules(up, "Max")
    assert behavior["scaleDown"] == hpa_rules(down, "Min")
    # The overridden value is used, and the untouched ones still come from the defaults.
    assert behavior["scaleUp"]["policies"][0]["value"] == 10
    assert behavior["scaleUp"]["policies"][1]["value"] == SCALE_UP.max_percent
    assert behavior["scaleDown"]["policies"][0] == {"type": "Pods", "value": SCALE_DOWN.max_pods, "periodSeconds": 120}


def test_with_defaults_does_not_change_the_defaults():
    ScalingRules(max_pods=99).with_defaults(SCALE_UP)
    assert SCALE_UP.max_pods == 4


# --- Triton model configuration ---------------------------------------------------------------


@pytest.mark.parametrize("fmt,line", [("onnx", 'platform: "onnxruntime_onnx"'),
                                      ("torchscript", 'platform: "pytorch_libtorch"'),
                                      ("pytorch", 'backend: "python"')])
def test_platform_per_format(render, fmt, line):
    lines = config(render({"model": {"format": fmt}})).splitlines()
    assert line in lines
    assert sum(1 for l in lines if l.startswith(("platform:", "backend:"))) == 1


def test_config_names_the_model_and_pins_its_version(render):
    text = config(render({"model": {"name": "ranker", "version": 7, "maxBatchSize": 32}}))
    assert text.splitlines()[0] == 'name: "ranker"'
    assert "max_batch_size: 32" in text
    assert "version_policy: { specific: { versions: [ 7 ] } }" in text


def test_config_declares_every_tensor(render):
    text = config(render({"model": {
        "inputs": [{"name": "ids", "dataType": "INT64", "dims": [-1, 26]}, {"name": "dense", "dataType": "FP16",
                                                                           "dims": [13]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]}}))
    assert '    name: "ids"\n    data_type: TYPE_INT64\n    dims: [ -1, 26 ]' in text
    assert '    name: "dense"\n    data_type: TYPE_FP16\n    dims: [ 13 ]' in text
    inputs, outputs = text.split("input [")[1].split("output [")
    assert '"score"' in outputs and '"score"' not in inputs


def test_config_instance_groups(render):
    text = config(render({"serving": {"instanceGroups": [{"kind": "GPU", "count": 2}, {"kind": "CPU", "count": 1}]}}))
    assert "instance_group [\n  { kind: KIND_GPU count: 2 },\n  { kind: KIND_CPU count: 1 }\n]" in text


@pytest.mark.parametrize("serving", [{}, {"instanceGroups": [{"count": 2}]}], ids=["default-list", "default-kind"])
def test_defaulted_instance_group_kind_is_a_triton_kind(render, serving):
    text = config(render({"serving": serving}))
    assert "KIND_GPU" in text and "InstanceKind" not in text


def test_dynamic_batching_rendered_when_enabled(render):
    text = config(render({"model": {"maxBatchSize": 256},
                          "serving": {"dynamicBatching": {"preferredBatchSizes": [64, 128],
                                                          "maxQueueDelayMicroseconds": 200}}}))
    assert "dynamic_batching { preferred_batch_size: [ 64, 128 ] max_queue_delay_microseconds: 200 }" in text


def test_dynamic_batching_without_preferred_sizes(render):
    text = config(render())
    assert "dynamic_batching { max_queue_delay_microseconds: 100 }" in text


@pytest.mark.parametrize("patch", [
    {"serving": {"dynamicBatching": {"enabled": False}}},
    # Triton rejects a dynamic batcher on a model that does not batch.
    {"model": {"maxBatchSize": 0}},
], ids=["disabled", "no-batching"])
def test_no_dynamic_batching(render, patch):
    assert "dynamic_batching" not in config(render(patch))


def test_config_hash_annotation_tracks_the_config(render):
    children = render()
    annotations = children["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ANNOTATION_CONFIG_HASH] == config_hash(config(children))


def test_config_change_rolls_the_pods(render):
    def pod_hash(patch):
        return render(patch)["Deployment"]["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]

    base = pod_hash({})
    # The ConfigMap is mounted by subPath, which never refreshes: a changed config must change the pod template.
    assert pod_hash({"serving": {"dynamicBatching": {"maxQueueDelayMicroseconds": 500}}}) != base
    assert pod_hash({"model": {"maxBatchSize": 32}}) != base
    # Changes that leave config.pbtxt alone do not restart pods.
    assert pod_hash({"replicas": 5}) == base
    assert pod_hash({"serving": {"image": "nvcr.io/nvidia/tritonserver:25.09-py3"}}) == base


def test_config_pbtxt_is_a_pure_function_of_the_spec(spec_dict):
    a = render_config_pbtxt(parse_spec(spec_dict()))
    b = render_config_pbtxt(parse_spec(spec_dict()))
    assert a == b and a.endswith("\n")


# --- output hygiene ---------------------------------------------------------------------------


def test_rendered_children_share_no_objects(render):
    patch = {"model": {"uri": "s3://bucket/x"}}
    children = render(patch)
    assert "&id" not in dump_all(children.values())
    # Two renders must not share a mutable object, or editing one manifest would change the next.
    again = render(patch)
    assert triton(children)["securityContext"] is not triton(again)["securityContext"]
    assert pod_spec(children)["tolerations"][0] is not pod_spec(again)["tolerations"][0]


def test_rendered_yaml_round_trips(render):
    children = list(render({"autoscaling": {"maxReplicas": 3}}).values())
    assert list(yaml.safe_load_all(dump_all(children))) == children

