"""The one Service the real node's pods need, provided as kube-proxy would: ``kubernetes`` (10.96.0.1:443).

Pods reach the apiserver through the in-cluster config (KUBERNETES_SERVICE_HOST/PORT, which the
kubelet sets from that Service). There is no kube-proxy here, and the dev apiserver binds 127.0.0.1
only (and runs with ``--endpoint-reconciler-type=none``, so the Service has no endpoints), so:

- a TCP forwarder (this module's ``main``, its own process) listens on the pod network's gateway
  address and copies bytes to 127.0.0.1:<apiserver port>;
- an iptables DNAT rule in the nat table sends what pods address to 10.96.0.1:443 to that forwarder.

TLS goes end to end: the apiserver's certificate carries the SAN 10.96.0.1. Nothing binds 0.0.0.0,
and the gateway address exists only on this machine's CNI bridge. The chain's name starts with
``PSRN-``, so teardown removes it even after a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys

from .layout import POD_SUBNET

KUBERNETES_SERVICE = ("10.96.0.1", 443)
CHAIN = "PSRN-SERVICES"
# Not in linux's socket module before Python 3.12; the value is the kernel's (include/uapi/linux/in.h).
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


# ---- the DNAT rule ------------------------------------------------------------------------
def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"iptables -t nat {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def dnat_rules(listen: tuple[str, int], service: tuple[str, int] = KUBERNETES_SERVICE,
               pod_subnet: str = POD_SUBNET) -> list[list[str]]:
    """The ``iptables -t nat`` rules (as argv after the table) that ``add_dnat`` installs, in order."""
    return [
        ["-N", CHAIN],
        ["-A", CHAIN, "-d", f"{service[0]}/32", "-p", "tcp", "--dport", str(service[1]),
         "-j", "DNAT", "--to-destination", f"{listen[0]}:{listen[1]}"],
        # PREROUTING: pods' packets arrive from the CNI bridge; only theirs are rewritten.
        ["-A", "PREROUTING", "-s", pod_subnet, "-j", CHAIN],
    ]


def add_dnat(listen: tuple[str, int]) -> None:
    remove_dnat()
    for rule in dnat_rules(listen):
        _iptables(*rule)


def remove_dnat() -> None:
    _iptables("-D", "PREROUTING", "-s", POD_SUBNET, "-j", CHAIN, check=False)
    _iptables("-F", CHAIN, check=False)
    _iptables("-X", CHAIN, check=False)


def dnat_connections() -> int:
    """Connections the DNAT rule has rewritten so far (the nat table sees each one's first packet)."""
    out = _iptables("-L", CHAIN, "-v", "-x", "-n", check=False).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if "DNAT" in line)


# ---- the forwarder ------------------------------------------------------------------------
async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # The gateway address appears only when the bridge plugin sets up the first pod; FREEBIND lets
    # the listener take it now, and the kernel delivers to it once the address exists.
    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind(listen)
    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="forward TCP from --listen to --to")
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--to", type=_address, required=True)
    args = parser.parse_args(argv)
    if args.listen[0] in ("0.0.0.0", ""):
        parser.error("listen on one address, never on all of them")
    asyncio.run(_serve(args.listen, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
