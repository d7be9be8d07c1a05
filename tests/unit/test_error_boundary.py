"""ErrorBoundary (danmaku/web/guards.py) as an ASGI middleware: the failures no route of
the app provokes on purpose (a StoreError a handler did not expect, one wrapped in an
exception group, a failure after the answer started, a client gone mid-body) each end
their request only, with the answer and count the docs promise."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import orjson
import pytest
import trio
from starlette.requests import ClientDisconnect

from danmaku.store import StoreError
from danmaku.web.guards import ErrorBoundary

Message = dict[str, Any]


async def call(
    app: Any, *, client: tuple[str, int] = ("127.0.0.1", 5000), headers: Any = ()
) -> tuple[list[Message], list[tuple[str, int]], dict[str, Any]]:
    """One request through ``ErrorBoundary(app)``: what was sent, what was counted, and
    the scope the app saw."""
    sent: list[Message] = []
    counted: list[tuple[str, int]] = []
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await app(scope, receive, send)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    boundary = ErrorBoundary(
        inner,
        count=lambda route, status: counted.append((route, status)),
        trusted=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": list(headers),
        "client": client,
    }
    await boundary(scope, receive, send)
    return sent, counted, seen


def answer(sent: list[Message]) -> tuple[int, dict[bytes, bytes], Any]:
    start, body = sent
    return start["status"], dict(start["headers"]), orjson.loads(body["body"])


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (RuntimeError("secret internals"), 500, "internal error"),
        (StoreError("get: connection refused"), 503, "storage unavailable"),
        (
            ExceptionGroup("task group", [StoreError("a"), StoreError("b")]),
            503,
            "storage unavailable",
        ),
        (ExceptionGroup("task group", [StoreError("a"), KeyError("b")]), 500, "internal error"),
    ],
)
async def test_a_failing_handler_gets_a_json_answer_and_is_counted(
    error: Exception, status: int, detail: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = type("Route", (), {"path": "/api/rooms/{room}"})()
        raise error

    sent, counted, _ = await call(app)
    got, headers, body = answer(sent)
    assert (got, body) == (status, {"detail": detail, "status": status})
    assert headers[b"content-type"] == b"application/json"
    assert (b"retry-after" in headers) == (status == 503)
    assert counted == [("/api/rooms/{room}", status)]


async def test_a_failure_after_the_answer_started_is_counted_as_what_was_sent() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("mid-stream")

    sent, counted, _ = await call(app)
    assert [m["type"] for m in sent] == ["http.response.start"]  # no second start
    assert counted == [("unmatched", 200)]


async def test_a_client_gone_mid_body_is_not_an_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ClientDisconnect

    sent, counted, _ = await call(app)
    assert sent == [] and counted == [("unmatched", 499)]


async def test_cancellation_is_not_caught() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await call(app)
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("10.1.1.1", "203.0.113.9"), ("198.51.100.1", "198.51.100.1")],
)
async def test_the_app_sees_the_client_address(peer: str, expected: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    _, _, seen = await call(
        app, client=(peer, 4000), headers=[(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]
    )
    assert seen["client"] == (expected, 4000)


async def test_the_failure_is_logged_once_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("bad input 'x\nWARNING forged line'")

    caplog.set_level(logging.DEBUG, logger="danmaku.web")
    await call(app, client=("10.2.2.2", 1), headers=[(b"x-forwarded-for", b"203.0.113.4")])
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "GET unmatched from 203.0.113.4 failed: ValueError: bad input 'x\\nWARNING forged line'"
    )
