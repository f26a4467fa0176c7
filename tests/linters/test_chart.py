"""The Helm chart (charts/peakserve), checked without a cluster.

`helm lint` and `helm template` are the real helm binary (peakserve_harness.controlplane.tools). Every rendering,
for the default values and for each edge-value file in tests/linters/chart_values/, is validated against the
Kubernetes 1.34 OpenAPI schemas (kubernetes-validate, strict), scanned by checkov, and compared with what
the operator itself declares: its RBAC (peakserve.rbac), its version, its CRDs, the labels and ports of the
Triton pods it creates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import peakserve
from peakserve import rbac
from peakserve_harness.controlplane.binaries import cache_root
from peakserve_harness.controlplane.tools import ensure_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "peakserve"
CHART_README = CHART / "README.md"
VALUES_DIR = Path(__file__).resolve().parent / "chart_values"
VALUES_FILES = {p.stem: p for p in sorted(VALUES_DIR.glob("*.yaml"))}
RENDERINGS = ["default", *VALUES_FILES]

RELEASE = "rel"
NAMESPACE = "peakserve-system"
FULLNAME = "rel-peakserve"
HOOK_NAME = "rel-peakserve-crd-upgrade"
KUBE_VERSION = "1.34.0"
PROMETHEUS_OPERATOR_API = "monitoring.coreos.com/v1"
MODELDEPLOYMENT_CRD = "modeldeployments.peakserve.io"
SCHEMA_ERROR = "values don't meet the specifications of the schema"

# Kinds the chart renders that are custom resources, so not in the Kubernetes schemas. Everything
# else (the CRDs in crds/ included) is validated strictly.
CUSTOM_RESOURCE_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",  # Prometheus Operator
    "PodMonitor": "monitoring.coreos.com/v1",  # Prometheus Operator
}

# checkov runs from its own virtualenv: checkov 3.3.30 pins packaging<24 (pytest 9 needs >=24) and, through
# boto3/botocore, python-dateutil<3 (kubernetes 37 needs >=3), so it cannot share .venv with peakserve.
CHECKOV_VERSION = "3.3.30"

# checkov failures the chart accepts on purpose. Keep in step with "Security scan exceptions" in
# charts/peakserve/README.md (test_readme_documents_every_exception).
CHECKOV_EXCEPTIONS = {
    "CKV_K8S_11": "No CPU limit by default: CFS throttling stalls a latency-sensitive controller; the CPU request "
                  "guarantees its share and resources.limits.cpu can be set.",
    "CKV_K8S_15": "Default tag is the immutable release version (appVersion), so IfNotPresent is exact and works "
                  "with preloaded images; image.digest (or pullPolicy Always) clears it.",
    "CKV_K8S_38": "The operator and the CRD-upgrade hook are API clients: they need their ServiceAccount token.",
    "CKV_K8S_43": "Pulling by digest is supported (image.digest) but a release tag is the default, as the digest "
                  "is only known once the image is published.",
    "CKV2_K8S_6": "The NetworkPolicy is opt-in (networkPolicy.enabled): the API server's port is cluster-specific "
                  "(443, 6443, 8443) and a wrong egress rule cuts the operator off.",
}


# --------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_tools(lambda message: print(message, file=sys.stderr))["helm"]


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def template_args(name: str) -> list[str]:
    return [] if name == "default" else ["-f", str(VALUES_FILES[name])]


def template(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                      "--kube-version", KUBE_VERSION, *args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(helm) -> dict[str, list[dict[str, Any]]]:
    """Every rendering by name: "default" and the stem of each values file."""
    return {name: template(helm, *template_args(name)) for name in RENDERINGS}


def kinds(docs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
    return counts


def find(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def one(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata'] for d in found]}"
    return found[0]


def pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod spec) for every workload the chart renders."""
    out = []
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if isinstance(spec.get("template"), dict) and "spec" in spec["template"]:
            out.append((f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]))
    return out


def operator_container(docs: list[dict]) -> dict:
    deployment = one(docs, "Deployment", FULLNAME)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def rules_of(doc: dict) -> list[dict]:
    return doc.get("rules") or []


def crd_documents() -> list[dict]:
    return [d for p in sorted((CHART / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


# ------------------------------------------------------------------------------------------------ lint

@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint(helm, strict):
    result = run_helm(helm, "lint", str(CHART), *(["--strict"] if strict else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_helm_lint_strict_with_values(helm, name):
    result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(VALUES_FILES[name]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kube_version_constraint(helm):
    result = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.28.0")
    assert result.returncode != 0
    assert "chart requires kubeVersion" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ edge renderings

def test_default_rendering(rendered):
    docs = rendered["default"]
    assert kinds(docs) == {"ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 2, "ConfigMap": 2,
                           "Service": 1, "Deployment": 1, "Job": 1}
    deployment = one(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "without leader election, never two operators at once"
    container = operator_container(docs)
    assert container["image"] == f"ghcr.io/peakserve/peakserve-operator:{peakserve.__version__}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == ["run", "--health-address=0.0.0.0:8080", "--metrics-address=0.0.0.0:9090",
                                 "--drift-interval=300"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    assert one(docs, "ServiceAccount", FULLNAME)
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == peakserve.__version__
    assert not find(docs, "ServiceMonitor") and not find(docs, "PodMonitor") and not find(docs, "NetworkPolicy")


def test_adapter_rules_are_the_file_the_dev_stack_loads(rendered):
    rules = one(rendered["default"], "ConfigMap", f"{FULLNAME}-adapter-rules")["data"]["config.yaml"]
    shipped = (CHART / "files" / "adapter-rules.yaml").read_text()
    assert yaml.safe_load(rules) == yaml.safe_load(shipped)
    served = {r["name"]["as"] for r in yaml.safe_load(rules)["rules"]}
    from peakserve.render.autoscaler import METRICS
    assert served == {name for name, _ in METRICS.values()}, "every HPA metric has an adapter rule"


def test_namespaced(rendered):
    docs = rendered["namespaced"]
    assert not find(docs, "ClusterRole", FULLNAME) and not find(docs, "ClusterRoleBinding", FULLNAME)
    # The only cluster-scoped RBAC left: the CRD-upgrade hook's, and PromotionReady's lists of nodes and pods.
    capacity = f"{FULLNAME}-capacity"
    assert sorted(d["metadata"]["name"] for d in find(docs, "ClusterRole")) == sorted([HOOK_NAME, capacity])
    assert rules_of(one(docs, "ClusterRole", capacity)) == rbac.as_policy_rules(rbac.CAPACITY_RULES)
    assert one(docs, "ClusterRoleBinding", capacity)["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    for ns in ("team-a", "team-b"):
        role = one(docs, "Role", FULLNAME, ns)
        assert rules_of(role) == rbac.as_policy_rules(rbac.OPERATOR_RULES)
        binding = one(docs, "RoleBinding", FULLNAME, ns)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert len(find(docs, "Role")) == 2 and len(find(docs, "RoleBinding")) == 2
    args = operator_container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert not any(a.startswith("--leader-elect") for a in args)
    # The Triton PodMonitor looks only where the operator creates pods.
    pod_monitor = one(docs, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def _leader_election_rbac(docs) -> None:
    """The Lease's Role lives in the release's namespace only, in both modes, and grants exactly the rules."""
    role = one(docs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)
    assert rules_of(role) == rbac.as_policy_rules(rbac.LEADER_ELECTION_RULES)
    binding = one(docs, "RoleBinding", f"{FULLNAME}-leader-election", NAMESPACE)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_ha(rendered):
    docs = rendered["ha"]
    deployment = one(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    args = operator_container(docs)["args"]
    assert args[-3:] == ["--leader-elect", "--leader-election-id=peakserve-ha",
                         f"--leader-election-namespace={NAMESPACE}"]
    _leader_election_rbac(docs)
    role = one(docs, "ClusterRole", FULLNAME)
    assert rules_of(role) == rbac.as_policy_rules(rbac.OPERATOR_RULES + rbac.CAPACITY_RULES)


def test_ha_namespaced(rendered):
    docs = rendered["ha-namespaced"]
    assert one(docs, "Deployment", FULLNAME)["spec"]["replicas"] == 3
    args = operator_container(docs)["args"]
    assert f"--leader-election-id={FULLNAME}" in args and f"--leader-election-namespace={NAMESPACE}" in args
    _leader_election_rbac(docs)
    for ns in ("team-a", "team-b"):
        assert rules_of(one(docs, "Role", FULLNAME, ns)) == rbac.as_policy_rules(rbac.OPERATOR_RULES)


def test_digest(rendered):
    docs = rendered["digest"]
    digest = yaml.safe_load(VALUES_FILES["digest"].read_text())["image"]["digest"]
    expected = f"registry.example.com/peakserve/operator@{digest}"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    images = {name: c["image"] for name, pod in pod_templates(docs) for c in pod["spec"]["containers"]}
    assert set(images) == {f"Deployment/{FULLNAME}", f"Job/{HOOK_NAME}"}
    assert set(images.values()) == {expected}, "the tag is ignored once a digest is set"
    for _, pod in pod_templates(docs):
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_minimal(rendered):
    docs = rendered["minimal"]
    assert kinds(docs) == {"ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "Deployment": 1,
                           "NetworkPolicy": 1}
    assert not any("helm.sh/hook" in (d["metadata"].get("annotations") or {}) for d in docs)
    deployment = one(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "peakserve-operator"
    assert one(docs, "ServiceAccount", "peakserve-operator")
    assert one(docs, "ClusterRoleBinding", FULLNAME)["subjects"] == [
        {"kind": "ServiceAccount", "name": "peakserve-operator", "namespace": NAMESPACE}]
    policy = one(docs, "NetworkPolicy", FULLNAME)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == yaml.safe_load(VALUES_FILES["minimal"].read_text())["networkPolicy"]["metricsFrom"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {(443, "TCP"), (6443, "TCP"), (53, "UDP"), (53, "TCP")}


def test_monitoring(rendered):
    docs = rendered["monitoring"]
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9191, "targetPort": "metrics",
                                         "protocol": "TCP"}]
    service_monitor = one(docs, "ServiceMonitor", FULLNAME)
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert service_monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "20s"}]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_monitor = one(docs, "PodMonitor", f"{FULLNAME}-triton")
    assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "10s"}]
    assert "--metrics-address=0.0.0.0:9191" in operator_container(docs)["args"]


def test_service_selects_the_operator_and_its_metrics_port(rendered):
    docs = rendered["default"]
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    pod = one(docs, "Deployment", FULLNAME)["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in operator_container(docs)["ports"]}


def test_triton_pod_monitor_selects_the_pods_peakserve_creates(rendered, render):
    """The PodMonitor's selector and port must match the Deployment the operator renders for a model."""
    pod_monitor = one(rendered["monitoring"], "PodMonitor")
    triton_pod = render()["Deployment"]["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= triton_pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in triton_pod["spec"]["containers"] for p in c.get("ports", [])}
    assert ports.get(pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]) == 8002


def test_service_monitor_follows_prometheus_operator_api(helm):
    assert not find(template(helm), "ServiceMonitor"), "no ServiceMonitor by default without the API"
    with_api = template(helm, "--api-versions", PROMETHEUS_OPERATOR_API)
    assert one(with_api, "ServiceMonitor", FULLNAME)["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    assert not find(with_api, "PodMonitor"), "the Triton PodMonitor stays opt-in"
    # Nothing to monitor without the Service.
    assert not find(template(helm, "--api-versions", PROMETHEUS_OPERATOR_API, "--set", "metrics.service.enabled=false"),
                    "ServiceMonitor")


# ----------------------------------------------------------------------------------------- bad values

BAD_VALUES = [
    # (id, values as YAML text, field the error must name)
    ("replicas-without-ha", "replicaCount: 2", "/replicaCount"),
    ("too-many-replicas", "replicaCount: 6\nha: {enabled: true}", "/replicaCount"),
    ("short-digest", "image: {digest: 'sha256:abc'}", "/image/digest"),
    ("pull-policy", "image: {pullPolicy: Sometimes}", "/image/pullPolicy"),
    ("repository-with-tag", "image: {repository: 'ghcr.io/peakserve/op:1.0'}", "/image/repository"),
    ("tag-with-space", "image: {tag: 'v 1'}", "/image/tag"),
    ("unknown-top-level-key", "replicas: 2", "'replicas'"),
    ("unknown-nested-key", "metrics: {scrape: true}", "'scrape'"),
    ("namespace-name", "watchNamespaces: [Bad_NS]", "/watchNamespaces/0"),
    ("duplicate-namespace", "watchNamespaces: [team-a, team-a]", "/watchNamespaces"),
    ("privileged-metrics-port", "metrics: {port: 80}", "/metrics/port"),
    ("health-port-range", "health: {port: 70000}", "/health/port"),
    ("drift-interval", "driftInterval: 1", "/driftInterval"),
    ("memory-limit-removed", "resources: {limits: {memory: null, cpu: '1'}}", "/resources/limits"),
    ("memory-request-removed", "resources: {requests: {memory: null}}", "/resources/requests"),
    ("cpu-quantity", "resources: {requests: {cpu: lots}}", "/resources/requests/cpu"),
    ("lease-name", "ha: {enabled: true, leaseName: Bad_Name}", "/ha/leaseName"),
    ("monitor-interval", "metrics: {serviceMonitor: {interval: 30}}", "/metrics/serviceMonitor/interval"),
    ("service-account-name", "serviceAccount: {name: Bad}", "/serviceAccount/name"),
    ("boolean-as-string", "networkPolicy: {enabled: 'yes'}", "/networkPolicy/enabled"),
]


@pytest.mark.parametrize("values, field", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_schema_rejects_bad_values(helm, tmp_path, values, field):
    path = tmp_path / "values.yaml"
    path.write_text(values + "\n")
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(path))
    assert result.returncode != 0, f"accepted {values!r}"
    assert SCHEMA_ERROR in result.stderr, result.stderr
    assert field in result.stderr, f"error does not name {field}:\n{result.stderr}"


@pytest.mark.parametrize("args, field", [
    (["--set", "replicaCount=2"], "/replicaCount"),
    (["--set", "image.digest=sha256:abc"], "/image/digest"),
    (["--set", "resources.limits.memory=null"], "/resources/limits"),
], ids=["replicas", "digest", "memory-limit"])
def test_schema_rejects_bad_set_flags(helm, args, field):
    result = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0 and SCHEMA_ERROR in result.stderr and field in result.stderr, result.stderr


# ---------------------------------------------------------------------------- Kubernetes 1.34 schemas

def test_kubernetes_validate_ships_1_34():
    versions = set(kubernetes_validate.utils.all_versions())
    assert KUBE_VERSION in versions, sorted(versions)


def test_kubernetes_validate_is_strict():
    """Negative control: the validator does reject unknown fields and wrong types."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
               "spec": {"ports": [{"port": 80}]}}
    assert kubernetes_validate.validate(service, KUBE_VERSION, strict=True) == "1.34"
    for broken in ({**service, "bogus": 1}, {**service, "spec": {"ports": [{"port": "eighty"}]}}):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", RENDERINGS)
def test_rendering_validates_against_kubernetes_1_34(helm, name):
    docs = template(helm, "--include-crds", *template_args(name))
    assert len(find(docs, "CustomResourceDefinition")) == 1
    errors, validated = [], 0
    for doc in docs:
        kn = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CUSTOM_RESOURCE_KINDS:
            assert doc["apiVersion"] == CUSTOM_RESOURCE_KINDS[doc["kind"]], kn
            continue
        try:
            assert kubernetes_validate.validate(doc, KUBE_VERSION, strict=True) == "1.34"
            validated += 1
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{kn}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{kn}: {e.message}")
    assert not errors, "\n".join(errors)
    assert validated >= 5


# ------------------------------------------------------------------------------------------- checkov

def checkov_executable() -> Path:
    """PEAKSERVE_CHECKOV, or checkov==CHECKOV_VERSION in its own cached virtualenv (made on first use)."""
    if os.environ.get("PEAKSERVE_CHECKOV"):
        return Path(os.environ["PEAKSERVE_CHECKOV"])
    venv = cache_root() / f"checkov-{CHECKOV_VERSION}"
    exe, stamp = venv / "bin" / "checkov", venv / ".installed"
    if not stamp.exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"[checkov] installing checkov=={CHECKOV_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        f"checkov=={CHECKOV_VERSION}"], check=True, timeout=900)
        stamp.write_text(CHECKOV_VERSION + "\n")
    return exe


def run_checkov(exe: Path, manifest: str, workdir: Path) -> dict:
    workdir.mkdir(parents=True)
    (workdir / "chart.yaml").write_text(manifest)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
           "PYTHONWARNINGS": "ignore", "LOG_LEVEL": "WARNING"}
    env.pop("BC_API_KEY", None)
    result = subprocess.run([str(exe), "-d", str(workdir), "--framework", "kubernetes", "-o", "json",
                             "--skip-download"], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr  # 1: some checks failed
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and report["check_type"] == "kubernetes", report
    return report


@pytest.fixture(scope="module")
def checkov_reports(helm, tmp_path_factory) -> dict[str, dict]:
    """One checkov run per rendering. Separate runs: checkov's graph checks (e.g. CKV2_K8S_6, pods without a
    NetworkPolicy) would otherwise connect one rendering's NetworkPolicy to another rendering's pods."""
    exe = checkov_executable()
    base = tmp_path_factory.mktemp("checkov")
    manifests = {}
    for name in RENDERINGS:
        result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "--kube-version", KUBE_VERSION, *template_args(name))
        assert result.returncode == 0, result.stderr
        manifests[name] = result.stdout
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        reports = pool.map(lambda name: run_checkov(exe, manifests[name], base / name), RENDERINGS)
    return dict(zip(RENDERINGS, reports))


def failed(report: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for check in report["results"]["failed_checks"]:
        out.setdefault(check["check_id"], set()).add(check["resource"])
    return out


@pytest.mark.parametrize("name", RENDERINGS)
def test_checkov_finds_nothing_beyond_the_exceptions(checkov_reports, name):
    report = checkov_reports[name]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50
    unexpected = {cid: res for cid, res in failed(report).items() if cid not in CHECKOV_EXCEPTIONS}
    assert not unexpected, f"new checkov failures (fix the chart, or justify in CHECKOV_EXCEPTIONS): {unexpected}"


def test_checkov_exceptions_are_all_needed(checkov_reports):
    """Every exception is hit by the default values, so none goes stale."""
    assert set(failed(checkov_reports["default"])) == set(CHECKOV_EXCEPTIONS)


def test_checkov_exceptions_lift_with_the_values_that_address_them(checkov_reports):
    assert not {"CKV_K8S_15", "CKV_K8S_43"} & set(failed(checkov_reports["digest"])), "image.digest"
    assert "CKV2_K8S_6" not in failed(checkov_reports["minimal"]), "networkPolicy.enabled"


def test_readme_records_the_checkov_summary(checkov_reports):
    text = CHART_README.read_text()
    assert f"checkov {CHECKOV_VERSION}" in text
    for name, report in checkov_reports.items():
        summary = report["summary"]
        label = "default values" if name == "default" else f"`{name}.yaml`"
        row = f"| {label} | {summary['passed']} | {summary['failed']} | {summary['skipped']} |"
        assert row in text, f"update the checkov summary in {CHART_README}: {row}"


def test_readme_documents_every_exception():
    text = CHART_README.read_text()
    section = text[text.index("## Security scan exceptions"):]
    documented = set(re.findall(r"^\| `(CKV2?_K8S_\d+)` \|", section, re.MULTILINE))
    assert documented == set(CHECKOV_EXCEPTIONS)


# ------------------------------------------------------------------------------ parity with peakserve

def test_chart_crds_are_the_repository_crds():
    top, chart = ROOT / "crds", CHART / "crds"
    assert sorted(p.name for p in chart.iterdir()) == sorted(p.name for p in top.iterdir())
    for path in top.iterdir():
        assert (chart / path.name).read_bytes() == path.read_bytes(), f"charts/peakserve/crds/{path.name} is stale"


def test_versions_agree():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == peakserve.__version__ == project["version"]


def test_operator_rbac_is_rbac_py(rendered):
    assert rules_of(one(rendered["default"], "ClusterRole", FULLNAME)) == \
        rbac.as_policy_rules(rbac.OPERATOR_RULES + rbac.CAPACITY_RULES)
    binding = one(rendered["default"], "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert rules_of(one(rendered["ha"], "ClusterRole", FULLNAME)) == \
        rbac.as_policy_rules(rbac.OPERATOR_RULES + rbac.CAPACITY_RULES)


@pytest.mark.parametrize("name", [n for n in RENDERINGS if n != "minimal"])
def test_crd_upgrade_hook(rendered, name):
    docs = rendered[name]
    role = one(docs, "ClusterRole", HOOK_NAME)
    expected = [{**rule, "resourceNames": [MODELDEPLOYMENT_CRD]} for rule in rbac.as_policy_rules(rbac.CRD_UPGRADE_RULES)]
    assert sorted(rules_of(role), key=json.dumps) == sorted(expected, key=json.dumps)
    assert MODELDEPLOYMENT_CRD in {c["metadata"]["name"] for c in crd_documents()}
    binding = one(docs, "ClusterRoleBinding", HOOK_NAME)
    assert binding["roleRef"]["name"] == HOOK_NAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": HOOK_NAME, "namespace": NAMESPACE}]
    job = one(docs, "Job", HOOK_NAME)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == HOOK_NAME and pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["crds", "apply"]
    assert container["image"] == operator_container(docs)["image"]
    weights = {}
    for doc in (one(docs, "ServiceAccount", HOOK_NAME), role, binding, job):
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        weights[doc["kind"]] = int(annotations["helm.sh/hook-weight"])
    assert weights["ServiceAccount"] < weights["ClusterRoleBinding"] < weights["Job"]
    assert weights["ClusterRole"] < weights["ClusterRoleBinding"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_no_rbac_wildcards(rendered, name):
    for doc in rendered[name]:
        for rule in rules_of(doc) if doc["kind"] in ("Role", "ClusterRole") else []:
            for key, values in rule.items():
                assert "*" not in values and not any("*" in v for v in values), \
                    f"{doc['kind']}/{doc['metadata']['name']} {key}: {values}"


def test_grafana_dashboard(rendered):
    dashboard = json.loads((CHART / "dashboards" / "peakserve.json").read_text())

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    expressions = " ".join(t.get("expr", "") for p in panels(dashboard["panels"]) for t in p.get("targets", []))
    for metric in ("peakserve_modeldeployments", "peakserve_reconcile_errors_total",
                   "nv_inference_queue_duration_us", "nv_inference_request_success",
                   "kube_horizontalpodautoscaler_spec_min_replicas",
                   "kube_horizontalpodautoscaler_spec_max_replicas"):
        assert metric in expressions, metric
    configmap = one(rendered["default"], "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["peakserve.json"]) == dashboard


# ------------------------------------------------------------------------- pod security and resources

@pytest.mark.parametrize("name", RENDERINGS)
def test_restricted_security_context_and_resources(rendered, name):
    workloads = pod_templates(rendered[name])
    assert workloads
    for workload, pod in workloads:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), workload
        containers = spec["containers"] + spec.get("initContainers", []) + spec.get("ephemeralContainers", [])
        for container in containers:
            where = f"{workload} container {container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not sc.get("privileged"), where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where
