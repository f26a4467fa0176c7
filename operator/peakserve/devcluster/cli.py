"""`peakserve dev up|down|status|env`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cluster import DevCluster
from .tools import ensure_tools


def main(args: argparse.Namespace) -> int:
    cluster = DevCluster(Path(args.dir) if args.dir else None,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.action == "up":
        cluster.up()
    elif args.action == "down":
        cluster.down()
    elif args.action == "status":
        print(f"running at {cluster.server}" if cluster.running() else "not running")
        return 0 if cluster.running() else 1
    elif args.action == "env":
        tools = ensure_tools(lambda m: print(m, file=sys.stderr))
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={tools['kubectl'].parent}:$PATH")
    return 0
