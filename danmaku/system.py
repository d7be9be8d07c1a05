"""Compose the roles into a running system (``danmaku up`` and the one-role commands).

``run_system`` is a trio service: ``system = await nursery.start(run_system, settings,
roles)`` returns a ``System`` with the bound addresses; ``await system.shutdown()`` drains
gracefully (flush comments, close viewers with 1013, release leases) and stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import trio

from danmaku import auth
from danmaku.config import Settings
from danmaku.dev.embedded import run_redis
from danmaku.gateway import Gateway
from danmaku.metrics import Metrics
from danmaku.startup import (
    StartupError,
    check_secret,
    create_secret_file,
    mask_url,
    private_dir,
    read_secret_file,
    starting,
)
from danmaku.store import Store
from danmaku.supervise import LoopHealth
from danmaku.web.app import create_app
from danmaku.web.autorecord import AutoRecorder
from danmaku.web.server import serve_app
from danmaku.webhooks import WebhookService
from danmaku.worker import BroadcastWorker

log = logging.getLogger(__name__)
ALL_ROLES = ("web", "gateway", "worker")


def resolve_secret(settings: Settings, *, create: bool) -> Settings:
    """Fill ``secret`` from ``DATA_DIR/secret`` if unset (creating it, 0600 in a 0700
    data dir, when ``create``), and check it: ``StartupError`` for a secret shorter than
    32 bytes, a missing file (``create=False``), or a file another user owns or may
    write (see ``danmaku.startup``)."""
    if settings.secret:
        check_secret(settings.secret)
        return settings
    path = Path(settings.data_dir) / "secret"
    if not create:
        if not path.exists():
            raise StartupError(f"DANMAKU_SECRET is not set and {path} does not exist")
        return settings.replace(secret=read_secret_file(path))
    private_dir(Path(settings.data_dir))
    if path.exists():
        return settings.replace(secret=read_secret_file(path))
    return settings.replace(secret=create_secret_file(path, auth.new_secret()))


@dataclass
class System:
    settings: Settings
    metrics: Metrics
    store: Store
    redis_url: str
    cancel_scope: trio.CancelScope
    # The process's supervised loops (one for every role): for /readyz and the gateway.
    health: LoopHealth
    gateway: Gateway | None = None
    worker: BroadcastWorker | None = None
    web_port: int | None = None
    ws_port: int | None = None
    urls: dict[str, str] = field(default_factory=dict)

    async def shutdown(self) -> None:
        """Graceful stop: drain the gateway, release leases, then cancel. Idempotent."""
        with trio.move_on_after(self.settings.drain_s + 3):
            if self.gateway is not None:
                await self.gateway.drain()
            if self.worker is not None:
                await self.worker.release_all()
        self.cancel_scope.cancel()


def public_ws_url(settings: Settings, port: int) -> str:
    if settings.public_ws_url:
        return settings.public_ws_url
    host = settings.ws_host if settings.ws_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    scheme = "wss" if settings.tls_cert else "ws"
    return f"{scheme}://{host}:{port}/ws"


async def run_system(
    settings: Settings,
    roles: Collection[str] = ALL_ROLES,
    *,
    metrics: Metrics | None = None,
    embedded_redis: bool = True,
    task_status: trio.TaskStatus[System] = trio.TASK_STATUS_IGNORED,
) -> None:
    metrics = metrics or Metrics()
    with trio.CancelScope() as scope:
        opened: Store | None = None
        try:
            async with trio.open_nursery() as nursery:
                url = settings.redis_url
                if not url:
                    if not embedded_redis:
                        raise StartupError("--redis-url / REDIS_URL is required for this role")
                    with starting("embedded Redis"):
                        data = private_dir(Path(settings.data_dir))
                        url = await nursery.start(run_redis, data / "redis")
                store = opened = Store(
                    url,
                    metrics,
                    frames_history=settings.frames_history,
                    stream_maxlen=settings.stream_maxlen,
                    nonce_ttl_s=settings.nonce_ttl_s,
                    replay_retention_s=int(settings.replay_retention_days * 86400),
                    notice_holders_cache_ms=settings.notice_holders_cache_ms,
                )
                await store.wait_ready()
                system = System(settings, metrics, store, url, scope, LoopHealth(metrics))
                if "gateway" in roles:
                    system.gateway = Gateway(
                        store,
                        settings,
                        metrics,
                        gateway_id=settings.instance_id or None,
                        health=system.health,
                    )
                    if settings.public_web_url:
                        system.gateway.allowed_origins.add(
                            settings.public_web_url.rstrip("/").lower()
                        )
                    with starting(f"WebSocket gateway on {settings.ws_host}:{settings.ws_port}"):
                        system.ws_port = await nursery.start(system.gateway.run)
                    system.urls["websocket"] = public_ws_url(settings, system.ws_port)
                if "worker" in roles:
                    system.worker = BroadcastWorker(
                        store.frames,
                        settings,
                        metrics,
                        worker_id=settings.instance_id or None,
                        health=system.health,
                    )
                    await nursery.start(system.worker.run)
                if "web" in roles:
                    ws_url = system.urls.get("websocket") or settings.public_ws_url or ""
                    app = create_app(
                        settings, store, metrics, ws_url=lambda: ws_url, health=system.health
                    )
                    with starting(f"web app on {settings.web_host}:{settings.web_port}"):
                        system.web_port = await nursery.start(
                            serve_app, app, settings.web_host, settings.web_port
                        )
                    base = f"http://{settings.web_host}:{system.web_port}"
                    if system.gateway is not None:
                        # Same-origin default: the player served by this web app may connect.
                        system.gateway.allowed_origins.add(base)
                        if settings.web_host == "127.0.0.1":
                            system.gateway.allowed_origins.add(
                                f"http://localhost:{system.web_port}"
                            )
                    system.urls.update(
                        player=f"{base}/?room=lobby",
                        console=f"{base}/console?room=lobby",
                        metrics=f"{base}/metrics",
                        api=f"{base}/api/docs",
                    )
                    # issue 24: one web process delivers webhooks (a lease), to the
                    # configured URLs and those registered through the API; one records
                    # rooms that set auto_record.
                    hooks = WebhookService(
                        store.platform,
                        store.webhook_endpoints,
                        settings,
                        metrics,
                        health=system.health,
                    )
                    await nursery.start(hooks.run)
                    recorder = AutoRecorder(store, settings, metrics, health=system.health)
                    await nursery.start(recorder.run)
                system.urls["redis"] = mask_url(url)  # printed: never the password
                task_status.started(system)
                await trio.sleep_forever()
        finally:
            # After every role has stopped: the worker gives its leases back through
            # the store on its way out.
            if opened is not None:
                opened.close()
