"""Gateway API CRDs (standard channel) for the local control plane, from their Go module.

``install_gateway_api(kube)`` takes the CRD YAML of ``sigs.k8s.io/gateway-api`` at the pinned version
(``versions.GATEWAY_API``) from the Go module proxy (``go mod download -json`` gives the module's
directory; the CRDs are in ``config/crd/standard/``), caches it outside the repository keyed by
version (``~/.cache/peakserve/gateway-api-<version>/``), applies everything in it server-side (the
CustomResourceDefinitions, and the ValidatingAdmissionPolicy that keeps experimental-channel CRDs
from replacing them, as the release's standard-install.yaml does) and waits until they are established and ``gateway.networking.k8s.io/v1`` serves
HTTPRoute. Nothing is installed by default: the operator must also work on clusters without it.

``python -m peakserve_harness.controlplane.gateway_api [--dir DIR]`` installs them into the running
``peakserve-dev up`` cluster (``peakserve-dev up --gateway-api`` does the same).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import yaml

from . import versions
from ..cache import cache_root

MODULE = "sigs.k8s.io/gateway-api"
GROUP = "gateway.networking.k8s.io"
HTTPROUTE_CRD = f"httproutes.{GROUP}"
FIELD_MANAGER = "peakserve-dev"


def crd_dir(version: str = versions.GATEWAY_API) -> Path:
    return cache_root() / f"gateway-api-{version}" / "standard"


def ensure_crds(log: Callable[[str], None] = print, version: str = versions.GATEWAY_API) -> Path:
    """The directory of the standard-channel CRD files, fetched through the Go module proxy once."""
    target = crd_dir(version)
    if target.is_dir() and any(target.glob("*.yaml")):
        return target
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to fetch the Gateway API CRDs from their module (go not found on PATH)")
    log(f"[gateway-api] fetching {MODULE}@{version} through the Go module proxy ...")
    with tempfile.TemporaryDirectory(prefix="peakserve-gateway-api-") as tmp:
        # Outside any module, so that no go.mod around the caller is read or changed.
        proc = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{version}"], cwd=tmp,
                              env={**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"go mod download {MODULE}@{version} failed:\n{proc.stdout}\n{proc.stderr}")
        info = json.loads(proc.stdout)
        if info.get("Error"):
            raise RuntimeError(f"go mod download {MODULE}@{version}: {info['Error']}")
        source = Path(info["Dir"]) / "config" / "crd" / "standard"
        files = sorted(source.glob("*.yaml"))
        if not files:
            raise RuntimeError(f"no CRD files in {source}")
        staging = Path(tempfile.mkdtemp(prefix=".standard-", dir=_mkdir(target.parent)))
        for path in files:
            shutil.copyfile(path, staging / path.name)  # the module cache is read-only: copy, then rename
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    log(f"[gateway-api] {len(files)} CRD files cached in {target}")
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# The kinds in config/crd/standard, all cluster-scoped: their REST collections.
_COLLECTIONS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ValidatingAdmissionPolicy": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
}


def manifests(version: str = versions.GATEWAY_API, log: Callable[[str], None] = print) -> list[dict]:
    """The objects of the standard channel, CustomResourceDefinitions first."""
    found = []
    for path in sorted(ensure_crds(log, version).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") not in _COLLECTIONS:
                raise RuntimeError(f"{path.name}: unexpected kind {doc.get('kind')}")
            found.append(doc)
    return sorted(found, key=lambda d: list(_COLLECTIONS).index(d["kind"]))


def _apply(kube, obj: dict) -> None:
    """Server-side apply of one cluster-scoped object, this harness owning the fields it sends."""
    path = f"{_COLLECTIONS[obj['kind']]}/{obj['metadata']['name']}"
    kube.call("PATCH", path, body=obj, query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
              content_type="application/apply-patch+yaml")


def install_gateway_api(kube, *, version: str = versions.GATEWAY_API, wait: bool = True, timeout: float = 60,
                        log: Callable[[str], None] = print) -> list[str]:
    """Apply the standard channel server-side (``kube``: a peakserve.cluster.client.Kube); the CRD names."""
    started = time.monotonic()
    names = []
    for obj in manifests(version, log):
        _apply(kube, obj)
        if obj["kind"] == "CustomResourceDefinition":
            names.append(obj["metadata"]["name"])
    if wait:
        wait_established(kube, names, timeout)
    log(f"[gateway-api] {MODULE} {version}: {len(names)} CRDs established in {time.monotonic() - started:.1f}s")
    return names


def uninstall_gateway_api(kube, *, version: str = versions.GATEWAY_API, timeout: float = 60) -> None:
    """Delete what install_gateway_api applied (routes and gateways go with their CRDs); wait until
    the API server no longer serves the group."""
    objects = manifests(version, log=lambda m: None)
    _open_storage(kube, [o for o in objects if o["kind"] == "CustomResourceDefinition"], timeout, missing_ok=True)
    for obj in reversed(objects):
        try:
            kube.call("DELETE", f"{_COLLECTIONS[obj['kind']]}/{obj['metadata']['name']}")
        except Exception as err:  # noqa: BLE001 - only "already gone" is expected here
            if getattr(err, "status", None) != 404:
                raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not kube.serves(f"{GROUP}/v1"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{GROUP}/v1 still served {timeout:.0f}s after its CRDs were deleted")


def _open_storage(kube, crds: list[dict], timeout: float, missing_ok: bool = False) -> None:
    """Until each CRD's watch cache is ready. The API server creates a custom resource's storage (and its
    watch cache) on the first request for it. A CRD deleted before that has its storage created by the CRD
    finalizer itself, whose first list then meets a cache still initializing ("storage is (re)initializing"),
    and its retry came minutes later: the CRD stayed Terminating and the group served for 3 to 4 minutes
    (seen here in 2 of 23 install/uninstall cycles; the same in operator-framework/operator-controller#1437).
    Only the uninstall needs it, just before its deletes. A watch is served
    only from the watch cache, and waits for it: one that returns proves the cache ready. The field selector
    matches nothing, so the answer is empty. ``missing_ok``: a CRD already gone needs nothing."""
    def ready(crd: dict) -> None:
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served"))
        path = f"/apis/{crd['spec']['group']}/{version}/{crd['spec']['names']['plural']}"
        query = [("watch", "1"), ("timeoutSeconds", "1"), ("fieldSelector", "metadata.name=storage-probe")]
        deadline = time.monotonic() + timeout
        while True:
            try:
                kube.call("GET", path, query=query)
                return
            except Exception as err:  # noqa: BLE001 - 404/429/503 while the API server catches up
                if missing_ok and getattr(err, "status", None) == 404:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path} did not serve a watch within {timeout:.0f}s: {err}") from err
                time.sleep(0.3)

    # One second per watch: all at once.
    with ThreadPoolExecutor(max_workers=len(crds) or 1) as pool:
        list(pool.map(ready, crds))


def established(kube, name: str) -> bool:
    crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name)
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in ((crd or {}).get("status") or {}).get("conditions") or [])


def wait_established(kube, names: list[str] | None = None, timeout: float = 60) -> None:
    """Until the CRDs (HTTPRoute's by default) are established and their group serves v1."""
    names = names or [HTTPROUTE_CRD]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(established(kube, n) for n in names) and _serves_httproute(kube):
            return
        time.sleep(0.3)
    raise RuntimeError(f"Gateway API CRDs not established within {timeout:.0f}s: {names}")


def _serves_httproute(kube) -> bool:
    try:
        resources = kube.call("GET", f"/apis/{GROUP}/v1").get("resources", [])
    except Exception:  # noqa: BLE001 - 404/503 while discovery catches up
        return False
    return any(r.get("name") == "httproutes" for r in resources)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from peakserve.cluster.client import Kube

    from .cluster import DevCluster, default_dir

    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.controlplane.gateway_api",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="the dev cluster's state directory")
    parser.add_argument("--fetch-only", action="store_true", help="only fetch and cache the CRD files")
    args = parser.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.fetch_only:
        print(ensure_crds(say))
        return 0
    cluster = DevCluster(args.dir or default_dir(), log=say)
    if not cluster.running():
        say("the dev control plane is not running: `peakserve-dev up` first")
        return 1
    install_gateway_api(Kube.from_kubeconfig(cluster.kubeconfig), log=say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
