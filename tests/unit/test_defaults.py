"""Defaults live in ``Settings`` only: a constructor or a record that takes a limit by
the name of a ``Settings`` field defaults to ``config.DEFAULTS``, never to a literal copy
of the value (a copy drifts when the setting's default changes)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from danmaku.config import Settings

PACKAGE = Path(__file__).resolve().parents[2] / "danmaku"
TRIVIAL = (0, 0.0, None, False, True, "")  # too common to call a copy


def literal_copies() -> list[str]:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            pairs: list[tuple[str, ast.expr]] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                positional = a.posonlyargs + a.args
                pairs += [
                    (arg.arg, d)
                    for arg, d in zip(
                        positional[len(positional) - len(a.defaults) :], a.defaults, strict=True
                    )
                ]
                pairs += [
                    (arg.arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d
                ]
            elif isinstance(node, ast.ClassDef):
                pairs += [
                    (b.target.id, b.value)
                    for b in node.body
                    if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name) and b.value
                ]
            for name, value in pairs:
                if (
                    isinstance(value, ast.Constant)
                    and name in defaults
                    and value.value not in TRIVIAL
                    and value.value == defaults[name]
                ):
                    found.append(
                        f"{path.relative_to(PACKAGE)}:{node.lineno} {name}={value.value!r}"
                    )
    return found


def test_no_literal_copy_of_a_settings_default() -> None:
    assert literal_copies() == []
