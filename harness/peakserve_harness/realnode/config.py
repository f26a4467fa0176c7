"""Pure renderers of the real node's configuration files: containerd, CNI, kubelet, kubeconfig.

Each setting that differs from upstream defaults is there because of a trap met on these machines
(see shared notes, "Real containers without Docker"); tests/unit/test_realnode_config.py pins them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .layout import CNI_BRIDGE, KUBELET_PORT, NODE_TAINT, POD_GATEWAY, POD_SUBNET, NodeLayout


def containerd_toml(layout: NodeLayout, runc: str, cni_bin: Path, snapshotter: str = "overlayfs") -> str:
    """containerd's config (version 3): state, socket and CNI dirs of its own, runc by absolute path."""
    return f"""version = 3
# No drop-ins from /etc/containerd/conf.d: this containerd is configured by this file alone.
imports = []
root = '{layout.containerd_root}'
state = '{layout.containerd_state}'

[grpc]
  address = '{layout.containerd_socket}'

[ttrpc]
  address = '{layout.containerd_socket}.ttrpc'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{layout.root / "containerd" / "opt"}'

  # NRI would open a socket under /var/run/nri; nothing here uses it.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = '{snapshotter}'

    # No registry is reachable: the pause image is built here and imported under this name.
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{layout.sandbox_image}'

  [plugins.'io.containerd.cri.v1.runtime']
    # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj makes runc fail with
    # "can't get final child's PID from pipe: EOF". Clamp to containerd's own score instead.
    restrict_oom_score_adj = true
    # Network namespaces under our state dir, not /var/run/netns, so teardown finds them all.
    netns_mounts_under_state_dir = true

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'

        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          # The kubelet uses cgroupfs (no systemd here); both must agree.
          SystemdCgroup = false

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{layout.cni_conf_dir}'

  [plugins.'io.containerd.grpc.v1.cri']
    # exec, attach and port-forward stream through here; the kubelet proxies to it.
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""


def cni_conflist(layout: NodeLayout) -> str:
    """bridge + host-local on a private bridge, and portmap for hostPort; containerd adds loopback itself.

    No masquerading: pods have nowhere to go but this machine, and no NAT rule is left behind.
    """
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "peakserve-real-node",
        "plugins": [
            {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(layout.cni_ipam_dir),
                      "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def kubelet_config(layout: NodeLayout) -> str:
    """KubeletConfiguration (JSON is YAML): serving on the node's private address only."""
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": layout.node_ip,
        "healthzPort": 10248,
        # The dev apiserver has no kubelet client certificate: anonymous with AlwaysAllow, reachable
        # only on this machine's private address, is how it reaches logs and exec.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # No systemd here; must match containerd's SystemdCgroup = false.
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "clusterDomain": "cluster.local",
        "maxPods": 30,
        # A dev disk is often fuller than the default 10-15% thresholds allow: never evict for it.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        # Images cannot be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        # Only pods that tolerate this land here: their images must have been imported into containerd.
        "registerWithTaints": [{"key": NODE_TAINT[0], "value": NODE_TAINT[1], "effect": "NoSchedule"}],
        # No tlsCertFile: the kubelet signs its own serving certificate into --cert-dir, and the dev
        # apiserver does not verify it (no --kubelet-certificate-authority).
    }, indent=2)


def kubelet_args(layout: NodeLayout, node_labels: dict[str, str]) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(node_labels.items()))
    return [f"--config={layout.kubelet_config}", f"--kubeconfig={layout.kubelet_kubeconfig}",
            f"--root-dir={layout.kubelet_root}", f"--cert-dir={layout.pki}",
            f"--hostname-override={layout.name}", f"--node-ip={layout.node_ip}",
            f"--node-labels={labels}", "--v=2"]


def kubeconfig(server: str, ca_crt: bytes, client_crt: Path, client_key: Path, user: str) -> str:
    """The kubelet's kubeconfig: a client certificate for system:node:<name>, signed by the cluster CA."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "real-node",
        "clusters": [{"name": "dev", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_crt).decode()}}],
        "users": [{"name": user, "user": {"client-certificate": str(client_crt), "client-key": str(client_key)}}],
        "contexts": [{"name": "real-node", "context": {"cluster": "dev", "user": user}}],
    }, indent=2)


def resolv_conf() -> str:
    # Pods get no DNS server (there is no cluster DNS and no network); the kubelet needs a file to copy.
    return "nameserver 127.0.0.1\noptions ndots:1\n"
