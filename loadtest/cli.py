"""The ``danmaku-loadtest`` command: ``run``, ``local``, ``plan``, ``scenarios``.

``run SCENARIO`` drives a running system (``--ws-url``, ``--web-url``, ``--secret`` or
their environment variables); ``local SCENARIO`` starts ``danmaku up`` on free ports
with an embedded Redis in a temporary directory, runs, and stops it. Both print a
summary, optionally write the JSON report (``--out``) and an HTML report (``--html``),
and exit 0 when the run had no errors, 1 otherwise, 2 on bad usage or an unreachable
target, 143 on SIGTERM (after stopping what a local run started). ``plan`` turns
measured costs into a deployment (see docs/capacity.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from loadtest import scenario as scenarios
from loadtest.display import Display
from loadtest.generator import Target
from loadtest.probe import LocalProbe, Probe
from loadtest.report import build, summary_lines
from loadtest.runner import run
from loadtest.scenario import Scenario, ScenarioError

T = TypeVar("T")


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scenario", help=f"a shipped name ({', '.join(scenarios.available())}) or a path"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any scenario key (dotted, TOML value): --set phases.0.rate=100, "
        "--set phases.*.duration_s=5, --set server.display_budget=40",
    )
    p.add_argument("--viewers", type=int, help="viewers connected before the first phase")
    p.add_argument("--senders", type=int, help="sender connections (distinct users)")
    p.add_argument("--rooms", type=int, help="number of rooms")
    p.add_argument("--rate", type=float, help="aggregate comments/s of every phase")
    p.add_argument("--duration", type=float, help="total seconds of the phases (scaled)")
    p.add_argument("--tick-ms", type=int, help="server frame tick (local runs set it)")
    p.add_argument("--procs", type=int, help="viewer processes (senders: --set sender_procs=N)")
    p.add_argument("--seed", type=int, help="layout seed")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--html", type=Path, help="write the HTML report (inline SVG plots) here")
    p.add_argument("--quiet", action="store_true", help="no live display (CI)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="danmaku-loadtest",
        description="Drive real WebSocket viewers and senders against danmaku; report "
        "latency, deliveries, drops and server CPU; plan a deployment.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario against a running system")
    _scenario_args(r)
    r.add_argument(
        "--ws-url",
        default=os.environ.get("DANMAKU_LOADTEST_WS_URL", "ws://127.0.0.1:8081/ws"),
        help="gateway WebSocket URL (env DANMAKU_LOADTEST_WS_URL)",
    )
    r.add_argument(
        "--web-url",
        default=os.environ.get("DANMAKU_LOADTEST_WEB_URL", "http://127.0.0.1:8080"),
        help="web app base URL, for /metrics and guest sessions (env DANMAKU_LOADTEST_WEB_URL)",
    )
    r.add_argument("--metrics-url", help="server /metrics URL (default: WEB_URL/metrics)")
    r.add_argument(
        "--secret",
        default=os.environ.get("DANMAKU_SECRET", ""),
        help="token secret to mint sender tokens (env DANMAKU_SECRET); without it senders "
        "use guest tokens from POST /api/session",
    )
    loc = sub.add_parser("local", help="start danmaku up on free ports, run a scenario, stop it")
    _scenario_args(loc)
    loc.add_argument(
        "--split",
        action="store_true",
        help="redis-server, danmaku gateway and danmaku worker as separate processes; the "
        "server measured is the gateway",
    )
    pl = sub.add_parser("plan", help="turn measured costs into a deployment")
    from loadtest.plan import add_arguments

    add_arguments(pl)
    cal = sub.add_parser(
        "calibrate",
        help="run a scenario at a few populations and fit fixed and per-unit costs",
        description="Run SCENARIO at each of --sizes viewers (local, free ports) and fit "
        "server cores = fixed + per connection + per frame write + per comment; or fit "
        "--reports. --out writes the calibration (JSON), which `plan --from` reads.",
    )
    _scenario_args(cal)
    from loadtest.calibrate import add_arguments as calibrate_arguments

    calibrate_arguments(cal)
    val = sub.add_parser(
        "validate",
        help="calibrate small, predict a larger run, run it, compare (exit 1 past tolerance)",
        description="Calibrate SCENARIO at --sizes viewers, predict gateway CPU, frame "
        "writes/s and egress of a run with --target viewers, run it and compare; exit 1 "
        "when a figure is off by more than --tolerance. --out writes it all (JSON).",
    )
    _scenario_args(val)
    calibrate_arguments(val)
    from loadtest.validate import add_arguments as validate_arguments

    validate_arguments(val)
    fl = sub.add_parser(
        "fleet",
        help="a simulated fleet on this machine: random vs room-affine, with the plan's prediction",
        description="Start a redis-server, workers, gateways (each its own port and "
        "registry entry) and the web app; run the same load with viewers spread at random "
        "over the gateways, then routed by GET /api/rooms/{room}/gateway; print Redis CPU, "
        "frame reads per gateway, gateways per room and latency for both, against what "
        "the plan's model predicts.",
    )
    from loadtest.fleet import add_arguments as fleet_arguments

    fleet_arguments(fl)
    sub.add_parser("scenarios", help="list the shipped scenarios")
    bench = sub.add_parser("bench", help="the benchmark suite of docs/benchmarks.md")
    bench.add_argument("--out-dir", type=Path, default=Path(".danmaku/bench"))
    bench.add_argument("--repeat", type=int, default=3, help="fan-out runs per case (median)")
    bench.add_argument("--only", choices=("fanout", "spike", "words"), default=None)
    return parser


def resolve(args: argparse.Namespace) -> Scenario:
    """The scenario with ``--set`` overrides, then the explicit flags, applied."""
    raw = scenarios.apply_overrides(scenarios.read_raw(args.scenario), args.overrides)
    for flag in ("viewers", "senders", "rooms", "tick_ms", "procs", "seed"):
        value = getattr(args, flag)
        if value is not None:
            raw[flag] = value
    phases = raw.get("phases") or []
    if args.rate is not None:
        for ph in phases:
            ph["rate"] = args.rate
            ph.pop("rate_from", None)
    if args.duration is not None and phases:
        total = sum(float(ph.get("duration_s", 0)) for ph in phases) or 1.0
        for ph in phases:
            ph["duration_s"] = float(ph.get("duration_s", 0)) * args.duration / total
    return Scenario.from_dict(raw)


class Terminated(Exception):
    """SIGTERM arrived: the run stops through its ``finally`` blocks (the local server,
    its Redis and the load processes are stopped, not orphaned)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Outside trio.run this handler raises; inside it, `_drive` watches SIGTERM itself.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _command(args)
    except Terminated:
        print("danmaku-loadtest: terminated (SIGTERM); local processes stopped", file=sys.stderr)
        return 143


def _command(args: argparse.Namespace) -> int:
    if args.command == "scenarios":
        for name in scenarios.available():
            sc = scenarios.load(name)
            print(f"{name:16} {sc.description}")
        return 0
    if args.command == "bench":
        from loadtest.bench import run_suite

        lines = run_suite(
            lambda sc, split: _local(sc, True, split=split), args.out_dir, args.repeat, args.only
        )
        text = "\n".join(lines)
        (args.out_dir / "bench.md").write_text(text + "\n")
        print(text)
        return 0
    if args.command == "plan":
        from loadtest.plan import main as plan_main

        return plan_main(args)
    if args.command == "fleet":
        from loadtest.fleet import main as fleet_main

        return fleet_main(args)
    if args.command in ("calibrate", "validate"):
        return _calibrate(args)
    try:
        sc = resolve(args)
    except ScenarioError as exc:
        print(f"danmaku-loadtest: {exc}", file=sys.stderr)
        return 2
    if args.command == "local":
        report = _local(sc, args.quiet, split=args.split)
    else:
        try:
            report = _remote(sc, args)
        except TargetError as exc:
            print(f"danmaku-loadtest: {exc}", file=sys.stderr)
            return 2
    return _finish(report, args)


def _calibrate(args: argparse.Namespace) -> int:
    """``calibrate`` and ``validate``: local runs of the scenario at given viewers."""
    from loadtest.calibrate import main as calibrate_main
    from loadtest.validate import main as validate_main

    def shape(viewers: int, rooms: int | None = None) -> Scenario:
        args.viewers = viewers
        sc = resolve(args)
        if not rooms:
            return sc
        # The same comments over `rooms` rooms, each with a sender of its own.
        spread = argparse.Namespace(**vars(args))
        spread.rooms, spread.senders = rooms, max(sc.senders, rooms)
        return resolve(spread)

    def run_local(viewers: int, split: bool, rooms: int | None = None) -> dict[str, Any]:
        return _local(shape(viewers, rooms), True, split=split)

    try:
        resolve(args)
    except ScenarioError as exc:
        print(f"danmaku-loadtest: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate":
        return validate_main(args, run_local, shape)
    return calibrate_main(args, run_local)


def _local(sc: Scenario, quiet: bool, *, split: bool = False) -> dict[str, Any]:
    from loadtest.localserver import LocalServer

    server = LocalServer(sc, split=split)
    server.start()
    try:
        assert server.pid is not None
        probe = LocalProbe(server.urls["metrics"], server.pid, server.redis_pid)
        target = Target(ws_url=server.ws_url, secret=server.secret)
        info = {
            "mode": "local-split" if split else "local",
            "ws_url": server.ws_url,
            "web_url": server.web_url,
        }
        return _drive(sc, target, probe, info, quiet)
    finally:
        server.stop()


class TargetError(Exception):
    """The system under test cannot be reached or refuses the run (one line, exit 2)."""


def reachable(url: str) -> None:
    """Open (and close) a TCP connection to ``url``'s host and port; ``TargetError``
    naming the URL and the reason when that fails. A run against a system that is not
    there would otherwise count every viewer's failed connection as the system's error."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise TargetError(f"{url!r} is not an http(s):// or ws(s):// URL")
    try:
        port = parts.port or (443 if secure else 80)
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TargetError(f"cannot reach {url}: {reason}") from None


def _remote(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    web = args.web_url.rstrip("/")
    secret = args.secret or None
    reachable(args.ws_url)
    if not secret and sc.senders:
        reachable(web)
    tokens: tuple[str, ...] = ()
    if not secret and sc.senders:
        tokens = tuple(_guest_tokens(web, sc.senders))
    target = Target(ws_url=args.ws_url, secret=secret, tokens=tokens)
    probe = Probe(args.metrics_url or f"{web}/metrics")
    info = {"mode": "remote", "ws_url": args.ws_url, "web_url": web}
    return _drive(sc, target, probe, info, args.quiet)


def _guest_tokens(web: str, n: int) -> list[str]:
    """Guest sender tokens from POST /api/session (when no secret is given). A system
    that limits guest sessions per address (``DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN``)
    answers 429 past its limit: that is raised as a ``TargetError`` saying so."""
    import urllib.error
    import urllib.request

    out = []
    for i in range(n):
        req = urllib.request.Request(
            f"{web}/api/session",
            data=json.dumps({"nick": f"load-{i}"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                out.append(json.loads(resp.read())["token"])
        except urllib.error.HTTPError as exc:
            if exc.code != 429:
                raise TargetError(f"POST {web}/api/session answered {exc.code}") from None
            raise TargetError(
                f"{web} gave {i} guest tokens, then 429: set "
                "DANMAKU_GUEST_SESSIONS_PER_IP_PER_MIN=0 on the system under test, or pass "
                "--secret to mint sender tokens"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # unreachable, or an answer without a token: not a danmaku web app there
            raise TargetError(f"POST {web}/api/session failed: {exc!r}") from None
    return out


def _drive(
    sc: Scenario, target: Target, probe: Probe, info: dict[str, str], quiet: bool
) -> dict[str, Any]:
    with Display(quiet=quiet) as display:
        result = trio.run(
            _until_terminated,
            lambda: run(sc, target, probe, listener=display.update, target_info=info),
        )
    return build(result)


async def _until_terminated(fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()``, or ``Terminated`` at SIGTERM after cancelling it (trio's way to
    take a signal: the handler runs in the event loop, ``fn``'s cleanup runs)."""
    if threading.current_thread() is not threading.main_thread():
        return await fn()

    async def watch() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                raise Terminated

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await fn()
            nursery.cancel_scope.cancel()
    except* Terminated:
        raise Terminated from None
    return result


def _finish(report: dict[str, Any], args: argparse.Namespace) -> int:
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    if args.html:
        from loadtest.htmlreport import render

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render(report))
    for line in summary_lines(report):
        print(line)
    if args.out:
        print(f"report: {args.out}")
    if args.html:
        print(f"html: {args.html}")
    return 0 if report["ok"] else 1
