"""``loadtest.gwbench``, shrunk to seconds: the reference case (timed and drained
viewers, Poisson senders) against a real gateway, worker and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def gwbench(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.gwbench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_shrunk_reference_run_times_every_comment_and_drains_the_rest() -> None:
    r = gwbench(
        "reference",
        *("--viewers", "60", "--measure", "10", "--rate", "40", "--senders", "8"),
        *("--seconds", "4", "--warmup-s", "2"),
    )
    assert r["viewers_closed"] == 0
    # The worker ticks every 100 ms: ~10 frames/s reach each viewer, timed or drained.
    assert 7 <= float(r["frames_per_viewer_s"]) <= 11
    drained_per_viewer = float(r["drained_frames_per_s"]) / 50
    assert 7 <= drained_per_viewer <= 11
    # Every comment is shown (no display budget) and timed by each of the 10 viewers.
    samples = int(r["latency_samples"])
    assert 10 * 40 * 4 * 0.6 <= samples <= 10 * 40 * 4 * 1.4
    assert 0 < float(r["p50_ms"]) <= float(r["p99_ms"]) < 5000
    assert float(r["frame_writes_per_cpu_s"]) > 0


def test_shrunk_egress_pairs_show_deflate_halving_the_bytes_per_comment() -> None:
    """``gwbench egress``: the same scenario with the gateway refusing and agreeing to
    permessage-deflate; every viewer offers it, all of them get it when it is on."""
    r = gwbench(
        "egress",
        *("--pairs", "1", "--viewers", "60", "--measure", "10", "--rate", "40"),
        *("--senders", "8", "--seconds", "4", "--warmup-s", "2"),
    )
    off, on = r["off"], r["on"]
    assert 0 < on["egress_bytes_per_comment"] < 90 < off["egress_bytes_per_comment"]
    assert r["ratio_egress_on_off"] <= 0.5
    assert on["gateway_frame_writes_per_cpu_s"] > 0 and off["gateway_frame_writes_per_cpu_s"] > 0
