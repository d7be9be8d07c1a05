"""A TCP proxy on loopback that a test can pause or cut: network faults between a danmaku
process and Redis without any traffic leaving the machine."""

from __future__ import annotations

import trio


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target_port``. ``pause()`` stops moving bytes
    both ways (a stalled link: connections stay open), ``resume()`` moves them again,
    ``cut()`` closes every current connection (a reset link; new ones are accepted).

    Run with ``port = await nursery.start(proxy.run)``; cancelling it closes everything.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._flowing = trio.Event()
        self._flowing.set()
        self._links: set[trio.CancelScope] = set()
        self.connections = 0

    def pause(self) -> None:
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        for link in self._links:
            link.cancel()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        link = trio.CancelScope()
        self._links.add(link)
        try:
            with link:
                server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server)
                    nursery.start_soon(self._pump, server, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # a peer went away: the link is gone, as a real one would be
        finally:
            self._links.discard(link)
            await trio.aclose_forcefully(client)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        while True:
            data = await src.receive_some(65536)
            if not data:
                break
            await self._flowing.wait()
            await dst.send_all(data)
        await dst.send_eof()
