"""The alerting rules (grafana/alerts.yml): valid, each tested by promtool with synthetic
series (grafana/alerts_test.yml), each with a runbook line in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
OPERATIONS = GRAFANA.parent / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian: prometheus package) not installed"
)


def _alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", (GRAFANA / "alerts.yml").read_text(), re.M)


@needs_promtool
def test_the_rules_are_valid() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"],
        cwd=GRAFANA,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_every_alert_fires_on_its_synthetic_series() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=GRAFANA,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests = (GRAFANA / "alerts_test.yml").read_text()
    for name in _alerts():
        fires = re.search(rf"alertname: {name}\n\s*exp_alerts:\n\s*- exp_labels", tests)
        assert fires, f"{name}: no test where it fires"


def test_every_alert_has_a_runbook_line_and_prometheus_loads_the_rules() -> None:
    names = _alerts()
    assert len(names) >= 10
    runbook = OPERATIONS.read_text()
    for name in names:
        assert f"| `{name}` |" in runbook, f"{name}: no runbook row in docs/operations.md"
    config = (GRAFANA / "prometheus.yml").read_text()
    assert re.search(r"^rule_files:\n\s*- alerts\.yml", config, re.M)
