"""The real node's binaries, compiled from Go modules once per version and cached beside the control plane's.

- kubelet from k8s.io/kubernetes at the control plane's pinned version (same staging replaces);
- containerd, ctr and containerd-shim-runc-v2 (CGO off, without the btrfs/devmapper/zfs snapshotters,
  which need C headers and kernel features this node never uses);
- the CNI plugins bridge, host-local, loopback and portmap;
- pause: a tiny static PID 1 for pod sandboxes, since no registry can serve registry.k8s.io/pause;
- fake-gpu-plugin: a device plugin advertising nvidia.com/gpu with no hardware (fake_gpu_plugin.py).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from ..controlplane import binaries as cp
from ..controlplane import versions
from .fake_gpu_plugin import MAIN_GO as FAKE_GPU_GO

CONTAINERD = "v2.4.2"
CNI_PLUGINS = "v1.9.0"
# Bump when PAUSE_GO changes: it names the cache entry and the image tag.
PAUSE = "v1"
# Bump when fake_gpu_plugin.MAIN_GO changes. Built against k8s.io/kubelet at the pinned Kubernetes version.
FAKE_GPU_PLUGIN = "v1"

CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
CNI_COMMANDS = {"bridge": "plugins/main/bridge", "host-local": "plugins/ipam/host-local",
                "loopback": "plugins/main/loopback", "portmap": "plugins/meta/portmap"}

# Reaps orphans (it is PID 1 of the pod's PID namespace when shared) and exits on SIGTERM/SIGINT.
PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	child := make(chan os.Signal, 16)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-child:
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
"""


def kubelet_dir() -> Path:
    return cp.bin_dir() / f"kubelet-{versions.KUBERNETES}"


def containerd_dir() -> Path:
    return cp.bin_dir() / f"containerd-{CONTAINERD}"


def cni_dir() -> Path:
    return cp.bin_dir() / f"cni-plugins-{CNI_PLUGINS}"


def pause_dir() -> Path:
    return cp.bin_dir() / f"pause-{PAUSE}"


def fake_gpu_plugin_dir() -> Path:
    return cp.bin_dir() / f"fake-gpu-plugin-{FAKE_GPU_PLUGIN}-{versions.KUBERNETES}"


def compile_kubelet(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    gomod, ldflags = cp.kubernetes_module("kubelet", workdir)
    cp._compile_module(workdir, gomod, None, {str(kubelet_dir() / "kubelet"): "k8s.io/kubernetes/cmd/kubelet"},
                       ldflags)


def compile_containerd(workdir: Path) -> None:
    module = "github.com/containerd/containerd/v2"
    gomod = f"module peakserve.io/harness/containerd\n\ngo 1.24\n\nrequire {module} {CONTAINERD}\n"
    ldflags = f"-s -w -X {module}/version.Version={CONTAINERD}"
    cp._compile_module(workdir, gomod, None, {str(containerd_dir() / c): f"{module}/cmd/{c}"
                                              for c in CONTAINERD_COMMANDS},
                       ldflags, tags="no_btrfs,no_devmapper,no_zfs")


def compile_cni(workdir: Path) -> None:
    module = "github.com/containernetworking/plugins"
    gomod = f"module peakserve.io/harness/cni\n\ngo 1.24\n\nrequire {module} {CNI_PLUGINS}\n"
    cp._compile_module(workdir, gomod, None, {str(cni_dir() / name): f"{module}/{pkg}"
                                              for name, pkg in CNI_COMMANDS.items()})


def compile_pause(workdir: Path) -> None:
    cp._compile_module(workdir, "module peakserve.io/harness/pause\n\ngo 1.24\n", PAUSE_GO,
                       {str(pause_dir() / "pause"): "."})


def compile_fake_gpu_plugin(workdir: Path) -> None:
    staging = "v0." + versions.KUBERNETES.split(".", 1)[1]
    gomod = f"module peakserve.io/harness/fakegpu\n\ngo 1.24\n\nrequire k8s.io/kubelet {staging}\n"
    cp._compile_module(workdir, gomod, FAKE_GPU_GO, {str(fake_gpu_plugin_dir() / "fake-gpu-plugin"): "."})


GROUPS = {
    "kubelet": (lambda: [kubelet_dir() / "kubelet"], compile_kubelet),
    "containerd": (lambda: [containerd_dir() / c for c in CONTAINERD_COMMANDS], compile_containerd),
    "cni-plugins": (lambda: [cni_dir() / c for c in CNI_COMMANDS], compile_cni),
    "pause": (lambda: [pause_dir() / "pause"], compile_pause),
    "fake-gpu-plugin": (lambda: [fake_gpu_plugin_dir() / "fake-gpu-plugin"], compile_fake_gpu_plugin),
}


def ensure_node_binaries(log=print) -> dict[str, float]:
    """Compile whatever is missing; return group -> seconds it took (empty when all was cached)."""
    timings: dict[str, float] = {}
    for group, (paths, compile_group) in GROUPS.items():
        if all(p.exists() for p in paths()):
            continue
        started = time.monotonic()
        log(f"[realnode] {group}: compiling from Go modules (first run only; kubelet takes minutes) ...")
        with tempfile.TemporaryDirectory(prefix=f"peakserve-go-{group}-") as tmp:
            compile_group(Path(tmp))
        timings[group] = time.monotonic() - started
        log(f"[realnode] {group}: done in {timings[group]:.0f}s")
    return timings


if __name__ == "__main__":
    ensure_node_binaries(lambda m: print(m, file=sys.stderr, flush=True))
