"""The report: a JSON document with stable keys, built from a ``RunResult``.

Schema ``danmaku-loadtest/1`` (keys are only ever added):

* ``scenario``: the resolved scenario; ``target``; ``run_id``; ``started_at`` (ISO);
* ``totals``: client counts over the whole run (connections, comments sent/acked/
  rejected/skipped, frames, deliveries = items x receiving connections, bytes,
  ``latency_ms`` {count, mean, p50, p90, p99, p99_9, max}, ``ack_latency_ms``, seq gaps,
  duplicates, ``frame_dropped_items``, ``errors`` by kind, ``closes`` by code);
* ``phases``: per phase the same client counts, the target (``comments_target``: the
  integral of the phase's rate; ``rate_target`` is its final rate), ``sent_vs_target``,
  ``items_per_viewer_per_s`` (deliveries to viewers / seconds viewers were connected:
  a storm's viewers count from their handshake on), the load generator's CPU and loop lag
  (``generator``), and ``server`` figures between the phase's boundaries (with the
  server's RSS at both: ``rss_bytes_start``, ``rss_bytes_end``; and the machine's CPU:
  ``host_cpu_pct``, ``generator_cpu_pct``, ``other_cpu_pct``, see ``_host_load``). Comments
  sent count in the phase of their due time; acks, shed acks and deliveries when they
  arrive;
* ``generators``: per load process its role, CPU % of one core and event-loop lag over
  the phases (a viewer process that falls behind delays what it measures);
* ``warnings``: the offered load fell short of the target, a load process fell
  behind (its loop lag p99 over ``LAG_WARN_MS``), other work on the machine competed
  for the cores (over ``OTHER_LOAD_WARN_PCT`` of a core);
* ``server``: figures between the ``base`` sample (before connecting) and ``final``
  (after settling): CPU seconds of the server process and its Redis, RSS at each point,
  counter deltas (``frame_writes``, ``comments_accepted``, ``comments_shed``,
  ``items_dropped``, ``viewer_frames_dropped``, ...), deliveries and frame writes per
  server CPU-second over the phases;
* ``costs``: per-unit costs for ``plan`` (see docs/capacity.md for what each includes);
* ``checks``: client-side counts against the server's own counters;
* ``timeseries``: one row per second;
* ``ok``: no errors and no failures.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from loadtest.client import Counters, StageCounters
from loadtest.probe import ServerSample, delta
from loadtest.runner import RunResult
from loadtest.stats import Latency, ratio

SCHEMA = "danmaku-loadtest/1"
SHORT_OF_TARGET = 0.95  # warn when a phase sent less than this share of its target
LAG_WARN_MS = 100.0  # warn when a load process's loop lag p99 exceeds this in a phase
OTHER_LOAD_WARN_PCT = 25.0  # warn when other work on the machine used this much of a core


def _counts(st: StageCounters) -> dict[str, Any]:
    return {
        "comments_sent": st.sent,
        "comments_acked": st.acked,
        "comments_shed": st.shed,
        "comments_rejected": st.rejected,
        "comments_skipped": st.skipped,
        "comments_late": st.late,
        "frames_received": st.frames,
        "viewer_frames_received": st.viewer_frames,
        "deliveries": st.items,
        "viewer_deliveries": st.viewer_items,
        "bytes_received": st.bytes,
        "viewer_bytes_received": st.viewer_bytes,
        "seq_gaps": st.seq_gaps,
        "duplicate_frames": st.duplicates,
        "latency_ms": st.latency.summary(),
        "ack_latency_ms": st.ack_latency.summary(),
    }


def _rss(s: ServerSample | None) -> int | None:
    return s.rss_bytes if s else None


def build(res: RunResult) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    sc = res.scenario
    c = res.counters or Counters(len(sc.phases) + 2)
    total = c.total()
    totals = {
        "viewers": sc.total_viewers,
        "senders": sc.senders,
        "rooms": sc.rooms,
        "connections_peak": c.connected_peak,
        "comments_target": round(sc.offered_by(sc.duration_s)),
        **_counts(total),
        "frame_dropped_items": sum(c.frame_dropped.values()),
        "errors": dict(sorted(c.errors.items())),
        "closes": dict(sorted(c.closes.items())),
    }
    phases = []
    viewers = sc.viewers
    for i, ph in enumerate(sc.phases):
        st = c.stages[i + 1]
        viewers += ph.join
        server = None
        if len(res.boundaries) > i + 1:
            server = _server_rates(delta(res.boundaries[i], res.boundaries[i + 1]), st)
            server["rss_bytes_start"] = _rss(res.boundaries[i])
            server["rss_bytes_end"] = _rss(res.boundaries[i + 1])
            server.update(_host_load(server, c, i + 1))
        phases.append(
            {
                "name": ph.name,
                "start_s": sc.phase_start(i),
                "duration_s": ph.duration_s,
                "rate_target": ph.rate,
                "rate_from": ph.rate_from,
                "comments_target": round(ph.offered),
                "comments_per_s_target": round(ph.offered / ph.duration_s, 2),
                **_counts(st),
                "comments_per_s": round(st.sent / ph.duration_s, 2),
                "sent_vs_target": ratio(st.sent, ph.offered),
                "deliveries_per_s": round(st.items / ph.duration_s, 1),
                "viewers": viewers,
                "viewer_seconds": round(st.viewer_seconds, 1),
                "items_per_viewer_per_s": ratio(st.viewer_items, st.viewer_seconds),
                "generator": _generator_phase(c, range(i + 1, i + 2)),
                "server": server,
            }
        )
    server = _server_section(res, total)
    phase_stages = range(1, len(sc.phases) + 1)
    generators = [
        {
            "proc": ps.proc,
            "role": ps.role,
            "viewers": ps.viewers,
            "senders": ps.senders,
            "cpu_pct": ps.cpu_pct(phase_stages),
            "loop_lag_ms": Latency.merged(ps.lag[i] for i in phase_stages).summary(),
        }
        for ps in sorted(c.procs.values(), key=lambda ps: ps.proc)
    ]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": res.run_id,
        "started_at": dt.datetime.fromtimestamp(res.started_at, dt.UTC).isoformat(),
        "target": res.target,
        "scenario": sc.to_dict(),
        "totals": totals,
        "phases": phases,
        "generators": generators,
        "server": server,
        "costs": _costs(res, server),
        "checks": _checks(total, server),
        "timeseries": _series(res),
        "failures": res.failures,
        "warnings": _warnings(phases),
    }
    report["ok"] = not res.failures and not c.errors and res.final is not None
    return report


def _generator_phase(c: Counters, stages: range) -> dict[str, Any]:
    """Per role (``viewers``: processes with viewers; ``senders``: with senders), the
    busiest process's CPU % and the worst loop lag p99 over ``stages``."""
    out: dict[str, Any] = {}
    for role in ("viewers", "senders"):
        procs = [ps for ps in c.procs.values() if (ps.viewers if role == "viewers" else ps.senders)]
        if not procs:
            continue
        cpus = [x for x in (ps.cpu_pct(stages) for ps in procs) if x is not None]
        lags = [Latency.merged(ps.lag[i] for i in stages) for ps in procs]
        out[role] = {
            "procs": len(procs),
            "cpu_pct_max": max(cpus) if cpus else None,
            "loop_lag_p99_ms_max": max(lat.percentile(99) for lat in lags),
            "loop_lag_max_ms": round(max(lat.summary()["max"] for lat in lags), 1),
        }
    return out


def _warnings(phases: list[dict[str, Any]]) -> list[str]:
    out = []
    for ph in phases:
        other = (ph.get("server") or {}).get("other_cpu_pct")
        if other is not None and other > OTHER_LOAD_WARN_PCT:
            out.append(
                f"phase {ph['name']}: other work on this machine used {other:.0f}% of a core "
                "(neither the server, its Redis nor the load generator): latency and "
                "throughput include that contention"
            )
        target = ph["comments_target"]
        if target and ph["comments_sent"] < SHORT_OF_TARGET * target:
            out.append(
                f"phase {ph['name']}: senders sent {ph['comments_sent']} of the "
                f"{target} comments due ({ph['comments_per_s']}/s of "
                f"{ph['comments_per_s_target']}/s; late {ph['comments_late']}, skipped at "
                f"max_inflight {ph['comments_skipped']})"
            )
        for role, gen in ph["generator"].items():
            if gen["loop_lag_p99_ms_max"] > LAG_WARN_MS:
                what = (
                    "viewer-side latency and deliveries/s include client delay"
                    if role == "viewers"
                    else "sends were delayed"
                )
                cpu = gen["cpu_pct_max"]
                why = "its own work" if cpu is not None and cpu >= 80 else "cores busy elsewhere"
                out.append(
                    f"phase {ph['name']}: a {role} load process fell behind (loop lag p99 "
                    f"{gen['loop_lag_p99_ms_max']:.0f} ms, cpu {cpu}%: {why}): {what}"
                )
    return out


def _host_load(server: dict[str, Any], c: Counters, stage: int) -> dict[str, float | None]:
    """The machine's CPU over a phase (% of one core, all cores): ``host_cpu_pct``, of it
    ``generator_cpu_pct`` (the load processes) and ``other_cpu_pct``: what neither the
    server, its Redis nor the load generator used, i.e. other people's work on a shared
    machine, which competes with the run for the cores."""
    wall = server.get("wall_s") or 0.0
    host = server.get("host_cpu_s")
    gen = sum(ps.cpu_s[stage] for ps in c.procs.values() if stage < len(ps.cpu_s))
    out: dict[str, float | None] = {
        "host_cpu_pct": None if host is None else ratio(100 * host, wall),
        "generator_cpu_pct": ratio(100 * gen, wall),
        "other_cpu_pct": None,
    }
    if host is not None:
        own = (server.get("cpu_s") or 0.0) + (server.get("redis_cpu_s") or 0.0) + gen
        out["other_cpu_pct"] = ratio(100 * max(host - own, 0.0), wall)
    return out


def _server_rates(d: dict[str, float | None], st: StageCounters) -> dict[str, Any]:
    cpu = d.get("cpu_s")
    out: dict[str, Any] = dict(d)
    out["deliveries_per_cpu_s"] = ratio(st.items, cpu or 0.0)
    out["frame_writes_per_cpu_s"] = ratio(d.get("frame_writes") or 0.0, cpu or 0.0)
    out["cpu_pct"] = ratio(100 * (cpu or 0.0), d.get("wall_s") or 0.0)
    return out


def _server_section(res: RunResult, total: StageCounters) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": res.probe_source,
        "scrape_failures": res.scrape_failures,
        "rss_bytes": {
            "base": _rss(res.base),
            "ready": _rss(res.ready),
            "end": _rss(res.final),
            "max": max((t.server.rss_bytes or 0 for t in res.ticks), default=None),
        },
        "redis_rss_bytes": res.final.redis_rss_bytes if res.final else None,
    }
    if res.base and res.final:
        out["run"] = delta(res.base, res.final)
    if res.ready and res.boundaries:
        out["idle"] = delta(res.ready, res.boundaries[0])
    if len(res.boundaries) >= 2:
        phases = _server_rates(delta(res.boundaries[0], res.boundaries[-1]), total)
        out["phases"] = phases
        out["deliveries_per_cpu_s"] = phases["deliveries_per_cpu_s"]
        out["frame_writes_per_cpu_s"] = phases["frame_writes_per_cpu_s"]
    return out


def _costs(res: RunResult, server: dict[str, Any]) -> dict[str, float | None]:
    """Unit costs for the planner. ``cpu_us_per_frame_write`` is the phases' CPU above
    the idle rate, attributed wholly to frame writes (ingest and merge included, so an
    upper bound); ``..._all`` keeps the idle CPU in. ``cpu_us_per_comment`` attributes
    all of it to comments instead. Idle CPU and memory per connection come from the
    quiet window after connecting (fixed background costs included)."""
    ph = server.get("phases") or {}
    idle = server.get("idle") or {}
    conns = res.counters.connected_peak if res.counters else 0
    # The ready sample is taken once the initial viewers and senders are connected;
    # viewers that join in a phase come later and are not in it.
    initial = min(conns, res.scenario.viewers + res.scenario.senders)
    cpu = ph.get("cpu_s") or 0.0
    rss = server["rss_bytes"]
    rss_per_conn = None
    if rss["base"] is not None and rss["ready"] is not None and initial:
        rss_per_conn = ratio(rss["ready"] - rss["base"], initial)
    # Marginal CPU of the phases: minus what the server burnt per second while idle.
    idle_rate = (idle.get("cpu_s") or 0.0) / (idle.get("wall_s") or 1.0)
    busy = max(cpu - idle_rate * (ph.get("wall_s") or 0.0), 0.0)
    return {
        "cpu_us_per_frame_write": ratio(busy * 1e6, ph.get("frame_writes") or 0.0),
        "cpu_us_per_frame_write_all": ratio(cpu * 1e6, ph.get("frame_writes") or 0.0),
        "cpu_us_per_comment": ratio(cpu * 1e6, ph.get("comments_accepted") or 0.0),
        "idle_cpu_us_per_conn_s": ratio(
            (idle.get("cpu_s") or 0.0) * 1e6, initial * (idle.get("wall_s") or 0.0)
        ),
        "rss_bytes_per_conn": rss_per_conn,
        "redis_cpu_us_per_comment": None
        if ph.get("redis_cpu_s") is None
        else ratio(ph["redis_cpu_s"] * 1e6, ph.get("comments_accepted") or 0.0),
        "bytes_per_frame_write": ratio(ph.get("bytes_out") or 0.0, ph.get("frame_writes") or 0.0),
        "connections": conns,
    }


def _checks(total: StageCounters, server: dict[str, Any]) -> dict[str, Any]:
    run = server.get("run") or {}
    writes = run.get("frame_writes")
    out: dict[str, Any] = {
        "frames_received": total.frames,
        "server_frame_writes": writes,
        "frames_vs_server_writes": ratio(total.frames, writes or 0.0),
        "comments_acked": total.acked,
        "comments_shed": total.shed,
        "server_comments_accepted": run.get("comments_accepted"),
        "server_comments_shed": run.get("comments_shed"),
    }
    return out


def _series(res: RunResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    prev = None
    for t in res.ticks:
        dt_s = (t.t - prev.t) if prev else 1.0
        s = t.server
        ps: ServerSample | None = prev.server if prev else None
        cpu = redis_cpu = None
        if ps and s.cpu_s is not None and ps.cpu_s is not None and dt_s > 0:
            cpu = round(100 * (s.cpu_s - ps.cpu_s) / dt_s, 1)
        if ps and s.redis_cpu_s is not None and ps.redis_cpu_s is not None and dt_s > 0:
            redis_cpu = round(100 * (s.redis_cpu_s - ps.redis_cpu_s) / dt_s, 1)

        def per_s(attr: str, t: Any = t, prev: Any = prev, dt_s: float = dt_s) -> float:
            before = getattr(prev, attr) if prev else 0
            return round((getattr(t, attr) - before) / dt_s, 1) if dt_s > 0 else 0.0

        rows.append(
            {
                "t": t.t,
                "stage": t.stage,
                "connected": t.connected,
                "frames_per_s": per_s("frames"),
                "deliveries_per_s": per_s("items"),
                "sent_per_s": per_s("sent"),
                "acked_per_s": per_s("acked"),
                "errors": t.errors,
                "p50_ms": t.p50_ms,
                "p99_ms": t.p99_ms,
                "server_cpu_pct": cpu,
                "redis_cpu_pct": redis_cpu,
                "server_rss_bytes": s.rss_bytes,
            }
        )
        prev = t
    return rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human summary (what ``--quiet`` still prints)."""
    t, srv, chk = report["totals"], report["server"], report["checks"]
    sc = report["scenario"]
    lat = t["latency_ms"]
    sender_procs = sum(1 for g in report.get("generators", []) if g["role"] == "senders")
    lines = [
        f"scenario {sc['name']}: {t['viewers']} viewers, {t['senders']} "
        f"senders, {t['rooms']} rooms, {sc['procs']} viewer procs + {sender_procs} sender "
        f"procs; {'OK' if report['ok'] else 'NOT OK'}",
        f"comments: target {t['comments_target']}, sent {t['comments_sent']}, acked "
        f"{t['comments_acked']} (shed {t['comments_shed']}), rejected "
        f"{t['comments_rejected']}, skipped {t['comments_skipped']}, late {t['comments_late']}",
        f"frames received {t['frames_received']}, deliveries {t['deliveries']} (to viewers "
        f"{t['viewer_deliveries']}), seq gaps {t['seq_gaps']}; server frame writes "
        f"{chk['server_frame_writes']} (ratio {chk['frames_vs_server_writes']})",
        f"latency ms: p50 {lat['p50']:.0f}  p90 {lat['p90']:.0f}  p99 {lat['p99']:.0f}  "
        f"p99.9 {lat['p99_9']:.0f}  max {lat['max']:.0f}  (n={lat['count']:.0f})",
    ]
    for ph in report["phases"]:
        pl, ps = ph["latency_ms"], ph["server"] or {}
        gen = ph.get("generator") or {}
        load = ", ".join(
            f"{role} cpu {g['cpu_pct_max']}% lag p99 {g['loop_lag_p99_ms_max']:.0f} ms"
            for role, g in gen.items()
        )
        lines.append(
            f"  phase {ph['name']}: {ph['comments_per_s']}/s sent of "
            f"{ph['comments_per_s_target']}/s target ({ph['comments_sent']}/"
            f"{ph['comments_target']}), acked {ph['comments_acked']} (shed "
            f"{ph['comments_shed']}), {ph['deliveries_per_s']} deliveries/s, "
            f"{ph['items_per_viewer_per_s']} items/s per viewer ({ph['viewers']}), "
            f"p50 {pl['p50']:.0f} p99 {pl['p99']:.0f} ms"
        )
        lines.append(
            f"    server: cpu {ps.get('cpu_pct')}%, accepted {ps.get('comments_accepted')}, "
            f"shed {ps.get('comments_shed')}, items dropped {ps.get('items_dropped')}, "
            f"viewer frames dropped {ps.get('viewer_frames_dropped')}; load procs: {load}"
        )
    ph = srv.get("phases") or {}
    run = srv.get("run") or {}
    lines.append(
        f"server ({srv['source']}): cpu {ph.get('cpu_s')} s over phases, redis cpu "
        f"{ph.get('redis_cpu_s')} s; {srv.get('frame_writes_per_cpu_s')} frame writes and "
        f"{srv.get('deliveries_per_cpu_s')} deliveries per cpu-s"
    )
    lines.append(
        f"server counters: accepted {run.get('comments_accepted')}, shed "
        f"{run.get('comments_shed')}, items dropped {run.get('items_dropped')}, viewer frames "
        f"dropped {run.get('viewer_frames_dropped')}; rss {srv['rss_bytes']}"
    )
    if t["errors"]:
        lines.append(f"errors: {t['errors']}")
    for warning in report.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    for failure in report["failures"]:
        lines.append(f"FAILURE: {failure.strip().splitlines()[-1] if failure.strip() else ''}")
    return lines
