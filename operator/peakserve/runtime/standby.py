"""The health endpoint of a standby replica. kopf serves /healthz only once it runs, and a standby runs no
kopf: without this the kubelet's liveness probe would restart every standby, over and over."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b'{"standby": true}' if self.path == "/healthz" else b"not found"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # probes every few seconds: no access log
        pass


@contextlib.contextmanager
def standby_health(host: str, port: int) -> Iterator[None]:
    """Serve /healthz until the block ends; then the port is free for kopf's own liveness endpoint."""
    server = ThreadingHTTPServer((host or "0.0.0.0", port), _Health)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
