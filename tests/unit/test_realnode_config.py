"""The real node's rendered configuration keeps the fixes for the traps met on these machines."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tomllib
from pathlib import Path

from peakserve_harness.realnode import config
from peakserve_harness.realnode.layout import CNI_BRIDGE, NODE_TAINT, POD_SUBNET, NodeLayout
from peakserve_harness.images.oci_archive import write_rootfs_image
from peakserve_harness.images.oci_image import RunConfig

LAYOUT = NodeLayout(Path("/state/real-node"), name="real-0", node_ip="10.213.0.1", pause_version="v1")


def _containerd() -> dict:
    return tomllib.loads(config.containerd_toml(LAYOUT, "/usr/sbin/runc", Path("/cache/cni")))


def test_containerd_clamps_oom_score_adj_and_keeps_state_to_itself():
    cfg = _containerd()
    runtime = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    # root without CAP_SYS_RESOURCE cannot lower oom_score_adj: runc fails without this.
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    assert cfg["version"] == 3
    assert cfg["root"].startswith("/state/real-node/") and cfg["state"].startswith("/state/real-node/")
    assert cfg["grpc"]["address"] == "/state/real-node/containerd/containerd.sock"
    assert runtime["cni"] == {"bin_dirs": ["/cache/cni"], "conf_dir": "/state/real-node/cni/net.d"}


def test_containerd_runs_runc_by_path_with_cgroupfs_and_the_imported_pause_image():
    cfg = _containerd()
    runc = cfg["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == LAYOUT.sandbox_image == "peakserve.local/pause:v1"
    assert images["snapshotter"] == "overlayfs"
    assert cfg["plugins"]["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"


def test_containerd_falls_back_to_the_native_snapshotter():
    cfg = tomllib.loads(config.containerd_toml(LAYOUT, "/usr/sbin/runc", Path("/c"), snapshotter="native"))
    assert cfg["plugins"]["io.containerd.cri.v1.images"]["snapshotter"] == "native"


def test_kubelet_config_matches_this_host():
    cfg = json.loads(config.kubelet_config(LAYOUT))
    assert cfg["kind"] == "KubeletConfiguration"
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["failSwapOn"] is False
    # Served only on the node's private /32, to the dev apiserver, which has no client certificate.
    assert cfg["address"] == cfg["healthzBindAddress"] == "10.213.0.1"
    assert cfg["readOnlyPort"] == 0
    assert cfg["authentication"]["anonymous"]["enabled"] is True
    assert cfg["authorization"]["mode"] == "AlwaysAllow"
    assert cfg["containerRuntimeEndpoint"] == "unix:///state/real-node/containerd/containerd.sock"
    assert cfg["resolvConf"] == "/state/real-node/resolv.conf"
    assert cfg["podLogsDir"] == "/state/real-node/pod-logs"
    assert all(v in ("1%", "50Mi") for v in cfg["evictionHard"].values())
    assert cfg["imageGCHighThresholdPercent"] == 100
    assert cfg["registerWithTaints"] == [{"key": NODE_TAINT[0], "value": NODE_TAINT[1], "effect": "NoSchedule"}]


def test_kubelet_args_name_the_node_its_ip_and_label():
    args = config.kubelet_args(LAYOUT, {"peakserve.io/real-node": "true"})
    assert "--node-ip=10.213.0.1" in args
    assert "--hostname-override=real-0" in args
    assert "--node-labels=peakserve.io/real-node=true" in args
    assert "--root-dir=/state/real-node/kubelet" in args


def test_cni_bridge_is_private_and_never_masquerades():
    conf = json.loads(config.cni_conflist(LAYOUT))
    bridge, portmap = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == CNI_BRIDGE and bridge["isGateway"] is True
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == POD_SUBNET
    assert bridge["ipam"]["dataDir"] == "/state/real-node/cni/ipam"
    assert portmap["type"] == "portmap" and portmap["capabilities"] == {"portMappings": True}


def test_node_network_is_private_and_not_loopback():
    assert LAYOUT.node_ip.startswith("10.213.") and POD_SUBNET.startswith("10.214.")
    assert len(CNI_BRIDGE) <= 15  # Linux interface names


def test_kubeconfig_uses_the_node_client_certificate():
    kc = json.loads(config.kubeconfig("https://127.0.0.1:6443", b"CA", Path("/p/c.crt"), Path("/p/c.key"),
                                      "system:node:real-0"))
    assert kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert kc["users"][0] == {"name": "system:node:real-0",
                              "user": {"client-certificate": "/p/c.crt", "client-key": "/p/c.key"}}


def test_oci_archive_is_importable_shape(tmp_path):
    """The pause and busybox images: one reproducible layer, named for ``ctr images import``."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "pause").write_bytes(b"\x7fELF")
    (rootfs / "pause").chmod(0o755)
    run = RunConfig(entrypoint=("/pause",), user="65535:65535")
    info = write_rootfs_image(rootfs, tmp_path / "img.tar", "peakserve.local/pause:v1", run, "test")
    digest = info.manifest_digest
    with tarfile.open(info.path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "peakserve.local/pause:v1"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = json.loads(files[f"blobs/sha256/{digest[7:]}"])
    cfg = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"]
    # diff_ids name the uncompressed layer: containerd refuses the image otherwise.
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]
    assert cfg["config"]["Entrypoint"] == ["/pause"] and cfg["config"]["User"] == "65535:65535"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as inner:
        (member,) = inner.getmembers()
        assert (member.name, member.uid, member.mtime, member.mode & 0o777) == ("pause", 0, 0, 0o755)
    # Deterministic: the same root filesystem gives the same image, whenever its files were touched.
    os.utime(rootfs / "pause", (12345, 12345))
    again = write_rootfs_image(rootfs, tmp_path / "again.tar", "peakserve.local/pause:v1", run, "test")
    assert again.manifest_digest == digest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".oci-")]  # scratch removed


def test_kubernetes_service_dnat_only_rewrites_pod_traffic_to_the_forwarder():
    from peakserve_harness.realnode import service_proxy, teardown

    rules = service_proxy.dnat_rules(("10.214.0.1", 6443))
    assert rules[0] == ["-N", "PSRN-SERVICES"]
    assert rules[1] == ["-A", "PSRN-SERVICES", "-d", "10.96.0.1/32", "-p", "tcp", "--dport", "443",
                        "-j", "DNAT", "--to-destination", "10.214.0.1:6443"]
    assert rules[2] == ["-A", "PREROUTING", "-s", POD_SUBNET, "-j", "PSRN-SERVICES"]
    # A crashed run's chain is found and removed by the generic teardown too.
    assert "PSRN-SERVICES".startswith(teardown.CHAIN_PREFIXES)


def test_service_forwarder_copies_both_ways_and_never_binds_all_addresses():
    import asyncio
    import socket
    import threading

    import pytest

    from peakserve_harness.realnode import service_proxy

    with pytest.raises(SystemExit):
        service_proxy.main(["--listen=0.0.0.0:1", "--to=127.0.0.1:2"])

    echo = socket.create_server(("127.0.0.1", 0))
    def serve_echo():
        conn, _ = echo.accept()
        with conn:
            conn.sendall(b"echo:" + conn.recv(100))
    threading.Thread(target=serve_echo, daemon=True).start()
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    loop = asyncio.new_event_loop()
    task = loop.create_task(service_proxy._serve(("127.0.0.1", port), echo.getsockname()))
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        for _ in range(50):
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                threading.Event().wait(0.05)
        with client:
            client.sendall(b"hi")
            assert client.recv(100) == b"echo:hi"
    finally:
        loop.call_soon_threadsafe(task.cancel)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=10)
        # Let the cancelled server and its pipes finish on this loop before closing it: a coroutine left
        # pending would be collected later, closing its writer on a closed loop. (gather() of nothing asks
        # for the thread's current loop, which an earlier test may have unset: only gather what is left.)
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        echo.close()
