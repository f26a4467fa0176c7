"""The pure parts of the image builder (harness/peakserve_harness/images): OCI documents, layers and
their diffs, archives, the Dockerfile variant, the sandbox script, and the Triton image's contract
with the rendered Triton container. Nothing here builds or runs an image."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from peakserve_harness.images import dockerfile, oci_archive, oci_image, oci_layer, sandbox

REPO = Path(__file__).resolve().parents[2]


# --- OCI documents ------------------------------------------------------------------------------

def test_run_config_maps_dockerfile_instructions_to_oci_keys():
    run = oci_image.RunConfig(env=("A=1",), entrypoint=("/e",), cmd=("run",), workdir="/tmp",
                              user="65532:65532", exposed_ports=("8080/tcp",), labels={"k": "v"})
    assert run.to_oci() == {"User": "65532:65532", "ExposedPorts": {"8080/tcp": {}}, "Env": ["A=1"],
                            "Entrypoint": ["/e"], "Cmd": ["run"], "WorkingDir": "/tmp", "Labels": {"k": "v"}}
    assert oci_image.RunConfig().to_oci() == {}


def test_image_config_lists_layers_in_order_with_one_history_entry_each():
    cfg = oci_image.image_config(oci_image.RunConfig(cmd=("x",)), ["sha256:a", "sha256:b"], ["base", "app"])
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": ["sha256:a", "sha256:b"]}
    assert [h["created_by"] for h in cfg["history"]] == ["base", "app"]
    assert (cfg["os"], cfg["architecture"]) == ("linux", "amd64")
    with pytest.raises(ValueError):
        oci_image.image_config(oci_image.RunConfig(), ["sha256:a"], [])


def test_canonical_json_is_stable_and_digest_matches_bytes():
    a = oci_image.canonical({"b": 1, "a": [1, 2]})
    assert a == oci_image.canonical({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'
    assert oci_image.sha256_digest(a) == "sha256:" + hashlib.sha256(a).hexdigest()


def test_index_names_the_image_for_containerd():
    desc = oci_image.descriptor(oci_image.MEDIA_MANIFEST, "sha256:m", 10, oci_image.name_annotations("r/x:1"))
    idx = oci_image.index(desc)
    (m,) = idx["manifests"]
    assert m["annotations"][oci_image.ANNOTATION_CONTAINERD_NAME] == "r/x:1"
    assert m["annotations"][oci_image.ANNOTATION_REF_NAME] == "r/x:1"
    assert idx["mediaType"] == oci_image.MEDIA_INDEX and idx["schemaVersion"] == 2


def test_env_with_path_prepends_like_dockerfile_env():
    assert oci_image.env_with_path(["PATH=/usr/bin", "A=1"], "/opt/x/bin") == ["PATH=/opt/x/bin:/usr/bin", "A=1"]
    assert oci_image.env_with_path(["A=1"], "/opt/x/bin") == ["A=1", "PATH=/opt/x/bin"]


# --- layers ---------------------------------------------------------------------------------------

def _tree(root: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    for rel, target in (links or {}).items():
        os.symlink(target, root / rel)
    return root


def test_walk_puts_directories_before_their_contents_and_skips_runtime_dirs(tmp_path):
    root = _tree(tmp_path / "r", {"b/x": "", "a": "", "dev/null": "", "proc/1": ""})
    assert oci_layer.walk(root) == ["a", "b", "b/x", "dev", "proc"]
    assert oci_layer.excluded("dev/null", ["dev/*"]) and not oci_layer.excluded("dev", ["dev/*"])
    assert not oci_layer.excluded("devices", ["dev/*"])


def test_diff_has_changes_with_parents_and_whiteouts_for_removals(tmp_path):
    base = _tree(tmp_path / "base", {"etc/passwd": "root", "usr/lib/a": "a", "old/dir/f": "f", "gone": "g"})
    new = _tree(tmp_path / "new", {"etc/passwd": "root\nuser", "usr/lib/a": "a", "opt/t/bin/x": "x"},
                {"usr/lib/l": "a"})
    added, removed = oci_layer.diff(base, new)
    assert added == ["etc", "etc/passwd", "opt", "opt/t", "opt/t/bin", "opt/t/bin/x", "usr", "usr/lib",
                     "usr/lib/l"]
    assert removed == ["gone", "old"]  # only the topmost removed path
    assert oci_layer.whiteout_name("old") == ".wh.old"
    assert oci_layer.whiteout_name("usr/lib/a") == "usr/lib/.wh.a"


def test_layer_digests_are_of_the_blob_and_of_the_uncompressed_tar(tmp_path):
    root = _tree(tmp_path / "r", {"a/b": "hello"})
    layer = oci_layer.write_layer(root, oci_layer.walk(root), tmp_path / "l.tar.gz", whiteouts=["gone"])
    blob = layer.path.read_bytes()
    raw = gzip.decompress(blob)
    assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and layer.size == len(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest() and layer.unpacked_size == len(raw)
    with tarfile.open(layer.path) as tar:
        assert tar.getnames() == [".wh.gone", "a", "a/b"]
        assert all(m.uname == "" and m.gname == "" for m in tar.getmembers())
    again = oci_layer.write_layer(root, oci_layer.walk(root), tmp_path / "again.tar.gz", whiteouts=["gone"])
    assert again.digest == layer.digest  # reproducible: no timestamps or names in the gzip header
    assert oci_layer.Layer.from_json(layer.to_json()) == layer


# --- archives ---------------------------------------------------------------------------------------

def test_archive_round_trip_applies_a_diff_layer_with_whiteouts(tmp_path):
    base = _tree(tmp_path / "base", {"etc/passwd": "root", "old/f": "f", "keep": "k"}, {"link": "keep"})
    new = _tree(tmp_path / "new", {"etc/passwd": "root\nuser", "keep": "k", "link": "now a file"})
    l1 = oci_layer.write_layer(base, oci_layer.walk(base), tmp_path / "1.tar.gz")
    added, removed = oci_layer.diff(base, new)
    l2 = oci_layer.write_layer(new, added, tmp_path / "2.tar.gz", whiteouts=removed)
    run = oci_image.RunConfig(cmd=("sh",), user="1000:1000")
    info = oci_archive.write_image(tmp_path / "layout", tmp_path / "img.tar", "localhost/t:1", [l1, l2], run,
                                   ["base", "change"])
    assert info.unpacked_size == l1.unpacked_size + l2.unpacked_size and info.size == info.path.stat().st_size
    with tarfile.open(info.path) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    idx, man, cfg = oci_archive.read_manifest(info.path)
    assert idx["manifests"][0]["annotations"]["io.containerd.image.name"] == "localhost/t:1"
    assert idx["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert [l["digest"] for l in man["layers"]] == [l1.digest, l2.digest]
    assert all(l["mediaType"] == oci_image.MEDIA_LAYER_GZIP for l in man["layers"])
    assert cfg["rootfs"]["diff_ids"] == [l1.diff_id, l2.diff_id] and cfg["config"]["User"] == "1000:1000"
    out = tmp_path / "out"
    oci_archive.unpack(info.path, out)
    assert sorted(oci_layer.walk(out)) == ["etc", "etc/passwd", "keep", "link"]
    assert (out / "etc/passwd").read_text() == "root\nuser"
    assert not (out / "link").is_symlink() and (out / "link").read_text() == "now a file"
    assert (out / "keep").read_text() == "k"  # never written through the replaced link


def test_unpack_refuses_entries_outside_the_root(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info)
    with open(evil, "rb") as f, pytest.raises(ValueError):
        oci_archive.apply_layer(f, tmp_path / "root")


# --- the Dockerfile variant ----------------------------------------------------------------------------

def test_operator_dockerfile_variant_differs_only_in_its_base():
    text = (REPO / "images" / "operator" / "Dockerfile").read_text()
    variant = dockerfile.rebase(text, "localhost/peakserve/debian-python:3.11-x")
    assert dockerfile.external_bases(text) == ["python:3.11-slim-bookworm"] * 2
    assert dockerfile.external_bases(variant) == ["localhost/peakserve/debian-python:3.11-x"] * 2
    changed = dockerfile.changed_lines(text, variant)
    assert len(changed) == 2
    for old, new in changed:
        assert old.replace("python:3.11-slim-bookworm", "localhost/peakserve/debian-python:3.11-x") == new
    assert "COPY --from=builder /opt/venv /opt/venv" in variant


def test_rebase_keeps_stage_references_and_rejects_mixed_bases():
    text = "FROM a:1 AS builder\nRUN x\nFROM builder AS second\nFROM --platform=linux/amd64 a:1\n"
    assert dockerfile.external_bases(text) == ["a:1", "a:1"]
    assert dockerfile.rebase(text, "b:2") == \
        "FROM b:2 AS builder\nRUN x\nFROM builder AS second\nFROM --platform=linux/amd64 b:2\n"
    with pytest.raises(dockerfile.DockerfileError):
        dockerfile.rebase("FROM a:1 AS x\nFROM c:3\n", "b:2")
    with pytest.raises(dockerfile.DockerfileError):
        dockerfile.rebase("RUN x\n", "b:2")


# --- the sandbox ------------------------------------------------------------------------------------

def test_sandbox_script_runs_as_the_user_on_a_read_only_root(tmp_path):
    spec = sandbox.Spec(tmp_path / "rootfs", ["tritonserver", "--model-repository=/models"], 1000, 1000,
                        env=["PATH=/opt/tritonserver/bin:/usr/bin"], workdir="/opt/tritonserver",
                        binds={"/models": (tmp_path / "models", True)})
    text = sandbox.script(spec, Path("/mnt/r"))
    lines = text.splitlines()
    assert lines.index("mount -o remount,bind,ro /mnt/r") < lines.index("mount -t proc proc /mnt/r/proc")
    assert f"mount --bind {tmp_path}/models /mnt/r/models" in lines
    assert "mount -o remount,bind,ro /mnt/r/models" in lines
    assert "mount -t tmpfs -o mode=1777 tmpfs /mnt/r/tmp" in lines
    assert lines[-1] == ("exec chroot --userspec=1000:1000 /mnt/r /usr/bin/env -i -C /opt/tritonserver "
                         "PATH=/opt/tritonserver/bin:/usr/bin tritonserver --model-repository=/models")
    probing = sandbox.script(spec, Path("/mnt/r"), then=["probe"], log=Path("/tmp/log"))
    assert "probe" in probing.splitlines() and "kill $pid 2>/dev/null" in probing  # the server is stopped
    assert probing.splitlines()[-1] == "exit $rc"  # the probe decides
    writable = sandbox.script(sandbox.Spec(tmp_path, ["x"], 0, 0, read_only=False), Path("/m"))
    assert "remount,bind,ro /m\n" not in writable


# --- the Triton image's contract with the rendered container --------------------------------------------

def test_triton_image_satisfies_the_rendered_triton_container():
    from peakserve_harness.images import triton_image, verify

    container, pod_security, config, _ = verify.rendered_triton()
    run = triton_image.RUN_CONFIG
    assert container["command"] == ["tritonserver"]
    path = next(e for e in run.env if e.startswith("PATH=")).split("=", 1)[1].split(":")
    assert path[0] == "/opt/tritonserver/bin"  # where the command is found
    assert {f"{p['containerPort']}/tcp" for p in container["ports"]} == set(run.exposed_ports)
    assert run.user == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    assert "PYTHONDONTWRITEBYTECODE=1" in run.env  # read-only root filesystem
    # No --backend-directory in the args: Triton's default is where the image puts its backends.
    assert not any(a.startswith("--backend-directory") for a in container["args"])
    assert 'platform: "onnxruntime_onnx"' in config  # served by the image's backends/onnxruntime/model.py


def test_base_key_is_stable_and_names_the_suite():
    from peakserve_harness.images import debian_base

    assert debian_base.key() == debian_base.key()
    assert debian_base.key().startswith("bookworm-minbase-")
    assert {"python3", "python3-venv", "python3-pip"} <= set(debian_base.PACKAGES)
    assert debian_base.LINKS == {"usr/local/bin/python": "/usr/bin/python3", "usr/local/bin/pip": "/usr/bin/pip3"}


def test_slim_removes_docs_and_translations_but_keeps_copyright_files(tmp_path):
    from peakserve_harness.images import debian_base

    root = _tree(tmp_path / "r", {"usr/share/doc/pkg/copyright": "c", "usr/share/doc/pkg/changelog.gz": "x",
                                  "usr/share/man/man1/ls.1.gz": "m", "usr/share/locale/de/LC_MESSAGES/a.mo": "t",
                                  "usr/share/locale/locale.alias": "a", "usr/bin/python3": "p"},
                 {"usr/share/doc/alias": "pkg"})
    assert debian_base.slim(root) == 4
    assert sorted(oci_layer.walk(root)) == ["usr", "usr/bin", "usr/bin/python3", "usr/share", "usr/share/doc",
                                            "usr/share/doc/pkg", "usr/share/doc/pkg/copyright",
                                            "usr/share/locale", "usr/share/locale/locale.alias",
                                            "usr/share/man"]  # the top directories stay, as with dpkg
    config = debian_base.dpkg_slim_config()
    assert "path-exclude /usr/share/doc/*\n" in config and "path-include /usr/share/doc/*/copyright\n" in config


def test_operator_cache_key_follows_what_the_build_reads(tmp_path):
    from types import SimpleNamespace

    from peakserve_harness.images import operator_cache

    repo = tmp_path / "repo"
    (repo / "images" / "operator").mkdir(parents=True)
    (repo / "images" / "operator" / "Dockerfile").write_text("FROM x\n")
    (repo / "operator" / "peakserve").mkdir(parents=True)
    (repo / "operator" / "peakserve" / "a.py").write_text("A = 1\n")
    (repo / "pyproject.toml").write_text("[project]\n")
    (repo / "README.md").write_text("hi\n")
    base = SimpleNamespace(key="k1")
    key = operator_cache.content_key(repo, base)
    # Bytecode and files outside the build context do not count (.dockerignore keeps them out).
    (repo / "operator" / "peakserve" / "__pycache__").mkdir()
    (repo / "operator" / "peakserve" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (repo / "tests").mkdir()
    (repo / "tests" / "t.py").write_text("")
    assert operator_cache.content_key(repo, base) == key
    # The operator's code, the Dockerfile and the base all do.
    (repo / "operator" / "peakserve" / "a.py").write_text("A = 2\n")
    changed = operator_cache.content_key(repo, base)
    assert changed != key
    (repo / "images" / "operator" / "Dockerfile").write_text("FROM y\n")
    assert operator_cache.content_key(repo, base) != changed
    assert operator_cache.content_key(repo, SimpleNamespace(key="k2")) != operator_cache.content_key(repo, base)
