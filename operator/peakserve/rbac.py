"""Every permission the operator uses, and why. The Helm chart's RBAC must match these lists exactly
(tests/linters/test_chart.py), and tests/integration/test_helm.py proves it is enough and no more."""

from __future__ import annotations

# (apiGroup, resource, verbs, why)
OPERATOR_RULES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("peakserve.io", "modeldeployments", ("get", "list", "watch", "patch"),
     "watch ModelDeployments; kopf keeps its bookkeeping in annotations"),
    ("peakserve.io", "modeldeployments/status", ("patch",), "write status conditions"),
    ("", "events", ("create",), "an Event per condition transition"),
    ("", "configmaps", ("create", "patch", "delete"),
     "server-side apply of the Triton config (apply may create); delete the canary's config after the rollout"),
    ("", "services", ("create", "patch"), "server-side apply of the Service (and the track Services of a route)"),
    ("", "persistentvolumeclaims", ("get",), "check that the model's claim exists before a canary starts"),
    ("gateway.networking.k8s.io", "httproutes", ("create", "patch"),
     "server-side apply of the HTTPRoute with a canary's exact weight, where the Gateway API is served"),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete"),
     "apply the stable and canary Deployments, watch them for status; delete the canary after the rollout "
     "and the GPU headroom when it is turned off"),
    ("policy", "poddisruptionbudgets", ("create", "patch"), "server-side apply of the PodDisruptionBudget"),
    ("autoscaling", "horizontalpodautoscalers", ("get", "list", "watch", "create", "patch", "delete"),
     "apply the HPA, watch it for status, delete it when autoscaling is turned off"),
    ("", "pods", ("list", "watch"), "see why pods are not scheduled; read a build pod's result"),
    ("keda.sh", "scaledobjects", ("get", "create", "patch", "delete"),
     "apply the KEDA ScaledObject (engine keda), delete it when the engine or autoscaling changes"),
    ("batch", "jobs", ("get", "list", "watch", "create", "patch"),
     "start the model build and canary analysis Jobs, watch them finish, record their results on them"),
]

# Cluster-wide reads for PromotionReady (decide/promotion.py), made only while a promotion schedule is inside its
# readiness horizon. Granted cluster-wide in both modes (a ClusterRole of its own with watchNamespaces): GPU nodes
# and the pods holding their GPUs are not in any watched namespace. Lists only: no get, no watch, no Secrets.
CAPACITY_RULES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("", "nodes", ("list",), "the allocatable GPUs of the product, for PromotionReady"),
    ("", "pods", ("list",), "the GPUs that pods of all namespaces hold on those nodes, for PromotionReady"),
]

# Only with --leader-elect (HA), in the operator's own namespace: the Lease that elects the active replica
# (runtime/leader.py). update, not patch: a renewal carries the resourceVersion it read, so two replicas
# never both win.
LEADER_ELECTION_RULES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("coordination.k8s.io", "leases", ("get", "create", "update"), "leader election between HA replicas"),
]

# The pre-upgrade hook that upgrades the CRD (Helm never upgrades crds/).
CRD_UPGRADE_RULES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("apiextensions.k8s.io", "customresourcedefinitions", ("get", "patch"),
     "server-side apply of the ModelDeployment CRD, limited to that one name"),
]


def as_policy_rules(rules: list[tuple[str, str, tuple[str, ...], str]]) -> list[dict]:
    return [{"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
            for group, resource, verbs, _ in rules]
