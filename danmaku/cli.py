"""The ``danmaku`` command: ``up``, ``gateway``, ``worker``, ``web``, ``token``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from danmaku import auth, config
from danmaku.config import Settings
from danmaku.metrics import Metrics
from danmaku.procs import PARENT_ENV, watch_parent
from danmaku.startup import (
    MIN_SECRET_BYTES,
    StartupError,
    check_tls,
    describe,
    leaf_error,
    leaves,
    mask_url,
    settings_problem,
    starting,
)
from danmaku.system import ALL_ROLES, System, resolve_secret, run_system

log = logging.getLogger("danmaku")

ROLE_HELP = {
    "up": "everything in one process: web app, gateway, worker (+ embedded Redis "
    "when no --redis-url/REDIS_URL)",
    "gateway": "the WebSocket gateway only (needs --redis-url and DANMAKU_SECRET)",
    "worker": "the broadcast worker only (needs --redis-url and DANMAKU_SECRET)",
    "web": "the web app only (needs --redis-url and DANMAKU_SECRET)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="danmaku",
        description="Live-stream bullet-comment broadcast system.",
        epilog="Every setting is also read from its environment variable (shown in "
        "capitals); flags win over the environment.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in ROLE_HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        config.add_arguments(p)
        p.add_argument("--log-level", default="INFO")
    tok = sub.add_parser(
        "token",
        help="print a signed token",
        description="Mint a token (uses DANMAKU_SECRET or DATA_DIR/secret).",
    )
    tok.add_argument("--user", required=True, help="user id")
    tok.add_argument("--nick", required=True, help="display name")
    tok.add_argument("--role", default="viewer", choices=(*auth.ROLES, auth.SERVER_ROLE))
    tok.add_argument(
        "--room", default=None, help="valid in this room only (comma-separated: these rooms)"
    )
    tok.add_argument("--ttl", type=int, default=86_400, help="seconds (default 86400)")
    tok.add_argument("--highlight", action="store_true", help="highlighted (paid) sender")
    config.add_arguments(tok, only=("secret", "data_dir"))
    exp = sub.add_parser(
        "export",
        help="export a broadcast's comments (json, xml, ass)",
        description="Export a broadcast's comments from Redis.",
    )
    exp.add_argument("room")
    exp.add_argument("broadcast", help="broadcast id (GET /api/rooms/ROOM/broadcasts)")
    exp.add_argument("--format", choices=("json", "xml", "ass"), default="json")
    exp.add_argument("-o", "--output", default="-", help="file (default: standard output)")
    config.add_arguments(exp, only=("redis_url",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the exit code.

    The process's last error boundary: a failure before the command is up (it printed
    ``ready``) is a start-up error, one line ``danmaku: <what>: <why>`` on stderr and
    exit code 2; one that escapes every inner boundary after that ends the process with
    one line and exit code 1, its traceback logged at DEBUG. Never a traceback on stderr
    at the default log level (docs/operations.md, "Start-up errors and exit codes")."""
    args = _parser().parse_args(argv)  # a bad flag: argparse's usage line(s), exit 2
    run = _Run()
    try:
        return _main(args, run)
    except BaseException as exc:
        return _report(exc, args.command, run.ready)


@dataclass
class _Run:
    """What the boundary in ``main`` needs to know: has the command printed ``ready``?"""

    ready: bool = False


def _report(exc: BaseException, command: str, ready: bool) -> int:
    if any(isinstance(x, KeyboardInterrupt) for x in leaves(exc)):
        return 130  # Ctrl-C before the signal handler was in place: a quiet stop
    leaf = leaf_error(exc)
    if leaf is None:
        raise exc  # SystemExit and the like: not an error of ours to word
    if not ready:
        if isinstance(leaf, StartupError):
            print(f"danmaku: {describe(leaf)}", file=sys.stderr, flush=True)
        else:
            doing = "cannot start" if command in ROLE_HELP else f"{command} failed"
            print(f"danmaku: {doing}: {describe(leaf)}", file=sys.stderr, flush=True)
        log.debug("start-up failed", exc_info=exc)
        return 2
    print(
        f"danmaku: stopped by an unexpected error: {describe(leaf)} "
        "(--log-level DEBUG logs its traceback)",
        file=sys.stderr,
        flush=True,
    )
    log.debug("unexpected error", exc_info=exc)
    return 1


def _main(args: argparse.Namespace, run: _Run) -> int:
    try:
        settings = config.from_sources(args)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if args.command == "token":
        settings = resolve_secret(settings, create=False)
        if args.role == auth.SERVER_ROLE:  # the platform's backend: the server API only
            print(auth.mint_server(settings.secret, uid=args.user, ttl_s=args.ttl))
            return 0
        print(
            auth.mint(
                settings.secret,
                uid=args.user,
                nick=args.nick,
                role=args.role,
                room=args.room.split(",") if args.room and "," in args.room else args.room,
                ttl_s=args.ttl,
                highlight=args.highlight,
            )
        )
        return 0
    if args.command == "export":
        return _export(settings, args)
    try:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except ValueError as exc:
        raise StartupError(f"--log-level {args.log_level}: {exc}") from exc
    problem = settings_problem(settings)
    if problem:
        raise StartupError(problem)
    roles = ALL_ROLES if args.command == "up" else (args.command,)
    if args.command == "up":
        settings = resolve_secret(settings, create=True)  # dev mode: a kept local secret
    elif not settings.secret:
        # One role of a deployment: no default secret, ever.
        raise StartupError(
            f"DANMAKU_SECRET is required for `danmaku {args.command}` "
            f"(the token secret all processes share, {MIN_SECRET_BYTES} bytes or more)"
        )
    else:
        settings = resolve_secret(settings, create=False)  # checks its length
    if "gateway" in roles:
        check_tls(settings)
    if settings.processes != 1:
        if "gateway" not in roles:
            raise StartupError(
                f"--processes / DANMAKU_PROCESSES is for `danmaku gateway` and `danmaku up` "
                f"(run more `danmaku {args.command}` processes side by side instead)"
            )
        trio.run(_serve_processes, settings, args.command == "up", run, args.log_level)
        return 0
    trio.run(_serve, settings, roles, args.command == "up", run)
    return 0


async def _serve(settings: Settings, roles: Sequence[str], embedded: bool, run: _Run) -> None:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        system: System = await nursery.start(
            lambda task_status: run_system(
                settings, roles, metrics=metrics, embedded_redis=embedded, task_status=task_status
            )
        )
        if settings.metrics_port >= 0 and "web" not in roles:
            from prometheus_client import start_http_server

            with starting(f"metrics port 127.0.0.1:{settings.metrics_port}"):
                server, _ = start_http_server(
                    settings.metrics_port, "127.0.0.1", registry=metrics.registry
                )
            system.urls["metrics"] = f"http://127.0.0.1:{server.server_port}/metrics"
        if settings.gc_freeze:
            # What start-up built (modules, the app, caches) lives as long as the
            # process: keep it out of every later full collection, whose pause would
            # otherwise grow with it (see docs/operations.md, "Garbage collection").
            gc.collect()
            gc.freeze()
            metrics.gc_frozen.set(gc.get_freeze_count())
        parent = os.environ.get(PARENT_ENV)
        if parent and parent.isdigit():
            # A child of `--processes`: stop (drained) if the parent is killed outright.
            async def orphaned() -> None:
                await system.shutdown()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_parent, int(parent), orphaned)
        # The handler is in place before `ready` is printed: a supervisor that signals
        # the moment it reads `ready` gets a graceful stop, not a default-action kill.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            for name, url in system.urls.items():
                # urls["redis"] is masked by run_system; mask again so no URL ever leaks.
                print(f"{name:>10}: {mask_url(url)}", flush=True)
            print("     ready: Ctrl-C to stop", flush=True)
            run.ready = True
            async for _ in signals:
                print("stopping: draining viewers and comments", flush=True)
                await system.shutdown()
                break
        nursery.cancel_scope.cancel()


async def _serve_processes(settings: Settings, embedded: bool, run: _Run, log_level: str) -> None:
    """``--processes N``: the gateway role as N children on one port (danmaku.procs);
    for ``up``, the web app and the worker run here, in the parent."""
    from danmaku.gateway.listener import reserve_port
    from danmaku.procs import GatewayGroup, process_count
    from danmaku.system import public_ws_url

    count = process_count(settings.processes)
    with starting(f"WebSocket port {settings.ws_host}:{settings.ws_port}"):
        reserved = reserve_port(settings.ws_host, settings.ws_port)
    try:
        port = reserved.getsockname()[1]
        ws_url = public_ws_url(settings, port)
        async with trio.open_nursery() as nursery:
            system: System | None = None
            child = settings
            if embedded:
                system = await nursery.start(
                    lambda task_status: run_system(
                        settings.replace(public_ws_url=settings.public_ws_url or ws_url),
                        ("web", "worker"),
                        metrics=Metrics(),
                        embedded_redis=True,
                        task_status=task_status,
                    )
                )
                base = f"http://{settings.web_host}:{system.web_port}"
                origins = settings.allowed_origins or f"{base},http://localhost:{system.web_port}"
                child = settings.replace(redis_url=system.redis_url, allowed_origins=origins)
            group = GatewayGroup(child, count, port, log_level=log_level)
            await nursery.start(group.run)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                urls = dict(system.urls) if system is not None else {}
                urls["websocket"] = ws_url
                for name, url in urls.items():
                    print(f"{name:>10}: {mask_url(url)}", flush=True)
                for slot, c in sorted(group.children.items()):
                    if "metrics" in c.urls:
                        print(f"{'metrics-' + str(slot):>10}: {c.urls['metrics']}", flush=True)
                print(f" processes: {count} gateways, pids {list(group.pids())}", flush=True)
                print("     ready: Ctrl-C to stop", flush=True)
                run.ready = True
                async for _ in signals:
                    print("stopping: draining viewers and comments", flush=True)
                    await group.stop()
                    if system is not None:
                        await system.shutdown()
                    break
            nursery.cancel_scope.cancel()
    finally:
        reserved.close()


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from danmaku.store import Store
    from danmaku.web.replay import export_chunks

    if not settings.redis_url:
        raise StartupError("export: --redis-url / REDIS_URL is required")
    store = Store(settings.redis_url, Metrics(process=False))

    async def run() -> bool:
        # Streamed page by page, as over HTTP: any size in bounded memory.
        head = await store.replay.export_head(args.room, args.broadcast)
        if head is None:
            return False
        chunks = export_chunks(store, head, args.format)
        if args.output == "-":
            async for chunk in chunks:
                sys.stdout.buffer.write(chunk)
        else:
            async with await trio.open_file(args.output, "wb") as out:
                async for chunk in chunks:
                    await out.write(chunk)
        return True

    try:
        found = trio.run(run)
    finally:
        store.close()
    if not found:
        print(f"danmaku export: no broadcast {args.broadcast} in room {args.room}", file=sys.stderr)
        return 1
    return 0
