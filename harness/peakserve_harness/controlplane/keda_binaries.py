"""KEDA's binaries, compiled from its Go module (github.com/kedacore/keda/v2), once per version.

KEDA ships three commands from one module: the operator (`cmd/operator`), the metrics API server
that serves external.metrics.k8s.io (`cmd/adapter`) and the admission webhooks (`cmd/webhooks`).
The module's own go.mod carries a `replace` directive that a wrapper module would silently drop,
so the module source from the proxy is copied and built in place, with its own go.sum: exactly the
dependency versions KEDA released with. The CRDs (config/crd/bases) are copied beside the binaries,
so starting KEDA later needs neither Go nor the module cache.

    python -m peakserve_harness.controlplane.keda_binaries      # what `make tools` runs
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from . import versions
from .binaries import _go, bin_dir

MODULE = "github.com/kedacore/keda/v2"
OPERATOR = "keda"
ADAPTER = "keda-adapter"
WEBHOOKS = "keda-admission-webhooks"
# binary name -> package inside the module; the webhooks binary is optional (the dev cluster runs
# without admission webhooks) and built last, mostly from the same compiled packages.
REQUIRED = {OPERATOR: "./cmd/operator", ADAPTER: "./cmd/adapter"}
OPTIONAL = {WEBHOOKS: "./cmd/webhooks"}


def keda_dir() -> Path:
    return bin_dir() / f"keda-{versions.KEDA}"


def keda_binary(name: str) -> Path:
    return keda_dir() / name


def crd_dir() -> Path:
    return keda_dir() / "crds"


def _module_source(workdir: Path) -> Path:
    info = json.loads(_go(["mod", "download", "-json", f"{MODULE}@{versions.KEDA}"], workdir))
    if info.get("Error"):
        raise RuntimeError(f"go mod download {MODULE}@{versions.KEDA}: {info['Error']}")
    return Path(info["Dir"])


def _writable_copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def compile_keda(workdir: Path, log=print, include_webhooks: bool = True) -> dict[str, float]:
    """Build KEDA into the cache; return seconds per step (for the README's build-time figure)."""
    timings: dict[str, float] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "keda"
    _writable_copy(_module_source(workdir), src)
    out = keda_dir()
    out.mkdir(parents=True, exist_ok=True)
    ldflags = (f"-s -w -X={MODULE}/version.Version={versions.KEDA} "
               f"-X={MODULE}/version.GitCommit={versions.KEDA}")
    # -mod=readonly: the module's go.sum is complete; nothing may be re-resolved.
    env = {"GOFLAGS": "-mod=readonly -buildvcs=false"}

    def build(name: str, pkg: str) -> None:
        started = time.monotonic()
        tmp_out = out / f".{name}.partial"
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_out), pkg], src, env)
        tmp_out.replace(out / name)
        timings[name] = time.monotonic() - started
        log(f"[keda] {name}: built in {timings[name]:.0f}s")

    for name, pkg in REQUIRED.items():
        if not (out / name).exists():
            build(name, pkg)
    if include_webhooks:
        for name, pkg in OPTIONAL.items():
            if not (out / name).exists():
                try:
                    build(name, pkg)
                except RuntimeError as err:  # optional: the dev cluster runs without webhooks
                    log(f"[keda] {name}: not built ({str(err)[-400:]})")
    crds = crd_dir()
    if crds.exists():
        shutil.rmtree(crds)
    shutil.copytree(src / "config" / "crd" / "bases", crds)
    return timings


def ensure_keda(log=print, include_webhooks: bool = True) -> dict[str, Path]:
    """Compile KEDA if the cache lacks it; return name -> path for the operator and the adapter."""
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to build KEDA (go not found on PATH)")
    have = all(keda_binary(n).exists() for n in REQUIRED) and crd_dir().is_dir()
    if include_webhooks:
        have = have and all(keda_binary(n).exists() for n in OPTIONAL)
    if not have:
        started = time.monotonic()
        log(f"[keda] compiling KEDA {versions.KEDA} from its Go module (first run only) ...")
        with tempfile.TemporaryDirectory(prefix="peakserve-go-keda-") as tmp:
            compile_keda(Path(tmp), log, include_webhooks)
        log(f"[keda] done in {time.monotonic() - started:.0f}s")
    return {n: keda_binary(n) for n in REQUIRED}


if __name__ == "__main__":
    ensure_keda(lambda m: print(m, file=sys.stderr, flush=True))
