"""Identity of the ModelDeployment that owns the rendered children."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import api
from . import names


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> "Owner":
        meta = body["metadata"]
        return cls(meta["name"], meta.get("namespace", "default"), meta.get("uid", ""))

    def metadata(self, child: str, extra_annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """metadata for a child: name, namespace, labels, the owner reference that makes deletion cascade."""
        return {
            "name": child,
            "namespace": self.namespace,
            "labels": names.common_labels(self.name),
            "annotations": {names.ANNOTATION_MD: self.name, **(extra_annotations or {})},
            "ownerReferences": [{
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": self.name,
                "uid": self.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        }
