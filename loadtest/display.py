"""Live progress while a run goes: a rich table redrawn each second, or nothing (quiet).

``Display`` is a context manager; ``update(event)`` takes the dicts from
``runner.progress_event`` (phase, elapsed, connected, rates, current p50/p99, server CPU).
Without a terminal it prints one plain line every ``plain_every`` updates instead.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _fmt(value: Any, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


class Display:
    def __init__(self, *, quiet: bool = False, plain_every: int = 5) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.plain_every = plain_every
        self._n = 0

    def __enter__(self) -> Display:
        if not self.quiet and self.console.is_terminal:
            self.live = Live(self._table(None), console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def update(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table(event))
            return
        self._n += 1
        if self._n % self.plain_every == 0:
            print(_plain(event), file=sys.stderr, flush=True)

    @staticmethod
    def _table(e: dict[str, Any] | None) -> Table:
        table = Table(title="danmaku-loadtest", show_header=True, expand=False)
        for col in (
            "phase",
            "elapsed",
            "connected",
            "sent/s",
            "frames/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "server cpu %",
            "rss MB",
        ):
            table.add_column(col, justify="right")
        if e is not None:
            table.add_row(
                e["phase"],
                f"{e['elapsed_s']:.0f}/{e['total_s']:.0f}s",
                str(e["connected"]),
                _fmt(e["sent_per_s"]),
                _fmt(e["frames_per_s"]),
                _fmt(e["deliveries_per_s"]),
                _fmt(e["p50_ms"]),
                _fmt(e["p99_ms"]),
                str(e["errors"]),
                _fmt(e["server_cpu_pct"]),
                _fmt(e["server_rss_mb"]),
            )
        return table


def _plain(e: dict[str, Any]) -> str:
    return (
        f"[{e['phase']} {e['elapsed_s']:.0f}/{e['total_s']:.0f}s] conns {e['connected']} "
        f"sent/s {_fmt(e['sent_per_s'])} frames/s {_fmt(e['frames_per_s'])} "
        f"deliveries/s {_fmt(e['deliveries_per_s'])} p99 {_fmt(e['p99_ms'])} ms "
        f"errors {e['errors']} cpu {_fmt(e['server_cpu_pct'])}%"
    )
