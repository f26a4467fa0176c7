"""OCI archives: an OCI image layout (oci-layout, index.json, blobs/sha256/...) in one plain tar.

``write_image`` assembles one from layers and a run configuration (``write_rootfs_image``: from one
directory, as one reproducible layer); ``archive_layout`` turns a layout
directory (buildah's ``push oci:DIR``) into an archive named for containerd; ``unpack`` applies an
archive's layers to a directory, honouring whiteouts, so that the image can be run from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import oci_image as oi
from .oci_layer import WHITEOUT_PREFIX, Layer, walk, write_layer

OPAQUE = WHITEOUT_PREFIX + WHITEOUT_PREFIX + ".opq"


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    name: str
    manifest_digest: str
    size: int           # bytes of the archive file
    unpacked_size: int  # bytes of the layers' uncompressed tars


def _blob_path(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return layout / "blobs" / algo / hexd


def _put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = oi.sha256_digest(data)
    path = _blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _link_blob(layout: Path, layer: Layer) -> None:
    dst = _blob_path(layout, layer.digest)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            os.link(layer.path, dst)  # layers are large: never copy what a link can share
        except OSError:
            shutil.copyfile(layer.path, dst)


def write_layout(layout: Path, layers: list[Layer], run: oi.RunConfig, history: list[str]) -> dict:
    """Write an image layout without index.json; returns the manifest's descriptor."""
    layout.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        _link_blob(layout, layer)
    config = oi.image_config(run, [l.diff_id for l in layers], history)
    cfg = _put_blob(layout, oi.canonical(config))
    man = oi.manifest(oi.descriptor(oi.MEDIA_CONFIG, cfg["digest"], cfg["size"]),
                      [oi.descriptor(oi.MEDIA_LAYER_GZIP, l.digest, l.size) for l in layers])
    m = _put_blob(layout, oi.canonical(man))
    return oi.descriptor(oi.MEDIA_MANIFEST, m["digest"], m["size"])


def archive_layout(layout: Path, out: Path, name: str, unpacked_size: int | None = None) -> ArchiveInfo:
    """Tar ``layout`` into ``out`` with an index.json naming its (single) manifest ``name``.

    ``unpacked_size``: the layers' uncompressed bytes when known (else the layers are read to count).
    """
    index_path = layout / "index.json"
    if index_path.exists():
        manifests = json.loads(index_path.read_text())["manifests"]
        if len(manifests) != 1:
            raise ValueError(f"{layout}: expected one manifest, found {len(manifests)}")
        desc = {k: v for k, v in manifests[0].items() if k != "annotations"}
    else:
        raise FileNotFoundError(index_path)
    desc["annotations"] = oi.name_annotations(name)
    # The platform lets an importer that filters by platform (ctr without --all-platforms) match it.
    man = json.loads(_blob_path(layout, desc["digest"]).read_bytes())
    config = json.loads(_blob_path(layout, man["config"]["digest"]).read_bytes())
    desc["platform"] = {"architecture": config["architecture"], "os": config["os"]}
    index_path.write_text(json.dumps(oi.index(desc), indent=1))
    (layout / "oci-layout").write_text(json.dumps(oi.LAYOUT_VERSION))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in ["oci-layout", "index.json"] + sorted(
                str(p.relative_to(layout)) for p in (layout / "blobs").rglob("*") if p.is_file()):
            info = tar.gettarinfo(layout / rel, arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(layout / rel, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, out)
    if unpacked_size is None:
        unpacked_size = sum(_unpacked_size(_blob_path(layout, l["digest"])) for l in man["layers"])
    return ArchiveInfo(out, name, desc["digest"], out.stat().st_size, unpacked_size)


def _unpacked_size(blob: Path) -> int:
    import gzip

    total = 0
    with gzip.open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
    return total


def write_image(layout: Path, out: Path, name: str, layers: list[Layer], run: oi.RunConfig,
                history: list[str]) -> ArchiveInfo:
    """Write layers + config as an OCI archive at ``out`` named ``name`` (``layout`` is scratch)."""
    shutil.rmtree(layout, ignore_errors=True)
    desc = write_layout(layout, layers, run, history)
    (layout / "index.json").write_text(json.dumps(oi.index(desc)))
    return archive_layout(layout, out, name, sum(l.unpacked_size for l in layers))


def write_rootfs_image(rootfs: Path, out: Path, name: str, run: oi.RunConfig, created_by: str) -> ArchiveInfo:
    """``rootfs`` as it is (nothing excluded) in one layer owned by root with mtime 0: the same
    directory content always gives the same manifest digest. Scratch goes beside ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmp:
        layer = write_layer(rootfs, walk(rootfs, exclude=()), Path(tmp) / "layer.tar.gz", normalize=True)
        return write_image(Path(tmp) / "layout", out, name, [layer], run, [created_by])


def read_manifest(archive: Path) -> tuple[dict, dict, dict]:
    """(index, manifest, config) of the archive's first image."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> dict:
            return json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))
        idx = json.load(tar.extractfile("index.json"))
        man = blob(idx["manifests"][0]["digest"])
        return idx, man, blob(man["config"]["digest"])


def _clear(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(fileobj, dest: Path) -> None:
    """Extract one layer (a gzip'd tar stream) over ``dest`` as a container runtime would."""
    trusted = getattr(tarfile, "fully_trusted_filter", None)  # keep owners, modes, devices as written
    with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
        for member in tar:
            name = os.path.normpath(member.name.lstrip("/"))
            if name.startswith(".."):
                raise ValueError(f"layer entry outside the root: {member.name}")
            head, tail = os.path.split(name)
            if tail == OPAQUE:
                for entry in os.listdir(dest / head) if (dest / head).is_dir() else []:
                    _clear(str(dest / head / entry))
                continue
            if tail.startswith(WHITEOUT_PREFIX):
                _clear(str(dest / head / tail[len(WHITEOUT_PREFIX):]))
                continue
            target = dest / name
            # Never write through what a lower layer left at this path (a link, or a file now a dir).
            if os.path.lexists(target) and not (member.isdir() and target.is_dir()
                                                and not target.is_symlink()):
                _clear(str(target))
            member.name = name
            if trusted:
                tar.extract(member, dest, numeric_owner=True, filter=trusted)
            else:
                tar.extract(member, dest, numeric_owner=True)


def unpack(archive: Path, dest: Path) -> dict:
    """Apply the archive's layers, in order, to ``dest``; returns the image config."""
    dest.mkdir(parents=True, exist_ok=True)
    _, man, config = read_manifest(archive)
    with tarfile.open(archive) as tar:
        for layer in man["layers"]:
            with tar.extractfile("blobs/" + layer["digest"].replace(":", "/")) as f:
                apply_layer(f, dest)
    return config
