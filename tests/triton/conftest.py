"""The real tritonserver (nvidia-pytriton's binary) for the serving tests; `make tools` installs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.parse

import pytest

from peakserve_harness.triton.install import ensure_installed


def _network_down() -> str | None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    host = urllib.parse.urlparse(index).hostname or "pypi.org"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        return f"{host}:443 unreachable ({e})"
    return None


@pytest.fixture(scope="module")
def triton_installed():
    try:
        return ensure_installed(log=lambda m: print(m, file=sys.stderr))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        down = _network_down()
        if down:
            pytest.skip(f"cannot install the tritonserver tool virtualenv, network down: {down}; "
                        "run `make tools` where the network is up")
        raise AssertionError(f"installing the tritonserver tool virtualenv failed: {e}") from e
