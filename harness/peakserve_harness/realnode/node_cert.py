"""The kubelet's client certificate: CN system:node:<name>, O system:nodes, signed by the dev cluster's CA.

That identity is what the apiserver's Node authorizer and NodeRestriction admission expect.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def node_client_cert(pki: Path, node_name: str, ca_crt: Path, ca_key: Path) -> tuple[Path, Path]:
    """``node-client.{crt,key}`` in ``pki``; made again when the CA changed (a new dev cluster)."""
    pki.mkdir(parents=True, exist_ok=True)
    crt, key = pki / "node-client.crt", pki / "node-client.key"
    ca_copy = pki / "issuer-ca.crt"
    if crt.exists() and key.exists() and ca_copy.exists() and ca_copy.read_bytes() == ca_crt.read_bytes():
        return crt, key
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key.name, "-out", "node-client.csr",
             "-subj", f"/O=system:nodes/CN=system:node:{node_name}", cwd=pki)
    (pki / "node-client.ext").write_text("basicConstraints=critical,CA:FALSE\n"
                                         "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                         "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", "node-client.csr", "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-CAcreateserial", "-CAserial", "node-client.srl", "-out", crt.name, "-days", "3650",
             "-extfile", "node-client.ext", cwd=pki)
    ca_copy.write_bytes(ca_crt.read_bytes())
    return crt, key
