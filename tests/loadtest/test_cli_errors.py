"""``danmaku-loadtest run`` against a system that is not there: one line, exit 2, never
a traceback (an operator error, not a run whose every viewer failed)."""

from __future__ import annotations

import socket

import pytest

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
