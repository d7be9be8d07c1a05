"""Start-up errors as an operator meets them: real ``danmaku`` processes, real ports,
real files, real redis-server. Each fails with one line on stderr and exit code 2; an
error after ``ready`` is one line and exit code 1, its traceback only at DEBUG."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trustme

from loadtest import procstat
from tests.client import printed_urls
from tests.conftest import SECRET

GOOD_SECRET = {"DANMAKU_SECRET": SECRET}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_") and k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env | (extra or {})


def danmaku(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "danmaku", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return out.returncode, out.stdout, out.stderr


def assert_one_line(code: int, stderr: str, *needles: str, exit_code: int = 2) -> str:
    """Exit code 2 (or ``exit_code``), stderr exactly one line ``danmaku: ...`` holding
    every needle, no traceback."""
    lines = stderr.strip().splitlines()
    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("danmaku: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# ---- ports -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "flag", "what"),
    [
        ("gateway", "--ws-port", "WebSocket gateway on 127.0.0.1:{port}"),
        ("web", "--web-port", "web app on 127.0.0.1:{port}"),
        ("worker", "--metrics-port", "metrics port 127.0.0.1:{port}"),
        ("up", "--web-port", "web app on 127.0.0.1:{port}"),
        ("up", "--ws-port", "WebSocket gateway on 127.0.0.1:{port}"),
    ],
)
def test_a_port_in_use_is_one_line(
    role: str, flag: str, what: str, busy_port: int, redis_url: str, tmp_path: Path
) -> None:
    ports = {"--web-port": "0", "--ws-port": "0", flag: str(busy_port)}
    args = [role, "--redis-url", redis_url, "--data-dir", str(tmp_path)]
    args += [x for pair in ports.items() for x in pair]
    code, out, err = danmaku(args, _env(GOOD_SECRET))
    assert_one_line(code, err, what.format(port=busy_port), "address already in use")
    assert "ready" not in out


# ---- TLS files ---------------------------------------------------------------------------


def _tls_cases() -> dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]]:
    def pair(tmp: Path) -> tuple[Path, Path]:
        cert = trustme.CA().issue_cert("127.0.0.1")
        c, k = tmp / "cert.pem", tmp / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(c))
        cert.private_key_pem.write_to_path(str(k))
        return c, k

    def missing_cert(tmp: Path) -> list[str]:
        _, k = pair(tmp)
        return ["--tls-cert", str(tmp / "nope.pem"), "--tls-key", str(k)]

    def key_is_a_dir(tmp: Path) -> list[str]:
        c, _ = pair(tmp)
        return ["--tls-cert", str(c), "--tls-key", str(tmp)]

    def garbage(tmp: Path) -> list[str]:
        c, _ = pair(tmp)
        (tmp / "junk.pem").write_text("not a key\n")
        return ["--tls-cert", str(c), "--tls-key", str(tmp / "junk.pem")]

    def swapped(tmp: Path) -> list[str]:
        c, k = pair(tmp)
        return ["--tls-cert", str(k), "--tls-key", str(c)]

    def cert_alone(tmp: Path) -> list[str]:
        c, _ = pair(tmp)
        return ["--tls-cert", str(c)]

    return {
        "missing cert": (missing_cert, ("--tls-cert", "nope.pem", "no such file")),
        "key is a directory": (key_is_a_dir, ("--tls-key", "is a directory")),
        "key is not PEM": (garbage, ("junk.pem", "not a PEM certificate")),
        "swapped": (swapped, ("not a PEM certificate",)),
        "cert without key": (cert_alone, ("--tls-cert and --tls-key go together",)),
    }


@pytest.mark.parametrize(
    ("case", "role"), [(case, "gateway") for case in sorted(_tls_cases())] + [("swapped", "up")]
)
def test_bad_tls_files_are_one_line(case: str, role: str, redis_url: str, tmp_path: Path) -> None:
    make, needles = _tls_cases()[case]
    args = [role, "--redis-url", redis_url, "--ws-port", "0", "--web-port", "0"]
    args += ["--data-dir", str(tmp_path / "data"), *make(tmp_path)]
    code, out, err = danmaku(args, _env(GOOD_SECRET))
    assert_one_line(code, err, *needles)
    assert "ready" not in out


# ---- settings values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "flags", "needles"),
    [
        ({"DANMAKU_TICK_MS": "abc"}, [], ("DANMAKU_TICK_MS='abc'", "expected int")),
        ({"DANMAKU_TICK_MS": "²"}, [], ("DANMAKU_TICK_MS",)),
        ({"DANMAKU_TICK_MS": "0"}, [], ("DANMAKU_TICK_MS=0", "1 or more")),
        ({"DANMAKU_DRAIN_S": "nan"}, [], ("DANMAKU_DRAIN_S=nan", "finite")),
        ({"DANMAKU_RATE_PER_S": "-1"}, [], ("DANMAKU_RATE_PER_S=-1.0", "0 or more")),
        ({}, ["--ws-port", "70000"], ("DANMAKU_WS_PORT=70000", "65535")),
        ({}, ["--ws-host", "no-such-host.invalid"], ("no-such-host.invalid",)),
        ({}, ["--log-level", "LOUD"], ("--log-level LOUD",)),
        ({"REDIS_URL": "localhost:6379"}, [], ("REDIS_URL='localhost:6379'", "not a Redis URL")),
        ({"REDIS_URL": "http://u:pw@h/"}, [], ("REDIS_URL='http://u:***@h/'", "redis://")),
    ],
)
def test_bad_settings_are_one_line(
    env: dict[str, str], flags: list[str], needles: tuple[str, ...], redis_url: str
) -> None:
    environ = _env(GOOD_SECRET | {"REDIS_URL": redis_url} | env)
    code, out, err = danmaku(["gateway", "--ws-port", "0", *flags], environ)
    assert_one_line(code, err, *needles)
    assert "ready" not in out


# ---- Redis ---------------------------------------------------------------------------------


async def test_redis_unreachable_at_start_is_one_line(tmp_path: Path) -> None:
    """Every role, at once (each waits 10 s for Redis before giving up)."""
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(role: str) -> None:
        args = [role, "--redis-url", "redis://:hunter2-pass@127.0.0.1:1/0", "--ws-port", "0"]
        args += ["--web-port", "0", "--data-dir", str(tmp_path / role)]
        with trio.fail_after(60):
            results[role] = await trio.run_process(
                [sys.executable, "-m", "danmaku", *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=_env(GOOD_SECRET),
            )

    async with trio.open_nursery() as nursery:
        for role in ("up", "gateway", "worker", "web"):
            nursery.start_soon(run, role)
    for role, done in results.items():
        err, out = done.stderr.decode(), done.stdout.decode()
        line = assert_one_line(done.returncode, err, "redis://:***@127.0.0.1:1/0", "did not answer")
        assert "Connection refused" in line, role  # the reason, not only the symptom
        assert "hunter2" not in err + out, role


def test_embedded_redis_missing_is_one_line(tmp_path: Path) -> None:
    env = _env({"DANMAKU_REDIS_SERVER": str(tmp_path / "no-redis-server")})
    code, _, err = danmaku(["up", "--data-dir", str(tmp_path / "d")], env)
    assert_one_line(code, err, "embedded Redis", "no-redis-server", "not an executable")


def test_embedded_redis_that_fails_to_start_is_one_line(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false
    code, _, err = danmaku(
        ["up", "--data-dir", str(tmp_path / "d")], _env({"DANMAKU_REDIS_SERVER": false})
    )
    assert_one_line(code, err, "embedded Redis", "did not start", "exited with code 1")


def test_embedded_redis_with_a_corrupt_aof_says_why(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir(mode=0o700)
    (tmp_path / "redis" / "appendonly.aof").write_text("this is not an AOF\n")
    code, _, err = danmaku(["up", "--data-dir", str(tmp_path), "--web-port", "0"], _env())
    assert_one_line(code, err, "embedded Redis", "did not start", "append only file")


# ---- data dir and secrets --------------------------------------------------------------------


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    for data, why in ((tmp_path / "f", "is not a directory"), (tmp_path / "f" / "sub", "")):
        code, _, err = danmaku(["up", "--data-dir", str(data)], _env())
        assert_one_line(code, err, f"data dir {data}", why)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "theirs"
    data.mkdir()
    os.chown(data, 65534, 65534)
    code, _, err = danmaku(["up", "--data-dir", str(data)], _env())
    assert_one_line(code, err, f"data dir {data}", "owned by uid 65534")
    assert not (data / "secret").exists()


SHORT = "0123456789abcdef0123456789abcde"  # 31 bytes


@pytest.mark.parametrize("role", ["up", "gateway", "worker", "web", "token"])
def test_a_short_secret_is_refused_by_every_command(role: str, tmp_path: Path) -> None:
    assert len(SHORT.encode()) == 31
    args = [role, "--redis-url", "redis://127.0.0.1:1/0", "--data-dir", str(tmp_path)]
    if role == "token":
        args = [role, "--user", "u", "--nick", "n", "--data-dir", str(tmp_path)]
    code, out, err = danmaku(args, _env({"DANMAKU_SECRET": SHORT}))
    assert_one_line(code, err, "DANMAKU_SECRET", "31 bytes", "32 bytes or more")
    assert SHORT not in err + out
    # multi-byte characters count as bytes: 11 x 3 bytes is long enough
    if role == "token":
        code, out, _ = danmaku(args, _env({"DANMAKU_SECRET": "密" * 11}))
        assert code == 0 and out.count(".") == 2


def _secret_file(data: Path, text: str, mode: int) -> Path:
    data.mkdir(mode=0o700, exist_ok=True)
    path = data / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
@pytest.mark.parametrize("command", ["up", "token"])
def test_a_secret_file_others_can_write_is_refused(mode: int, command: str, tmp_path: Path) -> None:
    path = _secret_file(tmp_path, SECRET + "\n", mode)
    args = [command, "--data-dir", str(tmp_path), "--web-port", "0", "--ws-port", "0"]
    if command == "token":
        args = [command, "--user", "u", "--nick", "n", "--data-dir", str(tmp_path)]
    code, out, err = danmaku(args, _env())
    assert_one_line(code, err, f"secret file {path}", "other users can write it", f"{mode:04o}")
    assert SECRET not in out + err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
@pytest.mark.parametrize("command", ["up", "token"])
def test_a_secret_file_of_another_user_is_refused(command: str, tmp_path: Path) -> None:
    path = _secret_file(tmp_path, SECRET + "\n", 0o600)
    os.chown(path, 65534, 65534)
    args = [command, "--data-dir", str(tmp_path)]
    if command == "token":
        args += ["--user", "u", "--nick", "n"]
    code, _, err = danmaku(args, _env())
    assert_one_line(code, err, f"secret file {path}", "owned by uid 65534")


def test_a_short_secret_file_and_a_missing_one_are_refused(tmp_path: Path) -> None:
    token = ["token", "--user", "u", "--nick", "n", "--data-dir", str(tmp_path)]
    code, _, err = danmaku(token, _env())
    assert_one_line(code, err, "DANMAKU_SECRET is not set", "does not exist")
    path = _secret_file(tmp_path, SHORT + "\n", 0o600)
    code, _, err = danmaku(token, _env())
    assert_one_line(code, err, f"secret file {path}", "31 bytes")


# ---- the real thing: files, modes, the embedded Redis from outside -------------------------


def _children(pid: int) -> list[int]:
    return [c for c in procstat.children(pid) if "redis" in procstat.command_name(c)]


UP = [sys.executable, "-m", "danmaku", "up"]


async def _up(data: Path, *extra: str) -> tuple[trio.Process, dict[str, str]]:
    proc = await trio.lowlevel.open_process(
        [*UP, "--web-port", "0", "--ws-port", "0", "--data-dir", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    return proc, await printed_urls(proc, "danmaku up")


async def _rest(stream: trio.abc.ReceiveStream | None) -> str:
    assert stream is not None
    data = b""
    with trio.fail_after(30):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.decode(errors="replace")


async def test_up_keeps_its_state_private_and_its_redis_locked(tmp_path: Path) -> None:
    data = tmp_path / "state"
    old = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        proc, urls = await _up(data, "--log-level", "WARNING")
    finally:
        os.umask(old)
    try:
        redis_line = urls["redis"]
        host_port = redis_line.removeprefix("redis://:***@").removesuffix("/0")
        assert redis_line == f"redis://:***@{host_port}/0"
        port = int(host_port.rsplit(":", 1)[1])

        # An unauthenticated client gets nothing but NOAUTH.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"PING\r\nCONFIG SET dir /tmp\r\nKEYS *\r\n")
        reply = b""
        with trio.fail_after(10):
            while reply.count(b"\r\n") < 3:
                reply += await stream.receive_some(4096)
        await stream.aclose()
        # PING and KEYS: authenticate first; CONFIG: does not exist at all.
        lines = reply.split(b"\r\n")
        assert lines[0].startswith(b"-NOAUTH") and lines[2].startswith(b"-NOAUTH"), reply
        assert lines[1].startswith(b"-ERR unknown command"), reply

        # The password is on no command line (other users read /proc/PID/cmdline).
        (redis_pid,) = _children(proc.pid)
        cmdline = Path(f"/proc/{redis_pid}/cmdline").read_bytes()
        assert b"requirepass" not in cmdline and b"rename-command" not in cmdline

        # Files: data dir and redis dir 0700, secret and every Redis file 0600.
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600
        for path in [data / "redis", *(data / "redis").rglob("*")]:
            want = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == want, path
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await proc.wait() == 0
    assert "Traceback" not in await _rest(proc.stderr)


async def test_up_tightens_a_loose_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "loose"
    data.mkdir()
    data.chmod(0o755)
    proc, _ = await _up(data, "--log-level", "WARNING")
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await proc.wait() == 0


@pytest.mark.parametrize("level", ["WARNING", "DEBUG"])
async def test_an_error_after_ready_is_one_line_and_exit_1(level: str, tmp_path: Path) -> None:
    """The embedded redis-server dies under a running `up`: that escapes every boundary
    (nothing restarts it), so the process ends: one line, exit code 1, the traceback
    only at DEBUG."""
    proc, _ = await _up(tmp_path, "--log-level", level)
    (redis_pid,) = _children(proc.pid)
    os.kill(redis_pid, signal.SIGKILL)
    with trio.fail_after(30):
        code = await proc.wait()
    err = await _rest(proc.stderr)
    assert code == 1, err
    ours = [line for line in err.splitlines() if line.startswith("danmaku: ")]
    assert ours == [
        "danmaku: stopped by an unexpected error: embedded redis-server was killed by "
        f"SIGKILL (see {tmp_path / 'redis' / 'redis.log'}) (--log-level DEBUG logs its "
        "traceback)"
    ]
    assert ("Traceback" in err) == (level == "DEBUG")
