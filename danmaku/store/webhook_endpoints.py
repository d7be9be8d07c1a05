"""Webhook endpoints registered through the API (issue 24: "settings file or API").

One hash, ``dm:webhooks:endpoints``: endpoint id -> JSON ``{id, url, events, secret,
description, created_ms}``. The secret is kept as given (the delivering process signs
with it), so read access to Redis is read access to the secrets, as for everything
else there. Adding is bounded in one step (a script: the count is checked where the
entry is written), so concurrent registrations never pass the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from danmaku.store import keys
from danmaku.store.core import StoreCore
from danmaku.store.platform import WEBHOOK_CURSORS

ENDPOINTS = f"{keys.PREFIX}:webhooks:endpoints"  # hash: endpoint id -> its JSON

# KEYS[1] = the endpoints hash; ARGV[1] = id, ARGV[2] = JSON, ARGV[3] = most endpoints.
# Returns 1 (added) or 0 (full).
ADD = r"""
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

Call = Callable[..., Any]


class WebhookEndpoints:
    """The registry of webhook endpoints. ``call`` is the store's thread bridge."""

    def __init__(self, core: StoreCore) -> None:
        self._r = core.r
        self._call = core.call
        self._m = core.metrics
        self._add = core.register(ADD)

    async def all(self) -> list[dict[str, Any]]:
        """Every registered endpoint (secrets included), oldest first."""
        raw: Any = await self._call("webhook_endpoints", lambda: self._r.hgetall(ENDPOINTS))
        out = []
        for value in raw.values():
            try:
                entry = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                out.append(entry)
        out.sort(key=lambda e: (int(e.get("created_ms", 0)), str(e.get("id", ""))))
        return out

    async def add(self, endpoint: Mapping[str, Any], most: int) -> bool:
        """Register ``endpoint`` (its ``id`` new, its ``created_ms`` now); ``False`` when
        ``most`` are registered. Where the webhook reader has never read, it will start
        at ``created_ms`` (``_start`` of its cursors), so what is recorded from the
        registration on is owed to the endpoint even before the reader sees it."""
        body = orjson.dumps(dict(endpoint))

        def run() -> bool:
            if not int(self._add(keys=[ENDPOINTS], args=[endpoint["id"], body, most])):
                return False
            self._r.hsetnx(WEBHOOK_CURSORS, "_start", int(endpoint["created_ms"]))
            return True

        done: bool = await self._call("set_webhook_endpoints", run)
        return done

    async def remove(self, endpoint_id: str) -> bool:
        """Forget an endpoint; ``False`` when there was none by that id."""
        n = await self._call("set_webhook_endpoints", lambda: self._r.hdel(ENDPOINTS, endpoint_id))
        return bool(n)
