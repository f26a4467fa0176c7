"""Loopback networking for the harness: a free port to bind, and HTTP that never goes through a proxy.

Everything the harness starts listens on 127.0.0.1; a proxy from the environment must never see it.
"""

from __future__ import annotations

import socket
import urllib.request

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
