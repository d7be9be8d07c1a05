"""The gateway's entry in the gateway registry (issue 25, room-affine routing).

``Announcer.run`` writes this gateway's public URL, connections, capacity and state to the
registry (``store.gateways``) at once and then every third of the registry TTL, so the
web app can route each room's viewers to the few gateways that hold the room. A gateway
that starts draining says so within half a second (it gets no new viewers; those it
closes ask the web app again and are sent to the next gateway of their room's order),
and on its way out (cancellation) it removes its entry. A gateway that is killed stops
refreshing and its entry expires after the TTL.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

import trio

from danmaku.config import Settings
from danmaku.rules.admission import IpAdmission
from danmaku.store.gateways import Announcement, Gateways
from danmaku.store.interfaces import GatewayStore
from danmaku.store.records import StoreError
from danmaku.supervise import LoopHealth

log = logging.getLogger(__name__)

POLL_S = 0.5  # how soon a change of state (draining) reaches the registry
REMOVE_TIMEOUT_S = 2.0  # the last write on the way out is bounded
# The supervised loops of a gateway: any of them failing makes it unhealthy (unrouted).
GATEWAY_LOOPS = frozenset({"frame_feed", "ingest", "read_poller", "presence", "pinger"})


def derived_url(settings: Settings, port: int) -> str:
    """This gateway's URL as clients reach it: ``gateway_public_url``; else
    ``public_ws_url`` when it names exactly one URL; else, when it names several, ``""``
    (which of them is this gateway is unknown: it stays out of the registry, and clients
    keep using those URLs); else the bound host and port (a wildcard bind is named by
    the host's name)."""
    if settings.gateway_public_url:
        return settings.gateway_public_url
    public = [u.strip() for u in settings.public_ws_url.split(",") if u.strip()]
    if len(public) == 1:
        return public[0]
    if public:
        return ""
    host = settings.ws_host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    scheme = "wss" if settings.tls_cert else "ws"
    return f"{scheme}://{host}:{port}/ws"


class Announced(Protocol):
    """What the announcer reads of a running ``Gateway`` (server.py)."""

    store: GatewayStore
    settings: Settings
    gateway_id: str
    port: int
    health: LoopHealth
    admission: IpAdmission

    @property
    def draining(self) -> bool: ...


class Announcer:
    """Keeps one gateway's registry entry fresh; ``status()`` says what to announce."""

    def __init__(
        self, registry: Gateways, ttl_s: float, status: Callable[[], Announcement]
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.status = status

    @classmethod
    def of(cls, gateway: Announced) -> Announcer:
        """The announcer of a running ``Gateway`` (its port is bound)."""
        url = derived_url(gateway.settings, gateway.port)

        def status() -> Announcement:
            failing = GATEWAY_LOOPS.intersection(gateway.health.failing())
            return Announcement(
                gateway.gateway_id,
                url,
                gateway.admission.total,
                gateway.admission.max_total,
                gateway.draining,
                not failing,
            )

        return cls(gateway.store.gateways, gateway.settings.gateway_registry_ttl_s, status)

    async def run(self) -> None:
        """Announce until cancelled, then remove the entry (bounded, shielded). A
        gateway without a URL of its own (``derived_url``) announces nothing."""
        first = self.status()
        if not first.url:
            log.warning(
                "gateway %s is not in the gateway registry: DANMAKU_PUBLIC_WS_URL names "
                "several URLs; set DANMAKU_GATEWAY_PUBLIC_URL to this gateway's own",
                first.gateway_id,
            )
            await trio.sleep_forever()
        gateway_id = first.gateway_id
        try:
            await self._loop()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(REMOVE_TIMEOUT_S):
                try:
                    await self.registry.remove(gateway_id)
                except StoreError as exc:  # it expires on its own after the TTL
                    log.info("could not remove gateway %s from the registry: %s", gateway_id, exc)

    async def _loop(self) -> None:
        refresh_s = self.ttl_s / 3
        last: Announcement | None = None
        due = trio.current_time()
        outage = False
        while True:
            now = trio.current_time()
            current = self.status()
            # The counts change all the time; a change of state is announced at once.
            changed = last is None or (current.draining, current.healthy) != (
                last.draining,
                last.healthy,
            )
            if changed or now >= due:
                # Redis down is not this loop's failure (the supervisor would mark the
                # gateway not ready until long after Redis is back): log the outage once
                # and try again at the next poll; the entry expires on its own meanwhile.
                try:
                    await self.registry.announce(current, self.ttl_s)
                except StoreError as exc:
                    if not outage:
                        log.warning("gateway registry: %s; retrying", exc)
                    outage = True
                else:
                    if outage:
                        log.warning("gateway registry: Redis answers again")
                    outage = False
                    last, due = current, now + refresh_s
            await trio.sleep(POLL_S)
