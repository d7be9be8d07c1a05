"""``danmaku-loadtest run`` against a system that is not there: one line, exit 2, never
a traceback (an operator error, not a run whose every viewer failed)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from loadtest import procstat
from loadtest.cli import TargetError, main, reachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("secret", [None, "s3cret"])
def test_run_against_nothing_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], secret: str | None
) -> None:
    port = _closed_port()
    argv = ["run", "steady", "--quiet", "--duration", "1", "--viewers", "2"]
    argv += ["--ws-url", f"ws://127.0.0.1:{port}/ws", "--web-url", f"http://127.0.0.1:{port}"]
    if secret:
        argv += ["--secret", secret]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("danmaku-loadtest: cannot reach ") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("url", ["ftp://x/ws", "ws://", "127.0.0.1:80", "ws://h:99999/"])
def test_reachable_rejects_what_is_not_a_url(url: str) -> None:
    with pytest.raises(TargetError):
        reachable(url)


def test_reachable_accepts_a_listening_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        reachable(f"ws://127.0.0.1:{s.getsockname()[1]}/ws")


def _descendants(pid: int) -> dict[int, str]:
    """Live processes under ``pid`` (``procstat.children``, walked down): pid -> command
    line."""
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        for child in procstat.children(frontier.pop()):
            if child in found or not _alive(child):
                continue
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    found[child] = f.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_a_local_run_and_everything_it_started() -> None:
    """A CI timeout's SIGTERM mid-run: one line, exit 143, and no Redis, gateway, worker
    or load process left running (they used to be orphaned)."""
    argv = [sys.executable, "-m", "loadtest", "local", "steady", "--split", "--quiet"]
    argv += ["--viewers", "5", "--rate", "2", "--duration", "60", "--procs", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        kids: dict[int, str] = {}
        while time.monotonic() < deadline:
            kids = _descendants(proc.pid)
            # the run is under way: the server is up and the load process started
            if any("danmaku gateway" in c for c in kids.values()) and any(
                "multiprocessing" in c for c in kids.values()
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the run did not start: {kids}")
        time.sleep(2)
        kids = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert err.startswith("danmaku-loadtest: terminated") and err.count("\n") == 1, err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in kids):
        time.sleep(0.2)
    assert not [c for p, c in kids.items() if _alive(p)]
