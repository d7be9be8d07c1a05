"""danmaku: a live-stream bullet-comment broadcast system.

Roles (one folder each): ``gateway`` (WebSocket viewers in, frames out), ``worker``
(merges a room's comments into timed frames), ``web`` (HTTP: player, console, API),
``store`` (the only module that talks to Redis), ``rules`` (pure decision classes).
"""

__version__ = "0.1.0"
