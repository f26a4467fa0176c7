"""Where the real node keeps everything, and its network: one value shared by config, node and teardown.

All of it lives under one directory (the dev cluster's ``real-node/``), except what the kubelet
writes to fixed host paths (HOST_PATHS), which teardown removes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A private network only this machine sees: the node's /32 sits on a bridge of its own (dummy links are
# refused here) and pods get addresses on the CNI bridge. Neither is routed anywhere.
NODE_BRIDGE = "psrn-node0"
NODE_IP = "10.213.0.1"
CNI_BRIDGE = "psrn-cni0"
POD_SUBNET = "10.214.0.0/24"
POD_GATEWAY = "10.214.0.1"
KUBELET_PORT = 10250
# Where the forwarder for the `kubernetes` Service listens (on POD_GATEWAY; see service_proxy.py).
APISERVER_PROXY_PORT = 6443

NODE_NAME = "real-0"
NODE_LABEL = ("peakserve.io/real-node", "true")
# Pods must tolerate this to land on the real node (their images must be imported there first).
NODE_TAINT = ("peakserve.io/real-node", "true")
SANDBOX_IMAGE = "peakserve.local/pause:{version}"

# Paths the kubelet (or the CNI library) writes no matter its flags; teardown removes what start created.
# Deepest first: /var/lib/kubelet is there only to hold device-plugins. /run/containerd holds the
# shims' sockets and runc's state whatever containerd's own state dir is.
HOST_PATHS = ("/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers", "/var/lib/cni",
              "/run/containerd")


@dataclass(frozen=True)
class NodeLayout:
    root: Path
    name: str = NODE_NAME
    node_ip: str = NODE_IP
    pause_version: str = "v1"

    @property
    def sandbox_image(self) -> str:
        return SANDBOX_IMAGE.format(version=self.pause_version)

    # containerd
    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    # CNI
    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    # kubelet
    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"
