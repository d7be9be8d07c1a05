"""A Redis Cluster on loopback, for ``make cluster-demo`` and the tests.

``LocalCluster.start`` runs N master ``redis-server`` processes (Redis 7 with
``cluster-enabled``; AOF on, ``appendfsync everysec``), optionally R replicas per
master, joins them with ``redis-cli --cluster create`` and waits until every node says
``cluster_state:ok`` and every replica is in sync. Nothing leaves the machine.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from danmaku.dev.embedded import find_redis_server, free_port, spawn_redis


def free_node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class LocalCluster:
    """Processes of a loopback cluster. ``stop()`` (idempotent) terminates them all."""

    base_dir: Path
    binary: str
    node_timeout_ms: int
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        base_dir: Path | str,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        binary: str | None = None,
        timeout_s: float = 30.0,
    ) -> LocalCluster:
        """Start and join the nodes; raise ``RuntimeError`` (after stopping them) if the
        cluster is not ok within ``timeout_s``."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found (Debian: apt-get install redis-tools)")
        cluster = cls(Path(base_dir), binary or find_redis_server(), node_timeout_ms)
        try:
            ports = [cluster.spawn(free_node_port()) for _ in range(masters * (1 + replicas))]
            create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=timeout_s)
            cluster.wait_ok(timeout_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def ports(self) -> list[int]:
        return sorted(self.procs)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL danmaku takes (every node a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def spawn(self, port: int) -> int:
        """Start (or restart, keeping its data and nodes.conf) the node on ``port``; return
        when it answers."""
        data = self.base_dir / str(port)
        data.mkdir(parents=True, exist_ok=True)
        self.procs[port], _ = spawn_redis(
            data,
            port=port,
            binary=self.binary,
            extra=(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--repl-diskless-sync-delay",  # replicas in sync at once, not after 5 s
                "0",
            ),
        )
        return port

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash: nothing flushed beyond the last fsync)."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def wait_ok(self, timeout_s: float) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and every replica
        has synced with its master (a replica that never synced cannot take over)."""
        deadline = time.monotonic() + timeout_s
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            with self.client(port) as client:
                while True:
                    try:
                        ok = client.cluster("info")["cluster_state"] == "ok"
                        repl = client.info("replication")
                        if ok and repl.get("master_link_status", "up") == "up":
                            break
                    except redis.RedisError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {port} is not ok in {timeout_s}s")
                    time.sleep(0.1)

    def master_port(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot now."""
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            with self.client(port) as client:
                slot = int(client.cluster("keyslot", key))
                for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(master[1])
        raise RuntimeError(f"no live node knows the master of {key!r}")

    def move_slot(self, key: str, dst_port: int) -> None:
        """Reshard ``key``'s slot (with its keys) to the master on ``dst_port``, the way
        ``redis-cli --cluster reshard`` does: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE."""
        src_port = self.master_port(key)
        if src_port == dst_port:
            return
        with self.client(src_port) as src, self.client(dst_port) as dst:
            slot = int(src.cluster("keyslot", key))
            src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while names := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", dst_port, "", 0, 5000, "KEYS", *names)
            for port, proc in self.procs.items():
                if proc.poll() is None:
                    with self.client(port) as node:
                        if node.execute_command("ROLE")[0] == b"master":
                            node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
