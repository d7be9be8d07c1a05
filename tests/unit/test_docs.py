"""The documentation names every setting and every error code the code has."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from danmaku import protocol
from danmaku.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented_with_its_default() -> None:
    text = (DOCS / "operations.md").read_text()
    for f in dataclasses.fields(Settings):
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `{f.metadata['env']}` |")),
            "",
        )
        assert row, f"{f.metadata['env']} missing from docs/operations.md"
        assert f"`{f.default!r}`" in row, f"{f.metadata['env']}: default not documented"


def test_every_error_and_close_code_is_documented() -> None:
    text = (DOCS / "protocol.md").read_text()
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in text, code
    for close in (1000, 1001, 1008, 1009, 1011, 1013, protocol.CLOSE_TOO_SLOW):
        assert f"| {close} |" in text, close


def test_every_redis_operation_has_its_metric_labels_precreated() -> None:
    import re

    from danmaku.metrics import REDIS_OPS

    store = DOCS.parent / "danmaku" / "store"
    source = "".join(f.read_text() for f in sorted(store.glob("*.py")))
    assert set(re.findall(r'\b_?call\(\s*"([a-z_]+)"', source)) == set(REDIS_OPS)


def test_every_room_setting_is_in_the_room_settings_table() -> None:
    from danmaku.rules.room_settings import SCHEMA

    text = (DOCS / "operations.md").read_text()
    for setting in SCHEMA:
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{setting.name}` |")), "")
        assert row, f"room setting {setting.name} missing from docs/operations.md"
        assert f"| {setting.kind} |" in row, setting.name
