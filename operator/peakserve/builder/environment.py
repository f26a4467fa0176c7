"""What the build ran with: tool versions and the host. Int8 speed depends on the CPU's ISA
(VNNI, AMX) and fp16 on the GPU, so a manifest without them cannot explain its own figures."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .. import __version__
from .runtime import available_providers

# CPU flags that decide int8/fp16/bf16 kernel speed in onnxruntime.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "peakserve": __version__}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model name") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))  # what this container may use, not the whole host
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"model": model, "cores": os.cpu_count() or 0, "usableCores": usable,
            "isa": [f for f in ISA_FLAGS if f in flags]}


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def host_info() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_info(),
            "onnxruntimeProviders": available_providers(), "gpus": gpu_names(),
            "pythonExecutable": sys.executable}
