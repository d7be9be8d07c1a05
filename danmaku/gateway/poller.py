"""``ReadPoller``: one task reads every fast connection's socket, instead of one reader
task per connection waking for each read.

A sender's connection is read by trio-websocket's reader task: per read, trio registers
the socket with its epoll (an ``epoll_ctl``), parks the task, and on readiness
reschedules it, runs it, and the task loops through wsproto's (empty) event list before
it reads. For small messages that machinery cost about as much as handling the message
(a quarter of a gateway's CPU under pipelined senders, measured with py-spy). Here the
sockets of connections whose ``FastInbound`` still parses for itself stay registered,
level-triggered, in one epoll set of our own, which one task waits on (its file
descriptor is readable when any of theirs is). On readiness it reads each socket and
feeds the bytes to the connection's ``FastInbound``, whose sink handles the messages,
all synchronously: no registration, no task switch, per read.

Each connection's reader task stays parked meanwhile, in ``WaitFirstStream.receive_some``
(``wait``). It is woken, and the connection leaves the poller for good, when what arrives
needs the reader: bytes wsproto must parse (a ping, a close, a fragment... from that
frame's first byte, ``FastInbound.take``), the end of the stream, an error; or when the
stream is closed under it, or the poller stops (then it goes back to reading for itself).
Who closes: nothing here closes a socket; ``forget`` (from the stream's ``aclose``)
removes one before it is closed.
"""

from __future__ import annotations

import contextlib
import logging
import select
from typing import Any

import outcome
import trio

from danmaku.gateway.fastpath import WaitFirstStream, stream_error

log = logging.getLogger(__name__)
READ_BYTES = 65536
EVENTS_PER_POLL = 512


class ReadPoller:
    """The fast connections' reading, for one gateway. ``run`` it in the nursery that
    outlives the connections (``await nursery.start(poller.run)``)."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None  # while running
        self._parked: dict[int, WaitFirstStream] = {}  # fd -> stream whose reader waits

    def __len__(self) -> int:
        """Readers parked here now."""
        return len(self._parked)

    async def wait(self, stream: WaitFirstStream) -> bytes | None:
        """Park the calling reader task until its connection needs it: returns bytes for
        wsproto, ``b""`` at the end of the stream, or ``None`` (read for yourself again:
        the poller stopped, or the connection is no longer fast); raises
        ``ClosedResourceError`` or ``BrokenResourceError`` as trio's streams do.
        Cancel-safe: a cancelled wait leaves the poller."""
        fd = stream.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("this socket was already closed")
        if self._epoll is None or fd in self._parked:
            return None
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._parked[fd] = stream
        stream.parked_fd = fd
        stream.reader = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._leave(fd, stream)
            return trio.lowlevel.Abort.SUCCEEDED

        result: bytes | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def forget(self, stream: WaitFirstStream, exc: BaseException) -> None:
        """The stream is about to close: its parked reader gets ``exc``. Idempotent."""
        if stream.reader is not None:
            self._wake(stream, outcome.Error(exc))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read ready sockets until cancelled; then every parked reader reads for itself.
        Runs once at a time (a second ``run`` while one runs raises ``RuntimeError``)."""
        if self._epoll is not None:
            raise RuntimeError("this ReadPoller is already running")
        epoll = self._epoll = select.epoll()
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0, EVENTS_PER_POLL):
                    stream = self._parked.get(fd)
                    if stream is not None:
                        self._read(stream)
        finally:
            for stream in list(self._parked.values()):
                self._wake(stream, outcome.Value(None))
            self._epoll = None
            epoll.close()

    def _read(self, stream: WaitFirstStream) -> None:
        try:
            data = stream.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return  # woken without data after all
        except OSError as exc:
            self._wake(stream, outcome.Error(stream_error(exc)))
            return
        if not data:
            self._wake(stream, outcome.Value(b""))
            return
        inbound = stream.inbound
        assert inbound is not None
        try:
            rest = inbound.take(data)
        except Exception as exc:  # the sink must not raise; if it does, only this one ends
            log.exception("reading a connection failed")
            self._wake(stream, outcome.Error(trio.BrokenResourceError(repr(exc))))
            return
        if rest is not None or not inbound.fast:
            self._wake(stream, outcome.Value(rest))

    def _wake(self, stream: WaitFirstStream, result: outcome.Outcome[Any]) -> None:
        task = stream.reader
        self._leave(stream.parked_fd, stream)
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    def _leave(self, fd: int, stream: WaitFirstStream) -> None:
        if self._parked.get(fd) is stream:
            del self._parked[fd]
            if self._epoll is not None:  # (the kernel may have dropped it: socket closed)
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        stream.reader = None
