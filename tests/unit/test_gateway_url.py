"""The URL a gateway announces in the registry (gateway/announce.py, ``derived_url``)."""

from __future__ import annotations

import socket

import pytest

from danmaku.config import Settings
from danmaku.gateway.announce import derived_url


def test_the_explicit_url_wins() -> None:
    s = Settings(gateway_public_url="wss://gw-7.example/ws", public_ws_url="wss://lb/ws")
    assert derived_url(s, 8081) == "wss://gw-7.example/ws"


def test_one_public_url_is_this_gateway_and_several_are_nobodys() -> None:
    assert derived_url(Settings(public_ws_url=" wss://lb.example/ws "), 8081) == (
        "wss://lb.example/ws"
    )
    # Which of several is this gateway cannot be known: it stays out of the registry.
    assert derived_url(Settings(public_ws_url="ws://a/ws, ws://b/ws"), 8081) == ""


def test_otherwise_the_bound_address() -> None:
    assert derived_url(Settings(ws_host="10.0.0.7"), 9001) == "ws://10.0.0.7:9001/ws"
    assert derived_url(Settings(ws_host="::1"), 9001) == "ws://[::1]:9001/ws"
    host = socket.gethostname()
    assert derived_url(Settings(ws_host="0.0.0.0"), 9001) == f"ws://{host}:9001/ws"


def test_a_gateway_public_url_must_be_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="DANMAKU_GATEWAY_PUBLIC_URL"):
        Settings(gateway_public_url="http://gw/ws")
    with pytest.raises(ValueError, match="DANMAKU_ROOM_SHARE"):
        Settings(room_share=0)
