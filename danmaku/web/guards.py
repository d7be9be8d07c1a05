"""ASGI middleware that holds the web app against hostile requests.

* ``ErrorBoundary`` (outermost): each request is its own boundary. An exception from a
  handler becomes a JSON 500 (``{"detail": "internal error"}``, nothing of the exception
  shown), a ``StoreError`` a JSON 503 with ``Retry-After``; either is logged once at
  warning level (method, route template, client address) and counted, and the app goes
  on serving. It also puts the client's address (``rules.clientip``: the socket's peer,
  or what a trusted proxy says) into ``scope["client"]``, so everything inside sees the
  client rather than the proxy, and counts every response by route and status class.
* ``validation_error``: the 422 for a request that fails its schema, whatever its bytes;
* ``StrictJSON``: a JSON body must be strict JSON (orjson's reading: UTF-8, no lone
  surrogate escapes such as ``"\\ud800"``, no ``NaN``, integers within 64 bits), else
  422 before any handler runs. Python's ``json`` accepts all of those, and a lone
  surrogate then fails deep inside (Redis' encoder, orjson) as a 500;
* ``BodyLimit``: request bodies over a size are refused with 413 before they are read
  whole (by ``Content-Length`` when given, else by counting the chunks as they come);
* ``SecurityHeaders``: every response says ``nosniff``, no referrer, no framing; HTML
  pages get a Content-Security-Policy that forbids inline and foreign scripts, so text
  that somehow reached the DOM as HTML still could not run.

No CORS middleware is installed: cross-origin browser calls to the API are refused by
the browser (closed by default).
"""

from __future__ import annotations

import email.message
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from danmaku.rules.clientip import IPNetwork, client_ip
from danmaku.store import StoreError

Scope = dict[str, Any]
Message = dict[str, Any]

# The one Content-Security-Policy of every HTML page (the pages carry no <meta> copy).
# media-src and connect-src allow http(s) anywhere: a room's stream is often on a CDN, and
# hls.js fetches its playlists and segments with XHR; worker-src blob: is hls.js' worker.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob: https: http:; "
    "connect-src 'self' ws: wss: https: http:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


log = logging.getLogger("danmaku.web")
RETRY_AFTER_S = 1  # a Redis failover or a blip: worth trying again at once


def route_of(scope: Scope) -> str:
    """The matched route's template (``/api/rooms/{room}/bans``), never the raw path:
    room names and ids must not become metric labels or fill logs."""
    return str(getattr(scope.get("route"), "path", None) or "unmatched")


def _one_line(text: str) -> str:
    """An exception's text may quote client input: one log line, whatever it holds."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _only_store_errors(exc: BaseException) -> bool:
    """A ``StoreError``, or a group of nothing else (task groups wrap what they catch)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_store_errors(e) for e in exc.exceptions)
    return isinstance(exc, StoreError)


class ErrorBoundary:
    """One request's failure ends that request only (see the module docstring).

    ``count(route, status)`` is called once per answered request with the status sent
    (499 when the client went away while its body was read)."""

    def __init__(
        self,
        app: Any,
        *,
        count: Callable[[str, int], None],
        trusted: Sequence[IPNetwork] = (),
        header: str = "x-forwarded-for",
    ) -> None:
        self.app = app
        self.count = count
        self.trusted = tuple(trusted)
        self.header = header

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client") or ("", 0)
        host = client_ip(str(peer[0]), scope.get("headers", ()), self.trusted, header=self.header)
        scope["client"] = (host, peer[1])
        status = 0

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # The client left while its body was being read: no one to answer, no bug.
            status = status or 499
        except Exception as exc:  # the boundary: nothing gets past a request
            storage = _only_store_errors(exc)
            log.warning(
                "%s %s from %s failed%s: %s",
                scope.get("method", "?"),
                route_of(scope),
                host,
                " (storage unavailable)" if storage else "",
                _one_line(f"{type(exc).__name__}: {exc}")[:500],
                exc_info=not storage,  # a bug: the traceback, in the log only
            )
            if status == 0:
                # Not started: answer. Started: nothing to do but let the server close it
                # (the status class already counted is the one the client saw).
                status = 503 if storage else 500
                await _answer_failure(send, status)
        finally:
            if status:  # 0: cancelled (shutting down) before any answer
                self.count(route_of(scope), status)


async def _answer_failure(send: Any, status: int) -> None:
    detail = "storage unavailable" if status == 503 else "internal error"
    body = orjson.dumps({"detail": detail, "status": status})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_COMMON,
    ]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception as exc:  # the client is gone: nothing left to tell it
        log.debug("could not send the %d: %s", status, exc)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a request that fails its schema, made safe for any input: the
    stock handler echoes the input and fails (a 500) when the body is not UTF-8 or a
    string holds a lone surrogate. Same shape: ``{"detail": [errors]}``."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = jsonable_encoder(errors, custom_encoder={bytes: _text, bytearray: _text})
    # ensure_ascii: a lone surrogate is written as its \\u escape, not encoded (it cannot be)
    body = json.dumps({"detail": detail}, ensure_ascii=True, default=str).encode()
    return Response(body, status_code=422, media_type="application/json")


def _is_json(scope: Scope) -> bool:
    """FastAPI reads the body as JSON: the content type is application/json or +json."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            message = email.message.Message()
            message["content-type"] = value.decode("latin-1")
            subtype = message.get_content_subtype()
            return message.get_content_maintype() == "application" and (
                subtype == "json" or subtype.endswith("+json")
            )
    return False


class StrictJSON:
    """See the module docstring. Sits inside ``BodyLimit``: the body it holds is bounded."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: no one to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body:
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                await _send_json(
                    send,
                    422,
                    {
                        "detail": [
                            {
                                "type": "json_invalid",
                                "loc": ["body"],
                                "msg": f"the body is not strict JSON: {exc}"[:300],
                            }
                        ]
                    },
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                after: Message = await receive()  # after the body: wait for a disconnect
                return after
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _send_json(send: Any, status: int, content: Any) -> None:
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_COMMON,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            too_big = not value.isdigit() or int(value) > self.max_bytes
            if name == b"content-length" and too_big:
                await _refuse(send, self.max_bytes)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, self.max_bytes)


async def _refuse(send: Any, limit: int) -> None:
    body = orjson.dumps({"detail": f"request body over {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_COMMON,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in _COMMON if h[0] not in names]
                ctype = dict(headers).get(b"content-type", b"")
                if ctype.startswith(b"text/html"):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)
