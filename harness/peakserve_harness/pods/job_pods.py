"""The local job runner: runs the pods of model-build and rollout-analysis Jobs on the host, for the
KWOK control plane.

KWOK runs no containers (and its pod-complete stage leaves these two components alone). This runner
finds such pods once KWOK has marked them Running, runs the very command their container would
(``peakserve build ...`` in container ``build``, ``peakserve analyze ...`` in container ``analyze``)
on the host, with the pod's volumes mapped to host directories, and then writes the pod's end state
the way the kubelet would: phase, exit code and the termination message holding the result the
command wrote to ``/dev/termination-log``. The Job controller, the operator and the user see exactly
what a real cluster shows.

What a pod may use here:

- command ``peakserve ...`` (run as this virtualenv's ``python -m peakserve.cli``) or ``python ...``
  (this virtualenv's python); anything else needs a real node;
- volumes: hostPath, a PVC bound to a hostPath PersistentVolume, emptyDir (a fresh temporary
  directory per run), ConfigMap and Secret (their keys written to a temporary directory, read from
  the API). The service account token volume is left out: the command runs with this host's
  environment, not as the pod's service account. Arguments and literal env values that are a mount path (or lie under one)
  are rewritten to the host path, ``--flag=PATH`` included; the termination message path goes to a
  temporary result file;
- only the one container: a pod with more containers (an S3 upload after the build) or with GPUs
  needs a real cluster and fails with a message saying so.

Runs pods of one component one at a time (builds are CPU-bound), the components side by side, so
that a long build never holds up a rollout's analysis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peakserve.api.timestamps import rfc3339
from peakserve.cluster.client import ApiException, Kube
from peakserve.render.names import ANALYSIS_COMPONENT, BUILD_COMPONENT

log = logging.getLogger("peakserve.job-runner")

COMPONENT_LABEL = "app.kubernetes.io/component"
MESSAGE_LIMIT = 4096  # the kubelet's limit for one container's termination message
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class JobKind:
    component: str     # the pod's app.kubernetes.io/component label
    container: str     # the container whose command runs on the host
    timeout: float     # seconds before the runner gives up on one pod

    @property
    def selector(self) -> str:
        return f"{COMPONENT_LABEL}={self.component}"


BUILD = JobKind(BUILD_COMPONENT, "build", timeout=1800)
ANALYSIS = JobKind(ANALYSIS_COMPONENT, "analyze", timeout=900)
KINDS = (BUILD, ANALYSIS)
BUILD_SELECTOR = BUILD.selector
ANALYSIS_SELECTOR = ANALYSIS.selector


class UnsupportedPod(RuntimeError):
    """The pod needs something only a real node has (an S3 upload, a GPU, another image)."""


def kind_of(pod: dict[str, Any]) -> JobKind:
    component = ((pod.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL)
    for kind in KINDS:
        if kind.component == component:
            return kind
    raise UnsupportedPod(f"the local job runner runs only {[k.component for k in KINDS]} pods, "
                         f"not component {component!r}")


def _container(pod: dict[str, Any], kind: JobKind) -> tuple[dict[str, Any], bool]:
    """The container that runs on the host, and whether it is an init container."""
    spec = pod["spec"]
    for init, containers in ((True, spec.get("initContainers") or []), (False, spec["containers"])):
        for container in containers:
            if container["name"] == kind.container:
                return container, init
    raise UnsupportedPod(f"the pod has no container named {kind.container}")


def host_path(kube: Kube, namespace: str, volume: dict[str, Any]) -> Path:
    """Where a pod volume lives on this host: a hostPath, or the hostPath behind a bound PVC."""
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    if "persistentVolumeClaim" in volume:
        claim = kube.get("v1", "PersistentVolumeClaim", namespace, volume["persistentVolumeClaim"]["claimName"])
        pv_name = ((claim or {}).get("spec") or {}).get("volumeName")
        pv = kube.get("v1", "PersistentVolume", None, pv_name) if pv_name else None
        path = (((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path")
        if path:
            return Path(path)
        raise UnsupportedPod(f"claim {volume['persistentVolumeClaim']['claimName']} is not bound to a hostPath "
                             "PersistentVolume; the local runner can only reach host directories")
    raise UnsupportedPod(f"volume {volume['name']} is neither a hostPath nor a PersistentVolumeClaim")


def _write_keys(target: Path, data: dict[str, str], items: list[dict] | None, binary: bool) -> None:
    import base64

    files = {i["path"]: i["key"] for i in items} if items else {k: k for k in data}
    for path, key in files.items():
        if key in data:
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_bytes(base64.b64decode(data[key]) if binary else data[key].encode())


def _materialize(kube: Kube, namespace: str, volume: dict[str, Any], target: Path) -> bool:
    """Write a ConfigMap, Secret or projected volume's files under ``target``; False when there is
    nothing this host can give (a projected service account token)."""
    sources = volume["projected"].get("sources") or [] if "projected" in volume else [volume]
    wrote = False
    for source in sources:
        for kind, key, ref_name, binary in (("ConfigMap", "configMap", "name", False),
                                            ("Secret", "secret", "secretName", True)):
            ref = source.get(key)
            if ref is None:
                continue
            name = ref.get(ref_name) or ref.get("name")
            obj = kube.get("v1", kind, namespace, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise UnsupportedPod(f"{kind} {name} (volume {volume['name']}) not found")
            target.mkdir(parents=True, exist_ok=True)
            _write_keys(target, obj.get("data") or {}, ref.get("items"), binary)
            wrote = True
    return wrote


def map_path(value: str, mounts: dict[str, str]) -> str:
    """``value`` with a leading mount path replaced by its host path; ``--flag=PATH`` too."""
    if value.startswith("--") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={map_path(rest, mounts)}"
    for mount in sorted(mounts, key=len, reverse=True):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return mounts[mount] + value[len(mount):]
    return value


@dataclass(frozen=True)
class HostCommand:
    argv: list[str]
    env: dict[str, str]


def host_command(kube: Kube, pod: dict[str, Any], scratch: Path, result_file: Path) -> HostCommand:
    """The container's command with its mount paths replaced by host paths.

    emptyDir volumes become directories under ``scratch``; the termination message path becomes
    ``result_file``.
    """
    kind = kind_of(pod)
    container, _ = _container(pod, kind)
    spec = pod["spec"]
    others = [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"]
              if c["name"] != kind.container]
    if others:
        raise UnsupportedPod(f"the pod also runs {others}: S3 artifact stores and other extra containers "
                             "need a real cluster")
    if container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu"):
        raise UnsupportedPod(f"{kind.component} pods with GPUs need a real GPU node")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts: dict[str, str] = {container.get("terminationMessagePath") or TERMINATION_LOG: str(result_file)}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            path = scratch / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
        elif {"configMap", "secret", "projected"} & set(volume):
            path = scratch / volume["name"]
            if not _materialize(kube, pod["metadata"]["namespace"], volume, path):
                continue  # e.g. kube-api-access-*: the token of the pod's service account
        else:
            path = host_path(kube, pod["metadata"]["namespace"], volume)
        mounts[mount["mountPath"]] = str(path / mount["subPath"]) if mount.get("subPath") else str(path)
    command = list(container.get("command") or [])
    if not command:
        raise UnsupportedPod(f"container {kind.container} has no command (the image's entrypoint is unknown here)")
    if command[0] == "peakserve":
        prefix = [sys.executable, "-m", "peakserve.cli"]
    elif command[0] in ("python", "python3"):
        prefix = [sys.executable]
    else:
        raise UnsupportedPod(f"the local job runner runs only peakserve and python commands, not {command[0]!r}")
    args = [map_path(a, mounts) for a in [*command[1:], *(container.get("args") or [])]]
    env = dict(os.environ)
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = map_path(str(var["value"]), mounts)
        elif var.get("valueFrom"):
            log.warning("pod %s/%s: env %s uses valueFrom, which the local job runner leaves unset",
                        pod["metadata"]["namespace"], pod["metadata"]["name"], var["name"])
    return HostCommand([*prefix, *args], env)


def finish_pod(kube: Kube, pod: dict[str, Any], exit_code: int, message: str, started: str) -> None:
    """Write the end state a kubelet would write, so the Job controller completes or fails the Job."""
    kind = kind_of(pod)
    container, in_init = _container(pod, kind)
    status = {"name": container["name"], "image": container["image"], "ready": False, "restartCount": 0,
              "started": False,
              "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                       "message": message[-MESSAGE_LIMIT:], "startedAt": started,
                                       "finishedAt": rfc3339()}}}
    key = "initContainerStatuses" if in_init else "containerStatuses"
    phase = "Succeeded" if exit_code == 0 else "Failed"
    conditions = [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": rfc3339()}
                  for t in ("Ready", "ContainersReady")]
    try:
        kube.merge_patch("v1", "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"],
                         {"status": {"phase": phase, "conditions": conditions, key: [status]}}, "status")
    except ApiException as err:
        if err.status != 404:
            raise
        log.info("pod %s/%s was deleted before it finished", pod["metadata"]["namespace"], pod["metadata"]["name"])


def run_pod(kube: Kube, pod: dict[str, Any], timeout: float | None = None) -> int:
    """Run one job pod to its end; returns the exit code written to the pod."""
    started = rfc3339()
    name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    kind = kind_of(pod)
    timeout = kind.timeout if timeout is None else timeout
    with tempfile.TemporaryDirectory(prefix=f"peakserve-{kind.container}-") as tmp:
        result_file = Path(tmp) / "termination-log"
        try:
            command = host_command(kube, pod, Path(tmp) / "volumes", result_file)
            log.info("%s pod %s: %s", kind.component, name,
                     " ".join(a if len(a) < 80 else a[:77] + "..." for a in command.argv))
            proc = subprocess.run(command.argv, env=command.env, cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except UnsupportedPod as err:
            code, output = 1, f"local job runner: {err}"
        except subprocess.TimeoutExpired:
            code, output = 1, f"local job runner: the {kind.container} container ran past {timeout:.0f}s"
        message = result_file.read_text() if result_file.exists() and result_file.stat().st_size else output
    log.info("%s pod %s finished with exit code %d", kind.component, name, code)
    finish_pod(kube, pod, code, message, started)
    return code


def pending_pods(kube: Kube, kind: JobKind, namespace: str | None = None) -> list[dict[str, Any]]:
    """Pods of this kind KWOK has started and nobody has finished yet."""
    return [p for p in kube.list("v1", "Pod", namespace, kind.selector)
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def _run_kind(kube: Kube, kind: JobKind, stop: threading.Event, poll: float, namespace: str | None,
              on_done: Callable[[dict[str, Any], int], None] | None) -> None:
    while not stop.is_set():
        try:
            for pod in pending_pods(kube, kind, namespace):
                if stop.is_set():
                    return
                code = run_pod(kube, pod)
                if on_done:
                    on_done(pod, code)
        except Exception as err:  # noqa: BLE001 - an API hiccup must not end the runner; retried next poll
            log.warning("%s runner pass failed: %s", kind.component, err)
        stop.wait(poll)


def run_job_pods(kube: Kube, stop: threading.Event, poll: float = 1.0, kinds: tuple[JobKind, ...] = KINDS,
                 namespace: str | None = None,
                 on_done: Callable[[dict[str, Any], int], None] | None = None) -> None:
    """Run the pods of each kind (one at a time per kind, kinds side by side) until ``stop`` is set."""
    threads = [threading.Thread(target=_run_kind, args=(kube, kind, stop, poll, namespace, on_done),
                                name=f"job-runner-{kind.component}", daemon=True) for kind in kinds]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.5)
    finally:
        stop.set()
