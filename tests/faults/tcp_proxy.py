"""A TCP relay between the operator and kube-apiserver that can kill every connection through it at once.

TLS passes through untouched (the serving certificate is for 127.0.0.1, which the relay also is). `cut()`
resets every open connection (SO_LINGER 0, then close: the peer reads ECONNRESET), as a load balancer or
a NAT table dropping its state would: watch streams break mid-stream and pooled connections go dead.

    with TcpProxy(upstream_port) as proxy:
        kubeconfig = proxy.kubeconfig(original, tmp_path / "via-proxy")
        ...
        proxy.cut()                     # reset every connection now
        proxy.hold(); ...; proxy.release()   # and refuse new ones meanwhile
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import yaml


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host, self.upstream_port = host, upstream_port
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut: set[int] = set()   # ids of the sockets cut() reset
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.accepted = 0
        self.cuts = 0
        self._held = threading.Event()

    def __enter__(self) -> "TcpProxy":
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        self.listener.close()
        self.cut()

    def kubeconfig(self, original: Path, target: Path) -> Path:
        """A copy of `original` whose server is this relay."""
        config = yaml.safe_load(Path(original).read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://{self.host}:{self.port}"
        target.write_text(json.dumps(config))
        return target

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def cut(self) -> int:
        """Reset every connection open now; returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._cut.update(id(sock) for pair in pairs for sock in pair)
        for pair in pairs:
            for sock in pair:
                try:
                    # Linger 0: the close sends RST. A plain close() from here would not even send a FIN while
                    # a pump thread is blocked in recv() on the socket (the kernel keeps it open for that call),
                    # and the connection would go silent instead of dead. SHUT_RD wakes that recv() without
                    # telling the peer anything; the pump then closes it.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        self.cuts += 1
        return len(pairs)

    def hold(self) -> int:
        """Cut every connection and refuse new ones until release(): the client is cut off from the API server
        (which others still reach). Returns how many connections were reset."""
        self._held.set()
        return self.cut()

    def release(self) -> None:
        self._held.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._held.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            if id(src) not in self._cut:   # an orderly end: pass the FIN on
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            src.close()  # each pump closes the socket it reads (after a cut: RST); the other pump the other
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]
