"""Gateway role: WebSocket viewers in, comments to Redis, frames out."""

from danmaku.gateway.server import Gateway

__all__ = ["Gateway"]
