"""CPU seconds and RSS of a local process from ``/proc`` (Linux), without psutil.

``sample(pid)`` reads ``/proc/PID/stat``: user + system CPU of the process itself (its
threads included, children excluded) and its resident set size. ``host_busy_s()`` reads
the machine's busy CPU seconds from ``/proc/stat``. ``children(pid)`` lists
direct child pids (the embedded redis-server of ``danmaku up``). A vanished process
reads as ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_bytes: int


def parse_stat(text: str) -> ProcSample:
    """Parse one ``/proc/PID/stat`` line (the command name may hold spaces and parens)."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): utime is field 14, stime 15, rss 24.
    utime, stime, rss = int(rest[11]), int(rest[12]), int(rest[21])
    return ProcSample(cpu_s=(utime + stime) / _TICKS, rss_bytes=rss * _PAGE)


def parse_host_stat(text: str) -> float:
    """Busy CPU seconds of the whole machine, all cores, from ``/proc/stat`` text (the
    aggregate ``cpu`` line: everything but idle and iowait)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            # guest time is already counted in user/nice (fields 9 and 10)
            return (sum(ticks[:8]) - idle) / _TICKS
    raise ValueError("no aggregate cpu line in /proc/stat")


def host_busy_s() -> float | None:
    """Busy CPU seconds of the machine since boot (None where /proc/stat is missing). On
    a shared machine the difference to the run's own processes is other people's load."""
    try:
        return parse_host_stat(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def sample(pid: int) -> ProcSample | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (empty when unknown)."""
    found: set[int] = set()
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text().split()
            found.update(int(x) for x in text)
    except OSError:
        pass
    if found:
        return sorted(found)
    for entry in Path("/proc").iterdir():  # kernels without /proc/.../children
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields and int(fields[1]) == pid:
            found.add(int(entry.name))
    return sorted(found)


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
