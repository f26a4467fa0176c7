"""The kubelet's client certificate: CN system:node:<name>, O system:nodes, signed by the dev cluster's CA.

That identity is what the apiserver's Node authorizer and NodeRestriction admission expect.
"""

from __future__ import annotations

from pathlib import Path

from ..controlplane.certs import make_client_cert


def node_client_cert(pki: Path, node_name: str, ca_dir: Path) -> tuple[Path, Path]:
    """``node-client.{crt,key}`` in ``pki``; made again when the CA changed (a new dev cluster)."""
    pki.mkdir(parents=True, exist_ok=True)
    issuer = pki / "issuer-ca.crt"
    if not (issuer.exists() and issuer.read_bytes() == (ca_dir / "ca.crt").read_bytes()):
        for stale in ("node-client.crt", "node-client.key", "ca.crt", "ca.key"):
            (pki / stale).unlink(missing_ok=True)
    crt, key = make_client_cert(pki, "node-client", f"system:node:{node_name}", ca_dir, org="system:nodes")
    issuer.write_bytes((ca_dir / "ca.crt").read_bytes())
    return crt, key
