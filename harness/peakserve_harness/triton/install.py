"""The real ``tritonserver``, taken from the PyPI wheel ``nvidia-pytriton`` and cached by version.

``nvidia-pytriton`` pins ``numpy<2``, so it goes into a tool virtualenv of its own under the
peakserve cache (``~/.cache/peakserve/pytriton-<version>/``, or ``$PEAKSERVE_CACHE``), never into the
project's environment. That virtualenv provides the server binary, its shared libraries, the
python backend and the python backend stubs (one per Python minor version), and it is also the
Python environment the stubs run models in, so it gets ``onnxruntime`` too.

Why the models do not run on the project's packages: the stub's pybind11 numpy bindings were
built for numpy 1 and silently corrupt numpy 2 tensors (inputs arrive with wrong values, outputs
with zero bytes: "output tensor shape does not match size of output"). The tool virtualenv has
numpy<2 (pinned by nvidia-pytriton) and an onnxruntime of the project's version.

``python -m peakserve_harness.triton.install`` installs it once (a stamp file makes later runs a fast no-op)
and prints where the pieces are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root, file_lock

PYTRITON_PACKAGE = "nvidia-pytriton"
PYTRITON_VERSION = "0.7.0"
ONNXRUNTIME_VERSION = "1.31.1"  # keep in step with the `build` extra in pyproject.toml
REQUIREMENTS = (f"{PYTRITON_PACKAGE}=={PYTRITON_VERSION}", f"onnxruntime=={ONNXRUNTIME_VERSION}")
INSTALL_TIMEOUT_S = 900


class TritonNotInstalled(RuntimeError):
    """The tool virtualenv is missing or incomplete (run ``python -m peakserve_harness.triton.install``)."""


@dataclass(frozen=True)
class TritonPaths:
    binary: Path          # .../pytriton/tritonserver/bin/tritonserver
    libs_dir: Path        # .../nvidia_pytriton.libs, for LD_LIBRARY_PATH
    python_backend: Path  # dir holding libtriton_python.so and triton_python_backend_utils.py
    stub: Path            # triton_python_backend_stub for the tool virtualenv's Python version
    site_packages: Path   # the tool virtualenv's site-packages
    python_env: Path      # the tool virtualenv: its bin/ goes first on PATH for the stubs
    python_version: str   # "3.11": the tool virtualenv's Python (the stub embeds its libpython)
    libpython_dir: Path | None  # LIBDIR of that Python when it is a shared build, else None


def triton_home() -> Path:
    """The tool virtualenv that holds nvidia-pytriton (it may not exist yet)."""
    return cache_root() / f"pytriton-{PYTRITON_VERSION}"


def _stamp() -> Path:
    return triton_home() / ".installed"


def _read_stamp() -> dict | None:
    try:
        stamp = json.loads(_stamp().read_text())
    except (FileNotFoundError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("requirements") == list(REQUIREMENTS) \
        else None


def is_installed() -> bool:
    return _read_stamp() is not None


def tritonserver_paths() -> TritonPaths:
    """Where the installed pieces are; raises TritonNotInstalled when something is missing."""
    stamp = _read_stamp()
    home = triton_home()
    if stamp is None:
        raise TritonNotInstalled(
            f"{' '.join(REQUIREMENTS)} not installed in {home}; "
            "run `python -m peakserve_harness.triton.install` (or `make tools`)")
    version = stamp["python_version"]
    site = home / "lib" / f"python{version}" / "site-packages"
    server = site / "pytriton" / "tritonserver"
    paths = TritonPaths(
        binary=server / "bin" / "tritonserver",
        libs_dir=site / "nvidia_pytriton.libs",
        python_backend=server / "backends" / "python",
        stub=server / "python_backend_stubs" / version / "triton_python_backend_stub",
        site_packages=site,
        python_env=home,
        python_version=version,
        libpython_dir=Path(stamp["libpython_dir"]) if stamp.get("libpython_dir") else None,
    )
    for p in (paths.binary, paths.libs_dir, paths.python_backend / "libtriton_python.so",
              paths.python_backend / "triton_python_backend_utils.py", paths.stub,
              home / "bin" / "python"):
        if not p.exists():
            raise TritonNotInstalled(f"missing {p} (stale or partial install in {home}?)")
    return paths


_PROBE = """import json, sys, sysconfig
shared = bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))
print(json.dumps({"python_version": "%d.%d" % sys.version_info[:2],
                  "libpython_dir": sysconfig.get_config_var("LIBDIR") if shared else None}))
"""


def ensure_installed(log=print) -> TritonPaths:
    """Install REQUIREMENTS into the tool virtualenv unless its stamp says they are there.

    Idempotent and safe to run concurrently (a file lock); a stale or partial install is removed
    and redone. Raises CalledProcessError / TimeoutExpired when pip fails (e.g. no network).
    """
    if is_installed():
        return tritonserver_paths()
    home = triton_home()
    with file_lock(home.parent / f".{home.name}.lock", timeout_s=INSTALL_TIMEOUT_S + 60):
        if is_installed():  # another process finished while we waited
            return tritonserver_paths()
        shutil.rmtree(home, ignore_errors=True)
        log(f"[triton] installing {' '.join(REQUIREMENTS)} into {home} ...")
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=300)
        python = home / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *REQUIREMENTS], check=True, timeout=INSTALL_TIMEOUT_S)
        probe = subprocess.run([str(python), "-c", _PROBE], check=True, timeout=60,
                               capture_output=True, text=True)
        stamp = {"requirements": list(REQUIREMENTS), **json.loads(probe.stdout)}
        _stamp().write_text(json.dumps(stamp, indent=1) + "\n")
    return tritonserver_paths()


def main() -> int:
    try:
        paths = ensure_installed(lambda m: print(m, file=sys.stderr))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, TritonNotInstalled) as e:
        print(f"[triton] install failed: {e}", file=sys.stderr)
        return 1
    print(f"tritonserver={paths.binary}")
    print(f"libs={paths.libs_dir}")
    print(f"python_backend={paths.python_backend}")
    print(f"stub={paths.stub}")
    print(f"python_env={paths.python_env}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
