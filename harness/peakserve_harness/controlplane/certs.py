"""Certificates and keys for the local control plane, made with the openssl CLI.

Every piece is made only when its file is missing, so a dev directory made by an older version
is upgraded in place (the front-proxy PKI of the aggregation layer came later) and an existing
one keeps its CA.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

# The aggregation layer: the kube-apiserver proxies requests for an aggregated API (such as
# custom.metrics.k8s.io) with this client certificate, and the extension server trusts the
# X-Remote-User/-Group headers only from a client whose certificate this CA signed, with this CN.
FRONT_PROXY_CA = "front-proxy-ca"
FRONT_PROXY_CLIENT = "front-proxy-client"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def _ca(pki: Path, name: str, cn: str) -> None:
    if (pki / f"{name}.crt").exists() and (pki / f"{name}.key").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "3650", "-subj", f"/CN={cn}", cwd=pki)


CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n")


def _signed(pki: Path, name: str, cn: str, ca: str, ext: str, org: str | None = None) -> None:
    """``name.crt``/``name.key`` signed by ``ca`` with the given X.509v3 extension lines."""
    if (pki / f"{name}.crt").exists() and (pki / f"{name}.key").exists():
        return
    subject = (f"/O={org}" if org else "") + f"/CN={cn}"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=pki)
    (pki / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", f"{name}.ext", cwd=pki)


def make_pki(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, the service-account signing key, and the
    front-proxy CA and client certificate of the aggregation layer."""
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "apiserver.crt").exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "3650", "-subj", "/CN=peakserve-dev-ca", cwd=pki)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
                 "-subj", "/CN=kube-apiserver", cwd=pki)
        (pki / "san.ext").write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\n")
        _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.ext", cwd=pki)
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    make_front_proxy_pki(pki)


def make_front_proxy_pki(pki: Path) -> None:
    """``front-proxy-ca.{crt,key}`` and ``front-proxy-client.{crt,key}`` (a client certificate)."""
    pki.mkdir(parents=True, exist_ok=True)
    _ca(pki, FRONT_PROXY_CA, "peakserve-dev-front-proxy-ca")
    _signed(pki, FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT, FRONT_PROXY_CA, CLIENT_EXT)


def _link_ca(directory: Path, ca_dir: Path, ca: str) -> None:
    """The CA's files beside a certificate made in another directory, so that openssl finds them there."""
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("crt", "key"):
        link = directory / f"{ca}.{suffix}"
        if directory.resolve() != ca_dir.resolve() and not link.exists():
            link.symlink_to((ca_dir / f"{ca}.{suffix}").resolve())


def make_client_cert(directory: Path, name: str, cn: str, ca_dir: Path, org: str | None = None,
                     ca: str = "ca") -> tuple[Path, Path]:
    """A client certificate ``name.crt``/``name.key`` in ``directory`` (subject /O=org/CN=cn), signed by
    ``ca_dir/ca.{crt,key}``; kept if present."""
    _link_ca(directory, ca_dir, ca)
    _signed(directory, name, cn, ca, CLIENT_EXT, org)
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_serving_cert(directory: Path, name: str, dns_names: Sequence[str], ca_dir: Path,
                      ca: str = "ca") -> tuple[Path, Path]:
    """A serving certificate ``name.crt``/``name.key`` in ``directory`` for 127.0.0.1 and
    ``dns_names``, signed by ``ca_dir/ca.{crt,key}`` (the dev cluster's CA); kept if present."""
    _link_ca(directory, ca_dir, ca)
    sans = ",".join(["IP:127.0.0.1", *(f"DNS:{d}" for d in dns_names)])
    _signed(directory, name, name, ca,
            f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n")
    return directory / f"{name}.crt", directory / f"{name}.key"
