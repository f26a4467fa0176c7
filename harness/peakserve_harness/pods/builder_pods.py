"""The local build executor: runs build Jobs' pods on the host, for the KWOK control plane.

KWOK runs no containers. This runner finds build pods that KWOK has marked Running, runs the very
command the builder container would (`peakserve build ...`) on the host with the pod's volumes
mapped to host directories, and then writes the pod's end state the way the kubelet would: phase,
exit code and the termination message holding the build result. The Job controller, the operator
and the user see exactly what a real cluster shows.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from peakserve.api.timestamps import rfc3339
from peakserve.cluster.client import Kube
from peakserve.render.names import BUILD_COMPONENT

log = logging.getLogger("peakserve.build-runner")

SELECTOR = f"app.kubernetes.io/component={BUILD_COMPONENT}"
MESSAGE_LIMIT = 4096  # the kubelet's limit for one container's termination message


class UnsupportedPod(RuntimeError):
    """The pod needs something only a real node has (an S3 upload, a GPU)."""


def _build_container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        if container["name"] == "build":
            return container
    raise UnsupportedPod("the pod has no container named build")


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


def host_command(kube: Kube, pod: dict[str, Any], result_file: Path) -> list[str]:
    """The build container's command with its mount paths replaced by host paths."""
    container = _build_container(pod)
    if container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu"):
        raise UnsupportedPod("GPU builds need a real GPU node")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            if mount["mountPath"] != "/tmp":
                raise UnsupportedPod("S3 artifact stores need a real cluster (the pod uploads from an emptyDir)")
            continue
        path = host_path(kube, pod["metadata"]["namespace"], volume)
        mounts[mount["mountPath"]] = str(path / mount["subPath"]) if mount.get("subPath") else str(path)
    args = list(container.get("args") or [])
    for i, arg in enumerate(args):
        if args[i - 1:i] in (["--source"], ["--out"]) and arg in mounts:
            args[i] = mounts[arg]
        elif args[i - 1:i] == ["--result-file"]:
            args[i] = str(result_file)
    return [sys.executable, "-m", "peakserve.cli", *container["command"][1:], *args]


def finish_pod(kube: Kube, pod: dict[str, Any], exit_code: int, message: str, started: str) -> None:
    """Write the end state a kubelet would write, so the Job controller completes or fails the Job."""
    container = _build_container(pod)
    status = {"name": container["name"], "image": container["image"], "ready": False, "restartCount": 0,
              "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                       "message": message[-MESSAGE_LIMIT:], "startedAt": started,
                                       "finishedAt": rfc3339()}}}
    in_init = any(c["name"] == "build" for c in pod["spec"].get("initContainers") or [])
    key = "initContainerStatuses" if in_init else "containerStatuses"
    phase = "Succeeded" if exit_code == 0 else "Failed"
    conditions = [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": rfc3339()}
                  for t in ("Ready", "ContainersReady")]
    kube.merge_patch("v1", "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"],
                     {"status": {"phase": phase, "conditions": conditions, key: [status]}}, "status")


def run_pod(kube: Kube, pod: dict[str, Any], timeout: float) -> int:
    """Run one build pod to its end; returns the exit code written to the pod."""
    started = rfc3339()
    name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    with tempfile.TemporaryDirectory(prefix="peakserve-build-") as tmp:
        result_file = Path(tmp) / "termination-log"
        try:
            command = host_command(kube, pod, result_file)
            log.info("build pod %s: %s", name, " ".join(a if len(a) < 80 else a[:77] + "..." for a in command))
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except UnsupportedPod as err:
            code, output = 1, f"local build runner: {err}"
        except subprocess.TimeoutExpired:
            code, output = 1, f"local build runner: the build ran past {timeout:.0f}s"
        message = result_file.read_text() if result_file.exists() and result_file.stat().st_size else output
    log.info("build pod %s finished with exit code %d", name, code)
    finish_pod(kube, pod, code, message, started)
    return code


def pending_build_pods(kube: Kube) -> list[dict[str, Any]]:
    """Build pods KWOK has started and nobody has finished yet."""
    return [p for p in kube.list("v1", "Pod", None, SELECTOR)
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def run_builds(kube: Kube, stop: threading.Event, poll: float = 1.0, timeout: float = 1800,
               on_done: Callable[[dict[str, Any], int], None] | None = None) -> None:
    """Run build pods one at a time (builds are CPU-bound) until `stop` is set."""
    while not stop.is_set():
        for pod in pending_build_pods(kube):
            if stop.is_set():
                return
            code = run_pod(kube, pod, timeout=timeout)
            if on_done:
                on_done(pod, code)
        stop.wait(poll)
