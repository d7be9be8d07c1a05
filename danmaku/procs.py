"""``danmaku gateway --processes N``: N gateway processes on one port under one parent.

A gateway is one trio thread: one process uses one core. To use every core of a host on
one public port, the parent runs N children (``danmaku gateway`` with
``DANMAKU_REUSE_PORT=1``); each opens the WebSocket port with ``SO_REUSEPORT`` and the
kernel spreads new connections over them (a hash of the connection's addresses). The
parent first binds the port itself (bound, never listening: it takes no connections),
so ``--ws-port 0`` is resolved once for all and a port another program holds is one
start-up error, not N.

The parent:

* restarts a child that dies after a backoff (``Restarts``, pure: it takes ``now``);
  a child that fails on its very first start is a start-up error of the whole command
  (its one line, exit 2): restarting a misconfiguration forever helps nobody;
* forwards SIGTERM/SIGINT to every child as SIGTERM (each drains: stops taking comments,
  flushes, closes its viewers with 1013), waits ``drain_s`` + 5 s, then kills;
* starts the children in their own session (a terminal's Ctrl-C reaches the parent only,
  which forwards it once); each child watches its parent (``watch_parent``) and drains
  and stops if the parent was killed outright.

``/metrics``: one port per child (``--metrics-port P``: child i serves P + i; 0: each
picks a free one, printed as ``metrics-i``). Chosen over prometheus-client's
multiprocess mode because the children are independent processes that come and go:
multiprocess mode needs a shared directory of mmap files cleaned when a child dies,
loses the ``process_*`` collectors (CPU, RSS, file descriptors per child), needs a
merge mode chosen per gauge (``danmaku_connections_open`` summed, loop lag maxed, ...),
and one slow child's files would be read by whoever serves the merge. Per-child
targets keep every family per process (a stuck child is visible as one), and
Prometheus sums them (``sum by (instance)`` over the host's targets) for free.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields

import trio

from danmaku.config import Settings
from danmaku.startup import StartupError, one_line
from danmaku.supervise import Backoff

log = logging.getLogger(__name__)
PARENT_ENV = "DANMAKU_PROCESSES_PARENT"  # set for a child: its parent's pid (watch_parent)
STOP_GRACE_S = 5.0  # beyond drain_s, before a child that did not stop is killed


def process_count(requested: int) -> int:
    """``requested`` processes, or one per core this process may run on for 0."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Restarts:
    """What the parent does when a child exits (pure: every call takes ``now``).

    Each slot (child number) has its own ``Backoff``: 0.5 s doubling to 30 s, back to
    0.5 s once a child has run 10 s. A slot whose first child exits before it was ready
    is a start-up failure: ``exited`` says ``None`` and the group stops."""

    def __init__(
        self, slots: int, backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0, 10.0)
    ) -> None:
        self._backoff = [backoff() for _ in range(slots)]
        self._ever_ready = [False] * slots
        self.restarts = [0] * slots

    def started(self, slot: int, now: float) -> None:
        self._backoff[slot].started(now)

    def ready(self, slot: int) -> None:
        self._ever_ready[slot] = True

    def exited(self, slot: int, now: float) -> float | None:
        """Seconds to wait before starting ``slot`` again, or ``None``: give up (its
        first start failed)."""
        if not self._ever_ready[slot]:
            return None
        self.restarts[slot] += 1
        return self._backoff[slot].failed(now)


def child_metrics_port(base: int, index: int) -> int:
    """The ``/metrics`` port of child ``index``: off (-1) and any (0) stay as they are."""
    return base if base <= 0 else base + index


def child_env(
    settings: Settings, port: int, index: int, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of child ``index``: every setting as its ``DANMAKU_*`` variable
    (the parent resolved flags, environment and defaults once), one process each,
    ``SO_REUSEPORT`` on the shared ``port``. A set ``instance_id`` becomes ``ID-index``
    per child: the id names a gateway's presence reports and registry entry in Redis,
    so children sharing one would overwrite each other's."""
    env = dict(os.environ if base is None else base)
    child = settings.replace(
        processes=1,
        reuse_port=1,
        ws_port=port,
        metrics_port=child_metrics_port(settings.metrics_port, index),
        instance_id=f"{settings.instance_id}-{index}" if settings.instance_id else "",
    )
    for f in fields(Settings):
        env[f.metadata["env"]] = str(getattr(child, f.name))
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_ENV] = str(os.getpid())
    return env


def orphaned(parent_pid: int) -> bool:
    """Has the parent that started this child gone (the child was re-parented)?

    Not ``PR_SET_PDEATHSIG``: it fires when the *thread* that forked the child ends, and
    trio forks from a worker thread that ends after a few idle seconds, which stopped
    every child ~10 s after it started."""
    return os.getppid() != parent_pid


async def watch_parent(parent_pid: int, on_orphaned: Callable[[], Awaitable[None]]) -> None:
    """In a child: once a second, check the parent is alive; if not, ``on_orphaned()``
    (a graceful drain), so a parent killed outright does not leave its children
    serving."""
    while True:  # polled: the kernel offers no event for "my parent died" here
        await trio.sleep(1.0)
        if orphaned(parent_pid):
            break
    log.warning("the parent process %d is gone: draining and stopping", parent_pid)
    await on_orphaned()


@dataclass
class Child:
    """One running child: its slot, process, printed URLs and last stderr line."""

    slot: int
    proc: trio.Process
    urls: dict[str, str] = field(default_factory=dict)
    last_error: str = ""


class GatewayGroup:
    """N ``danmaku gateway`` children on ``port`` (a trio service: ``run``), restarted
    when they die, stopped with ``stop``. ``children`` holds the live ones by slot."""

    def __init__(
        self, settings: Settings, count: int, port: int, *, log_level: str = "INFO"
    ) -> None:
        self.settings = settings
        self.count = count
        self.port = port
        self.log_level = log_level
        self.restarts = Restarts(count)
        self.children: dict[int, Child] = {}
        self.stopping = False
        self._done = trio.Event()
        self._running = 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "danmaku", "gateway", "--log-level", self.log_level]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child and wait until each printed ``ready`` (``StartupError`` with
        the child's own line if one cannot start); then keep them running."""
        async with trio.open_nursery() as nursery:
            for slot in range(self.count):
                await nursery.start(self._slot, slot)
            task_status.started()

    async def _slot(self, slot: int, task_status: trio.TaskStatus[None]) -> None:
        self._running += 1
        try:
            await self._keep(slot, task_status)
        finally:
            self._running -= 1
            if self._running == 0:
                self._done.set()

    async def _keep(self, slot: int, task_status: trio.TaskStatus[None]) -> None:
        first = True
        while not self.stopping:
            proc = await trio.lowlevel.open_process(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(self.settings, self.port, slot),
                start_new_session=True,
            )
            child = Child(slot, proc)
            self.restarts.started(slot, trio.current_time())
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump_stderr, child)
                    if await self._read_ready(child):
                        self.children[slot] = child
                        self.restarts.ready(slot)
                        if first:
                            first = False
                            task_status.started()
                        else:
                            print(self.describe(child, "restarted"), flush=True)
                        nursery.start_soon(self._drain_stdout, child)
                    code = await proc.wait()
            finally:
                self.children.pop(slot, None)
                if proc.returncode is None:  # cancelled: never leave a child behind
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
            if self.stopping:
                return
            delay = self.restarts.exited(slot, trio.current_time())
            why = child.last_error.removeprefix("danmaku: ") or f"exited with code {code}"
            if delay is None:
                raise StartupError(f"gateway process {slot}: {why}")
            log.warning(
                "gateway process %d (pid %d) exited with code %s; restarting in %.1f s",
                slot,
                proc.pid,
                code,
                delay,
            )
            await trio.sleep(delay)

    def describe(self, child: Child, what: str = "started") -> str:
        metrics = child.urls.get("metrics")
        extra = f", metrics {metrics}" if metrics else ""
        return f"gateway {child.slot}: {what} (pid {child.proc.pid}{extra})"

    async def _read_ready(self, child: Child) -> bool:
        """Collect the child's ``name: url`` lines until ``ready`` (True) or EOF."""
        stream = child.proc.stdout
        assert stream is not None
        buf = b""
        while True:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return False
            buf += chunk
            *lines, rest = buf.split(b"\n")
            buf = rest
            for raw in lines:
                name, sep, value = raw.decode(errors="replace").strip().partition(": ")
                if name == "ready":
                    return True
                if sep:
                    child.urls[name] = value

    async def _drain_stdout(self, child: Child) -> None:
        stream = child.proc.stdout
        assert stream is not None
        while await stream.receive_some(4096):
            pass

    async def _pump_stderr(self, child: Child) -> None:
        """Forward the child's stderr (its log) to ours; keep its last line."""
        stream = child.proc.stderr
        assert stream is not None
        buf = b""
        while chunk := await stream.receive_some(4096):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace")
                if text.strip():
                    child.last_error = one_line(text)
                sys.stderr.write(text + "\n")
            sys.stderr.flush()

    async def stop(self) -> None:
        """Graceful stop: SIGTERM to every child (each drains), wait ``drain_s`` +
        ``STOP_GRACE_S``, kill what is left. Idempotent."""
        self.stopping = True
        for child in list(self.children.values()):
            if child.proc.returncode is None:
                child.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.settings.drain_s + STOP_GRACE_S):
            if self._running:
                await self._done.wait()
        for child in list(self.children.values()):
            if child.proc.returncode is None:
                child.proc.kill()

    def pids(self) -> Sequence[int]:
        return [c.proc.pid for _, c in sorted(self.children.items())]
