"""Rewrite the settings table in docs/operations.md from ``danmaku.config.Settings``.

Run ``.venv/bin/python scripts/settings_table.py`` after adding or changing a setting;
``tests/unit/test_docs.py`` fails while a setting or its default is missing there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from danmaku.config import Settings

HEADER = "| variable | flag | default | meaning |"
DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def rows() -> list[str]:
    out = [HEADER, "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = str(f.metadata["help"]).replace("|", "\\|")
        out.append(f"| `{f.metadata['env']}` | `{flag}` | `{f.default!r}` | {help_text} |")
    return out


def main() -> None:
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    DOC.write_text("\n".join([*lines[:start], *rows(), *lines[end:]]) + "\n")


if __name__ == "__main__":
    main()
