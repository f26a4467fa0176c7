"""One real worker node beside the KWOK nodes: kubelet + containerd + runc + CNI on this host.

KWOK nodes run nothing; pods bound to the real node run as real containers, with real probes, logs
and cgroup limits. It needs root, runc, iptables and a writable cgroup v1 (see host_packages).
Start it with ``peakserve-dev up --real-node`` or :class:`.node.RealNode`.
"""
