"""Serve the web app with Hypercorn's trio worker, as a trio service."""

from __future__ import annotations

import logging

import trio
from fastapi import FastAPI
from hypercorn.config import Config
from hypercorn.trio import serve


async def serve_app(
    app: FastAPI,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; ``task_status.started(port)`` with the bound port."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # A plain logger: hypercorn adds no handler of its own, so its lines go through the
    # process's logging setup once (with "-" they were printed twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0

    async def started_hook(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, mode="asgi", task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started_hook)
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
