"""The one Kubernetes client of peakserve: server-side apply, get, list, delete, merge patch.

Server-side apply is sent as raw PATCH requests (application/apply-patch+yaml; JSON is YAML), so every
object peakserve writes goes through one code path with a named field manager. This module imports no
other part of peakserve but the API constants: rendering and deciding never reach the cluster.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterator

from kubernetes import client

from .. import api

# kind -> plural, for the kinds peakserve (and its dev harness) reads or writes.
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Node": "nodes",
    "Event": "events",
    "Namespace": "namespaces",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Job": "jobs",
    "ScaledObject": "scaledobjects",
    "HTTPRoute": "httproutes",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PersistentVolume": "persistentvolumes",
    "CustomResourceDefinition": "customresourcedefinitions",
    "APIService": "apiservices",
    "Lease": "leases",
    api.KIND: api.PLURAL,
}
# Kinds that live outside namespaces.
CLUSTER_SCOPED = {"Node", "Namespace", "PersistentVolume", "CustomResourceDefinition", "APIService"}

ApiException = client.ApiException
# Ask a list for metadata only (the server drops spec and status before sending).
PARTIAL_METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"


class NotLeading(RuntimeError):
    """A write refused because this replica no longer holds the leader Lease (runtime/leader.py)."""


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """REST path of a kind; namespace None lists a namespaced kind across all namespaces."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scoped = namespace and kind not in CLUSTER_SCOPED
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}" if scoped else f"{base}/{PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


# A character outside the Basic Multilingual Plane, as json.dumps escapes it: a surrogate pair, \ud83d\ude00.
# (The lookbehind skips an escaped backslash followed by the text "ud83d".)
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def apply_body(obj: Any) -> str:
    """An apply-patch+yaml body: JSON, which is YAML but for one thing. YAML refuses a surrogate-pair escape
    (the API server answers "found invalid Unicode character escape code"); it spells the character \\U0001f600."""
    def yaml_escape(m: re.Match) -> str:
        point = 0x10000 + ((int(m.group(2), 16) - 0xD800) << 10) + (int(m.group(3), 16) - 0xDC00)
        return f"{m.group(1)}\\U{point:08x}"
    return _SURROGATE_PAIR.sub(yaml_escape, json.dumps(obj))


def error_message(err: ApiException) -> str:
    """The API server's own words for a rejected request (Status.message)."""
    try:
        return json.loads(err.body).get("message") or str(err.reason)
    except (TypeError, ValueError):
        return f"{err.status} {err.reason}"


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None):
        self.client = api_client or client.ApiClient()
        # With leader election: False once the Lease is not renewed in time. Every write passes through
        # `call`, so a replica that lost the Lease writes nothing more, whichever thread tries.
        self.may_write: Callable[[], bool] = lambda: True

    @classmethod
    def from_kubeconfig(cls, path: Any = None) -> "Kube":
        """The given kubeconfig, else in-cluster config, else $KUBECONFIG / ~/.kube/config."""
        from kubernetes import config

        cfg = client.Configuration()
        # More connections than handler threads (16), so threads never queue for a socket.
        cfg.connection_pool_maxsize = 32
        if path is None:
            try:
                config.load_incluster_config(client_configuration=cfg)
                return cls(client.ApiClient(cfg))
            except config.ConfigException:
                pass
        config.load_kube_config(config_file=str(path) if path else None, client_configuration=cfg)
        return cls(client.ApiClient(cfg))

    def call(self, method: str, path: str, body: Any = None, query: list | None = None,
              content_type: str = "application/json", accept: str = "application/json") -> Any:
        if method != "GET" and not self.may_write():
            raise NotLeading(f"{method} {path} refused: this replica no longer holds the leader Lease")
        method, url, headers, body, post = self.client.param_serialize(
            method, path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": accept},
            auth_settings=["BearerToken"])
        resp = self.client.call_api(method, url, header_params=headers, body=body, post_params=post,
                                    _request_timeout=30)
        resp.read()
        if not 200 <= resp.status < 300:
            raise ApiException(http_resp=resp)
        return json.loads(resp.data) if resp.data else {}

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", path, body=obj)

    def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: with metadata.resourceVersion set, 409 when the object changed since it was read."""
        return self.call("PUT", path, body=obj)

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False, manager: str = api.FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply with `manager` owning the fields it sends (force: peakserve's fields are its own)."""
        meta = obj["metadata"]
        query = [("fieldManager", manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self.call("PATCH", path, body=apply_body(obj), query=query, content_type="application/apply-patch+yaml")

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None,
             label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        query += [("fieldSelector", field_selector)] if field_selector else []
        result = self.call("GET", resource_path(api_version, kind, namespace), query=query)
        return result.get("items", [])

    def list_metadata(self, api_version: str, kind: str, namespace: str | None,
                      page: int = 500) -> Iterator[dict[str, Any]]:
        """The metadata of every object of a kind, a page at a time (PartialObjectMetadataList: no spec, no
        status), so that walking all of them holds one page in memory, not every body."""
        query: list = [("limit", page)]
        while True:
            result = self.call("GET", resource_path(api_version, kind, namespace), query=query,
                               accept=f"{PARTIAL_METADATA_LIST},application/json")
            for item in result.get("items", []):
                yield item["metadata"]
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return
            query = [("limit", page), ("continue", token)]

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        try:
            self.call("DELETE", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status != 404:
                raise

    def merge_patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return self.call("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def serves(self, group_version: str) -> bool:
        """Whether the API server serves this group/version (discovery; no RBAC needed)."""
        try:
            self.call("GET", f"/apis/{group_version}")
            return True
        except ApiException as err:
            if err.status in (404, 503):
                return False
            raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.merge_patch(api.API_VERSION, api.KIND, namespace, name, {"status": status}, "status")
