"""KWOK pod lifecycle for the local control plane: which stage applies to which pod.

| stage          | pods it applies to                                   | what it does                          |
|----------------|------------------------------------------------------|---------------------------------------|
| pod-ready      | new pods on *plain* nodes (not probed)               | Running and Ready at once (KWOK fast) |
| probed-running | new pods on *probed* nodes (``nodes.PROBED_LABEL``)  | Running, loopback pod IP, NOT Ready   |
| pod-complete   | Running Job pods, except model-build and             | Succeeded at once                     |
|                | rollout-analysis pods                                |                                       |
| pod-delete     | pods being deleted                                   | gone at once                          |

The first two select on ``.spec.nodeName`` and ``.status.podIP`` (only a pod without an IP is new), so
exactly one of them plays once per pod. On a probed node nothing but the harness makes a pod Ready:
its pod agent (:mod:`peakserve_harness.pods.probed_pods`) plays the kubelet's readiness probe against a
real tritonserver bound to the pod IP.

Model-build and rollout-analysis pods are not completed by KWOK: the local job runner
(:mod:`peakserve_harness.pods.job_pods`) runs their command on the host and then writes the pod's end
state and termination message itself, exactly as the container would in a real cluster.

Pod IPs: KWOK v0.7.0's ``PodIPWith`` takes an address from a pool for the node's ``spec.podCIDR``
(else ``--cidr``). The pool starts at the address *as written* in the CIDR and counts up, so the
canonical ``127.80.0.0/24`` hands out ``127.80.0.0`` first; the probed stage draws again when it
gets a ``.0`` address (that one stays used in KWOK's pool and is never handed out).
Addresses of deleted pods are handed out again.
"""

from __future__ import annotations

import json

from peakserve.render.names import ANALYSIS_COMPONENT, BUILD_COMPONENT

from .nodes import DEFAULT_NODES, GpuNode, probed_node_names

# Job pods that a local runner finishes instead of KWOK.
RUNNER_COMPONENTS = (BUILD_COMPONENT, ANALYSIS_COMPONENT)

_POD_IP = ("PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid \"\" ) "
           "( or .metadata.name \"\" ) ( or .metadata.namespace \"\" )")

_INIT_CONTAINER_STATUSES = """\
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state: {terminated: {exitCode: 0, finishedAt: {{ $now | Quote }}, reason: Completed, startedAt: {{ $now | Quote }}}}
      {{ end }}
"""


def _node_expression(operator: str, names: list[str]) -> str:
    # NotIn an empty list would match every pod; a name no node has keeps the expression valid.
    values = json.dumps(names or ["-none-"])
    return f"    - {{key: '.spec.nodeName', operator: '{operator}', values: {values}}}\n"


def _new_pod_stage(name: str, operator: str, probed: list[str]) -> str:
    """A Stage's head that selects live pods without an IP yet, on the probed nodes (In) or the others (NotIn)."""
    return f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: 'DoesNotExist'}}
    - {{key: '.status.podIP', operator: 'DoesNotExist'}}
""" + _node_expression(operator, probed)


def pod_ready(probed: list[str]) -> str:
    """KWOK's own fast stage (Ready at once), for pods on every node that is not probed."""
    return _new_pod_stage("pod-ready", "NotIn", probed) + """\
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Ready}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: ContainersReady}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
""" + _INIT_CONTAINER_STATUSES + """\
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ %s | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
""" % _POD_IP


def probed_running(probed: list[str]) -> str:
    """Pods on probed nodes: Running with a loopback pod IP, containers started but not ready.

    The pod agent patches Ready (and the container statuses) from what the real server does.
    """
    return _new_pod_stage("probed-running", "In", probed) + """\
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $ip := %s }}
      {{ if hasSuffix ".0" $ip }}{{ $ip = %s }}{{ end }}
      {{ $names := list }}{{ range .spec.containers }}{{ $names = append $names .name }}{{ end }}
      {{ $unready := printf "containers with unready status: [%%s]" (join " " $names) }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
      - {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready, reason: ContainersNotReady, message: {{ $unready | Quote }}}
      - {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady, reason: ContainersNotReady, message: {{ $unready | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
""" % (_POD_IP, _POD_IP) + _INIT_CONTAINER_STATUSES + """\
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ $ip | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
"""


POD_COMPLETE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-complete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: 'DoesNotExist'}
    - {key: '.status.phase', operator: 'In', values: ['Running']}
    - {key: '.metadata.ownerReferences.[].kind', operator: 'In', values: ['Job']}
    - {key: '.metadata.labels["app.kubernetes.io/component"]', operator: 'NotIn', values: %s}
  next:
    statusTemplate: |
      {{ $now := Now }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state: {terminated: {exitCode: 0, finishedAt: {{ $now | Quote }}, reason: Completed, startedAt: {{ $now | Quote }}}}
      {{ end }}
      phase: Succeeded
""" % json.dumps(list(RUNNER_COMPONENTS))

POD_DELETE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: 'Exists'}
  next:
    finalizers: {empty: true}
    delete: true
"""


def kwok_config(nodes: tuple[GpuNode, ...] = DEFAULT_NODES) -> str:
    """The --config file: KWOK's configuration, then the pod stages (node stages stay KWOK's defaults)."""
    probed = probed_node_names(nodes)
    header = "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n"
    return "---\n".join([header, pod_ready(probed), probed_running(probed), POD_COMPLETE, POD_DELETE])
