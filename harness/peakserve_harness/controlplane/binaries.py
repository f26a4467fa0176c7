"""The dev binaries: compile the control plane (and prometheus-adapter) from upstream Go modules, once per version.

The binaries are cached outside the repository, keyed by version, so a second
`peakserve-dev up` starts in seconds. Everything comes through the Go module proxy:
no prebuilt binary is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import versions
from ..cache import cache_root

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def bin_dir() -> Path:
    return cache_root() / "bin"


def binary_path(name: str) -> Path:
    version = {"etcd": versions.ETCD, "kwok": versions.KWOK,
               "prometheus-adapter": versions.PROMETHEUS_ADAPTER}.get(name, versions.KUBERNETES)
    return bin_dir() / f"{name}-{version}" / name


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", **(env or {})}
    proc = subprocess.run(["go", *args], cwd=cwd, env=full_env, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _staging_replaces(kube_version: str, workdir: Path) -> list[str]:
    """k8s.io/kubernetes replaces its staging modules with local paths; map them to proxy versions."""
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{kube_version}"], workdir))
    staging_version = "v0." + kube_version.split(".", 1)[1]
    replaces = []
    for line in Path(info["GoMod"]).read_text().splitlines():
        parts = line.split()
        if "=>" in parts and parts[-1].startswith("./staging/src/"):
            module = parts[parts.index("=>") - 1]
            replaces.append(f"replace {module} => {module} {staging_version}")
    return replaces


def tools_go(imports: list[str]) -> str:
    """A build-tagged file importing the commands: `go mod tidy` records their dependencies, and `go build`
    never compiles the file itself."""
    lines = "\n".join(f'\t_ "{i}"' for i in imports)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{lines}\n)\n"


def _compile_module(workdir: Path, gomod: str, main_go: str | None, packages: dict[str, str],
                    ldflags: str = "-s -w", tags: str = "") -> None:
    """Build `packages` (output path -> Go package) of one module. Without `main_go`, a tools.go naming the
    packages lets `go mod tidy` resolve them."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    if main_go:
        (workdir / "main.go").write_text(main_go)
    else:
        (workdir / "tools.go").write_text(tools_go(sorted(set(packages.values()))))
    env = {"GOFLAGS": "-mod=mod" + (f" -tags={tags}" if tags else "")}
    _go(["mod", "tidy"], workdir, env)
    for out, pkg in packages.items():
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(target), pkg], workdir, env)


def kubernetes_module(name: str, workdir: Path) -> tuple[str, str]:
    """go.mod and ldflags for commands of k8s.io/kubernetes at the pinned version (its staging modules from
    the proxy). Without the version in ldflags a binary reports v0.0.0 and the skew checks misread it."""
    v = versions.KUBERNETES
    major, minor = v.lstrip("v").split(".")[:2]
    gomod = "\n".join([f"module peakserve.io/harness/{name}", "", "go 1.24", "",
                       f"require k8s.io/kubernetes {v}", "", *_staging_replaces(v, workdir), ""])
    ldflags = " ".join(["-s -w", f"-X k8s.io/component-base/version.gitVersion={v}",
                        f"-X k8s.io/component-base/version.gitMajor={major}",
                        f"-X k8s.io/component-base/version.gitMinor={minor}",
                        "-X k8s.io/component-base/version.gitTreeState=clean"])
    return gomod, ldflags


def compile_kubernetes(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    gomod, ldflags = kubernetes_module("kube", workdir)
    _compile_module(workdir, gomod, None,
                    {str(binary_path(c)): f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS}, ldflags)


def compile_etcd(workdir: Path) -> None:
    gomod = f"module peakserve.io/harness/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {versions.ETCD}\n"
    main_go = ('package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
               "func main() { etcdmain.Main(os.Args) }\n")
    _compile_module(workdir, gomod, main_go, {str(binary_path("etcd")): "."})


def compile_kwok(workdir: Path) -> None:
    gomod = f"module peakserve.io/harness/kwok\n\ngo 1.24\n\nrequire sigs.k8s.io/kwok {versions.KWOK}\n"
    ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={versions.KWOK}"
    _compile_module(workdir, gomod, None, {str(binary_path("kwok")): "sigs.k8s.io/kwok/cmd/kwok"}, ldflags)


def compile_prometheus_adapter(workdir: Path) -> None:
    """sigs.k8s.io/prometheus-adapter's cmd/adapter, with the module's own dependency versions."""
    v = versions.PROMETHEUS_ADAPTER
    gomod = f"module peakserve.io/harness/adapter\n\ngo 1.22\n\nrequire sigs.k8s.io/prometheus-adapter {v}\n"
    _compile_module(workdir, gomod, None,
                    {str(binary_path("prometheus-adapter")): "sigs.k8s.io/prometheus-adapter/cmd/adapter"})


COMPILERS = {
    "etcd": (("etcd",), compile_etcd),
    "kwok": (("kwok",), compile_kwok),
    "kubernetes": (KUBE_COMMANDS, compile_kubernetes),
    "prometheus-adapter": (("prometheus-adapter",), compile_prometheus_adapter),
}


CONTROL_PLANE = ("etcd", "kwok", "kubernetes")


def ensure_binaries(log=print, groups: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Compile whatever is missing from the cache; return name -> path for every binary.

    ``groups`` limits the work to some of COMPILERS (the control plane alone needs no adapter);
    None compiles them all, as `make tools` does.
    """
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to build the local control plane (go not found on PATH)")
    for group, (names, compile_group) in COMPILERS.items():
        if groups is not None and group not in groups:
            continue
        if all(binary_path(n).exists() for n in names):
            continue
        started = time.monotonic()
        log(f"[binaries] {group}: compiling {', '.join(names)} from Go modules (first run only) ...")
        with tempfile.TemporaryDirectory(prefix=f"peakserve-go-{group}-") as tmp:
            compile_group(Path(tmp))
        log(f"[binaries] {group}: done in {time.monotonic() - started:.0f}s")
    return {n: binary_path(n) for group, (names, _) in COMPILERS.items()
            if groups is None or group in groups for n in names}


if __name__ == "__main__":
    ensure_binaries(lambda m: print(m, file=sys.stderr, flush=True))
