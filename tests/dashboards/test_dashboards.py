"""The Grafana dashboards against a real Prometheus scraping a real system.

Static checks: every dashboard is JSON with what Grafana needs (uid, title, panels with
type/gridPos/datasource/targets, unique ids, known template variables), the provisioning
files point at the datasource uid the panels use, and ``grafana/prometheus.yml`` passes
``promtool check config``.

Live check: a whole system (with the process collector on), a Prometheus from Debian's
``prometheus`` package scraping its web ``/metrics`` every second, real WebSocket viewers
and senders. Then every target of every panel and every template variable query is
evaluated through Prometheus's HTTP API, twice:

* as Grafana would with a 1 s scrape interval (``$__rate_interval`` = 4 s): each returns
  data (no "No data" panels);
* with a rate window covering the whole run, evaluated at the timestamp of the last
  scrape: a counter that starts at 0 then has ``rate * window`` equal to its exact
  increase (no extrapolation at either end), so the panels' figures must equal what the
  test sent: comments accepted, frames built and written, viewers connected, ...

Labeled counters are born at their first event, so ``rate()`` cannot see that first event
(Prometheus has no earlier 0 sample); their figures are checked on the raw counters.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio
from prometheus_client import parser

from danmaku.config import Settings
from danmaku.dev.embedded import free_port
from danmaku.metrics import Metrics
from danmaku.system import System, run_system
from tests.client import Client, connect, token

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DS = {"type": "prometheus", "uid": "danmaku-prometheus"}
JOB = "danmaku"
BUILTIN_VARS = {"__rate_interval", "__interval", "__range"}
METRIC_RE = re.compile(r"\b((?:danmaku|process|python)_[a-z0-9_]+)")
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES_RE = re.compile(r"^label_values\((.+),\s*(\w+)\)$")
# Metrics of /metrics that no panel shows, and why.
NOT_ON_DASHBOARDS = {
    "danmaku_gc_frozen_objects": "counted at start-up and at a gateway's rare refreeze; /metrics",
}

VIEWERS = 4
SENDERS = 3
PER_SENDER = 5
ACCEPTED = SENDERS * PER_SENDER


# ---- helpers --------------------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: load(p) for p in DASHBOARD_FILES}


def query_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with queries (rows nested in collapsed rows included)."""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def all_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variables(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dash["templating"]["list"])


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        return values[m.group(1) or m.group(2)]

    return VAR_RE.sub(repl, expr)


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: bytes = resp.read()
        return body


async def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    return await trio.to_thread.run_sync(partial(_http, url, data, headers))


def _open_log(path: Path) -> BinaryIO:
    return path.open("wb")


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(found).exists():
        pytest.fail("prometheus not found: `make system-deps` installs Debian's prometheus")
    return found


@dataclass
class Prometheus:
    base: str
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        body = urllib.parse.urlencode(params, doseq=True).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            raw = await http(url, body, headers)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: HTTP {exc.code}: {exc.read()!r}") from exc
        reply = json.loads(raw)
        assert reply["status"] == "success", reply
        return reply["data"]

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    async def value(self, expr: str, at: float | None = None) -> float:
        result = await self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    async def wait_until(self, expr: str, cond: Any, timeout: float = 15.0) -> float:
        """Poll ``expr`` (one series) until ``cond(value)``; returns the value."""
        with trio.fail_after(timeout):
            while True:
                result = await self.query(expr)
                if len(result) == 1 and cond(float(result[0]["value"][1])):
                    return float(result[0]["value"][1])
                await trio.sleep(0.2)


def prometheus_config(web_port: int) -> str:
    return f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {JOB}
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{web_port}"]
"""


async def start_prometheus(nursery: trio.Nursery, tmp: Path, web_port: int) -> Prometheus:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(prometheus_config(web_port))
    log = tmp / "prometheus.log"
    cmd = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    out = _open_log(log)
    proc: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            cmd,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    )
    out.close()  # the child has its own copy
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    with trio.move_on_after(20) as scope:
        while True:
            if proc.returncode is not None:
                pytest.fail(f"prometheus exited {proc.returncode}: {log.read_text()}")
            try:
                await http(f"{prom.base}/-/ready")
                break
            except (urllib.error.URLError, ConnectionError):
                await trio.sleep(0.1)
    if scope.cancelled_caught:
        pytest.fail(f"prometheus did not become ready: {log.read_text()}")
    return prom


# ---- fixtures -------------------------------------------------------------------------
@pytest.fixture
async def metered_system(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[System]:
    """Like the ``system`` fixture, with the process collector on (CPU, RSS panels)."""
    system: System = await nursery.start(partial(run_system, settings, metrics=Metrics()))
    yield system
    system.cancel_scope.cancel()


# ---- static checks --------------------------------------------------------------------
def test_there_is_an_overview_and_a_per_process_dashboard() -> None:
    names = {p.name for p in DASHBOARD_FILES}
    assert {"danmaku-overview.json", "danmaku-room.json"} <= names


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_has_what_grafana_needs(path: Path) -> None:
    dash = load(path)
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in dash, f"{path.name}: no {key}"
    assert isinstance(dash["uid"], str) and 0 < len(dash["uid"]) <= 40
    assert dash["schemaVersion"] >= 36
    assert dash.get("id") is None, "provisioned dashboards must not carry a database id"
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    names = {v["name"] for v in variables(dash)} | BUILTIN_VARS
    for var in variables(dash):
        assert var["type"] == "query" and var["datasource"] == DS, var["name"]
        assert LABEL_VALUES_RE.match(var["definition"]), var["definition"]
        assert var["query"]["query"] == var["definition"]
    for panel in all_panels(dash):
        where = f"{path.name} panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("type") and panel.get("title"), where
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), where
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, where
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, where
        assert panel.get("description"), f"{where}: operators need a description"
        targets = panel["targets"]
        assert targets, where
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), where
        for t in targets:
            assert t["datasource"] == DS and t["expr"].strip(), where
            used = {a or b for a, b in VAR_RE.findall(t["expr"])}
            assert used <= names, f"{where}: unknown variables {used - names}"
    assert dashboards(), "no dashboards"


def test_dashboard_uids_are_unique() -> None:
    uids = [d["uid"] for d in dashboards().values()]
    assert len(uids) == len(set(uids))


def test_per_process_dashboard_says_why_it_is_not_per_room() -> None:
    dash = load(GRAFANA / "dashboards" / "danmaku-room.json")
    assert "instance" in {v["name"] for v in variables(dash)}
    assert "per-room labels" in dash["description"]


def test_provisioning_points_at_the_datasource_the_panels_use() -> None:
    ds = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s*uid:\s*danmaku-prometheus\s*$", ds, re.M)
    assert re.search(r"^\s*type:\s*prometheus\s*$", ds, re.M)
    assert re.search(r"^apiVersion:\s*1\s*$", ds, re.M)
    prov = (GRAFANA / "provisioning" / "dashboards" / "danmaku.yml").read_text()
    assert re.search(r"^\s*type:\s*file\s*$", prov, re.M)
    assert re.search(r"^\s*path:\s*\S+", prov, re.M)
    assert re.search(r"^apiVersion:\s*1\s*$", prov, re.M)


def test_prometheus_config_is_valid_and_scrapes_danmaku_up() -> None:
    config = GRAFANA / "prometheus.yml"
    text = config.read_text()
    assert "127.0.0.1:8080" in text and re.search(r"^\s*scrape_interval:\s*5s", text, re.M)
    for job in ("danmaku", "danmaku-gateway", "danmaku-worker", "danmaku-web"):
        assert re.search(rf"job_name:\s*{job}\s*$", text, re.M), job
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool not found: `make system-deps` installs Debian's prometheus")
    done = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- live -----------------------------------------------------------------------------
@dataclass
class Traffic:
    viewers: list[Client]
    senders: list[Client]
    frames: int  # frames built (the room's last seq)
    writes: int  # frames written to all clients


async def drive_traffic(n: trio.Nursery, system: System, prom: Prometheus) -> Traffic:
    """Viewers and senders in one room; a known number of accepted and rejected comments.

    Two waves with a scrape between them, so that every labeled series (latency stages,
    Redis ops, ...) has a sample before most of its events: rate() over it is then > 0.
    """
    port = system.ws_port
    assert port and system.web_port
    room = "dash"
    viewers = [await connect(n, port, room) for _ in range(VIEWERS)]
    senders = [await connect(n, port, room, tok=token(f"s{i}")) for i in range(SENDERS)]
    refused = await connect(n, port, "bad.room")  # handshake refused: bad_room
    assert refused.closed is not None
    await http(
        f"http://127.0.0.1:{system.web_port}/api/session",
        json.dumps({"nick": "guest"}).encode(),
        {"Content-Type": "application/json"},
    )

    async def send(i: int, sender: Client, ks: range) -> None:
        for k in ks:
            reply = await sender.comment(f"sender {i} comment {k}", nonce=f"{i}-{k}")
            assert reply["type"] == "ack", reply

    async def all_delivered(count: int) -> None:
        for c in viewers + senders:
            await c.wait_for(lambda c: len(c.item_ids()) >= count)

    async with trio.open_nursery() as wave:
        for i, s in enumerate(senders):
            wave.start_soon(send, i, s, range(1))
    await all_delivered(SENDERS)
    await prom.wait_until(
        f'sum(danmaku_latency_seconds_count{{job="{JOB}",stage="end_to_end"}})',
        lambda v: v >= SENDERS,
    )
    async with trio.open_nursery() as wave:
        for i, s in enumerate(senders):
            wave.start_soon(send, i, s, range(1, PER_SENDER))
    too_long = await senders[0].comment("x" * (system.settings.max_text_chars + 1), "long")
    assert too_long["code"] == "too_long", too_long
    anonymous = await viewers[0].comment("hello", "anon")
    assert anonymous["code"] == "unauthorized", anonymous
    await all_delivered(ACCEPTED)
    for c in viewers + senders:
        assert len(c.item_ids()) == ACCEPTED
    frames = max(f["seq"] for f in viewers[0].frames)
    writes = sum(len(c.frames) for c in viewers + senders)
    return Traffic(viewers, senders, frames, writes)


def metric_families(metrics_text: str) -> dict[str, set[str]]:
    """Each metric family of /metrics and the series names it can expose."""
    out: dict[str, set[str]] = {}
    for fam in parser.text_string_to_metric_families(metrics_text):
        if fam.name.endswith("_created"):
            continue
        names = out.setdefault(fam.name, set())
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(f"{fam.name}_total")
        elif fam.type == "histogram":
            names.update(f"{fam.name}{s}" for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(fam.name)
    return out


async def test_every_panel_returns_data_that_agrees_with_the_traffic(
    metered_system: System, tmp_path: Path
) -> None:
    system = metered_system
    started = time.time()
    async with trio.open_nursery() as n:
        prom = await start_prometheus(n, tmp_path, system.web_port or 0)
        await prom.wait_until(f'up{{job="{JOB}"}}', lambda v: v == 1)
        traffic = await drive_traffic(n, system, prom)

        # The scrape that saw the last frame write also saw everything before it.
        sel = f'{{job="{JOB}"}}'
        await prom.wait_until(
            f"sum(danmaku_frame_writes_total{sel})", lambda v: v == traffic.writes
        )
        at = await prom.value(f"timestamp(danmaku_frame_writes_total{sel})")
        metrics_text = (await http(f"http://127.0.0.1:{system.web_port}/metrics")).decode()
        window = math.ceil(at - started) + 10
        instance = (await prom.query(f'up{{job="{JOB}"}}'))[0]["metric"]["instance"]

        dashes = dashboards()
        check_metric_names(dashes, metrics_text)
        for passes in ("4s", f"{window}s"):
            for name, dash in dashes.items():
                values = await variable_values(prom, name, dash, instance)
                values |= {"__rate_interval": passes, "__interval": "1s", "__range": passes}
                await check_every_target_has_data(
                    prom, name, dash, values, at, finite=passes != "4s"
                )
        await check_figures(prom, dashes, traffic, instance, at, window)
        n.cancel_scope.cancel()


def check_metric_names(dashes: dict[str, dict[str, Any]], metrics_text: str) -> None:
    families = metric_families(metrics_text)
    series = set().union(*families.values())
    used: set[str] = set()
    for name, dash in dashes.items():
        exprs = [t["expr"] for p in query_panels(dash) for t in p["targets"]]
        exprs += [v["definition"] for v in variables(dash)]
        for expr in exprs:
            for metric in METRIC_RE.findall(expr):
                assert metric in series, f"{name}: {metric} is not in /metrics ({expr})"
                used.add(metric)
    unused = sorted(
        fam
        for fam, names in families.items()
        if fam.startswith("danmaku_") and fam not in NOT_ON_DASHBOARDS and not names & used
    )
    assert not unused, f"metrics on no dashboard (add a panel or say why): {unused}"


async def variable_values(
    prom: Prometheus, name: str, dash: dict[str, Any], instance: str
) -> dict[str, str]:
    """Evaluate each template variable's label_values() query like Grafana; pick a value.

    "All" (allValue) where the variable has it, else the first value found.
    """
    values: dict[str, str] = {}
    for var in variables(dash):
        m = LABEL_VALUES_RE.match(var["definition"])
        assert m, var["definition"]
        match, label = substitute(m.group(1), values), m.group(2)
        series = await prom.api("series", **{"match[]": match})
        found = sorted({s[label] for s in series if label in s})
        assert found, f"{name}: variable {var['name']} ({var['definition']}) lists nothing"
        if var["name"] == "instance":
            assert instance in found, found
        values[var["name"]] = var["allValue"] if var.get("includeAll") else found[0]
    return values


async def check_every_target_has_data(
    prom: Prometheus,
    name: str,
    dash: dict[str, Any],
    values: dict[str, str],
    at: float,
    *,
    finite: bool,
) -> None:
    for panel in query_panels(dash):
        for target in panel["targets"]:
            expr = substitute(target["expr"], values)
            where = f"{name} / {panel['title']!r} / {target['legendFormat']!r}: {expr}"
            result = await prom.query(expr, at)
            assert result, f"no data: {where}"
            if finite:
                numbers = [float(r["value"][1]) for r in result]
                assert any(math.isfinite(x) for x in numbers), f"only NaN: {where}"


def target(dashes: dict[str, dict[str, Any]], file: str, title: str, legend: str) -> str:
    for panel in query_panels(dashes[file]):
        if panel["title"] == title:
            for t in panel["targets"]:
                if t["legendFormat"] == legend:
                    return str(t["expr"])
    raise AssertionError(f"{file}: no panel {title!r} with a target {legend!r}")


async def check_figures(
    prom: Prometheus,
    dashes: dict[str, dict[str, Any]],
    traffic: Traffic,
    instance: str,
    at: float,
    window: int,
) -> None:
    values = {
        "job": JOB,
        "instance": instance,
        "__rate_interval": f"{window}s",
        "__interval": "1s",
        "__range": f"{window}s",
    }

    async def panel(file: str, title: str, legend: str) -> float:
        return await prom.value(substitute(target(dashes, file, title, legend), values), at)

    async def count(file: str, title: str, legend: str) -> float:
        """A per-second panel's figure times the window: the increase over the run."""
        return await panel(file, title, legend) * window

    ov, room = "danmaku-overview.json", "danmaku-room.json"
    connected = VIEWERS + SENDERS
    # Rates over the whole run are exact counts (unlabeled counters start at 0).
    assert await count(ov, "Comments /s", "accepted") == pytest.approx(ACCEPTED)
    assert await count(ov, "Comments accepted /s", "accepted") == pytest.approx(ACCEPTED)
    assert await count(room, "Comments /s", "accepted") == pytest.approx(ACCEPTED)
    # received: the anonymous attempt too (and the too-long one, if counted as received)
    received = await count(ov, "Comments /s", "received")
    assert received in (pytest.approx(ACCEPTED + 1), pytest.approx(ACCEPTED + 2))
    assert await count(ov, "Frames /s", "built (workers)") == pytest.approx(traffic.frames)
    assert await count(ov, "Frames /s", "received (gateways)") == pytest.approx(traffic.frames)
    assert await count(ov, "Frames /s", "written to viewers") == pytest.approx(traffic.writes)
    assert await count(room, "Frames built /s", "frames") == pytest.approx(traffic.frames)
    assert await count(ov, "Guest sessions /s", "sessions") == pytest.approx(1)
    assert await panel(ov, "Items per frame", "average") == pytest.approx(ACCEPTED / traffic.frames)
    assert await count(ov, "Bytes out /s", "{{instance}}") > traffic.writes * 50
    # Gauges at the last scrape.
    assert await panel(ov, "Viewers connected", "open") == connected
    assert await panel(room, "Viewers connected", "open") == connected
    assert await panel(ov, "Connections open", "{{instance}}") == connected
    assert await panel(ov, "Rooms held by workers", "rooms") == 1
    assert await panel(room, "Rooms (gateway / worker)", "gateway rooms") == 1
    assert await panel(ov, "Processes up", "up") == 1
    assert await panel(room, "Up", "up") == 1
    assert await panel(ov, "CPU per process", "{{job}} {{instance}}") > 0
    assert await panel(ov, "Resident memory per process", "{{job}} {{instance}}") > 10e6
    p99 = await panel(ov, "End-to-end p99", "p99")
    assert 0 < p99 < 5, p99
    # Labeled counters: raw values (their first event is invisible to rate()).
    sel = f'job="{JOB}"'
    raw = {
        f'danmaku_comments_rejected_total{{{sel},code="too_long"}}': 1,
        f'danmaku_comments_rejected_total{{{sel},code="unauthorized"}}': 1,
        f'danmaku_handshakes_rejected_total{{{sel},reason="bad_room"}}': 1,
        f'danmaku_connections_opened_total{{{sel},auth="anonymous"}}': VIEWERS,
        f'danmaku_connections_opened_total{{{sel},auth="user"}}': SENDERS,
        f'danmaku_latency_seconds_count{{{sel},stage="ingest"}}': ACCEPTED,
        f'danmaku_latency_seconds_count{{{sel},stage="merge"}}': ACCEPTED,
        f'danmaku_latency_seconds_count{{{sel},stage="end_to_end"}}': ACCEPTED,
        f'danmaku_latency_seconds_count{{{sel},stage="deliver"}}': traffic.frames,
        f'danmaku_leases_total{{{sel},event="acquired"}}': 1,
        f"danmaku_frame_items_sum{{{sel}}}": ACCEPTED,
        f"danmaku_frame_items_count{{{sel}}}": traffic.frames,
    }
    for expr, expected in raw.items():
        assert await prom.value(f"sum({expr})", at) == expected, expr
