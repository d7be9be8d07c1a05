"""``make cluster-demo``: a 3-master Redis Cluster on loopback, two gateways, two workers
and the web app, until Ctrl-C (``python -m danmaku.dev.devcluster``)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from danmaku.dev.localcluster import LocalCluster


def demo(argv: list[str] | None = None) -> int:
    """``make cluster-demo``: a 3-master cluster, 2 gateways, 2 workers and the web app."""
    parser = argparse.ArgumentParser(
        prog="python -m danmaku.dev.devcluster", description=demo.__doc__
    )
    parser.add_argument("--dir", default=".danmaku/cluster", help="where the nodes keep data")
    parser.add_argument("--web-port", type=int, default=8080)
    parser.add_argument("--ws-ports", default="8081,8082", help="the two gateways' ports")
    parser.add_argument("--replicas", type=int, default=0, help="replicas per master")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    cluster = LocalCluster.start(base, replicas=args.replicas)
    env = dict(os.environ, REDIS_URL=cluster.url)
    env.setdefault("DANMAKU_SECRET", os.urandom(24).hex())
    ws = [int(p) for p in args.ws_ports.split(",")]
    exe = [sys.executable, "-m", "danmaku"]
    roles = [
        [
            *exe,
            "web",
            "--web-port",
            str(args.web_port),
            "--public-ws-url",
            f"ws://127.0.0.1:{ws[0]}",
        ],
        *([*exe, "gateway", "--ws-port", str(p), "--instance-id", f"gw{p}"] for p in ws),
        *([*exe, "worker", "--instance-id", f"worker{i}"] for i in (1, 2)),
    ]
    print(f"Redis Cluster: {cluster.url}  (nodes: {', '.join(map(str, cluster.ports))})")
    procs = [subprocess.Popen(cmd, env=env) for cmd in roles]
    print(f"web app: http://127.0.0.1:{args.web_port}/  gateways: {args.ws_ports}")
    print(f"tokens: REDIS_URL={cluster.url} DANMAKU_SECRET={env['DANMAKU_SECRET']} danmaku token")
    print("Ctrl-C stops everything.", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping the demo", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(demo())
