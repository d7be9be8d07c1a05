"""Weighted least squares with standard errors, in plain Python (no numpy dependency).

``fit(rows, names)`` solves ``y ~ sum(coef[k] * x[k])`` for rows ``(x, y, weight)``;
it returns the coefficients, their standard errors (from the residual variance, or
``None`` when there are no spare rows) and the residuals. ``FitError`` when the rows
cannot tell the coefficients apart (too few rows or a column that is a mix of others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


class FitError(ValueError):
    """The rows do not determine every coefficient."""


@dataclass
class Fit:
    coef: dict[str, float]
    stderr: dict[str, float | None]
    residuals: list[float]
    dof: int


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """``a x = b`` by Gauss-Jordan with partial pivoting; ``FitError`` when singular."""
    n = len(a)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    scale = max((abs(v) for row in a for v in row), default=0.0) or 1.0
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) <= 1e-12 * scale:
            raise FitError("the measurements cannot tell the coefficients apart")
        m[col], m[pivot] = m[pivot], m[col]
        p = m[col][col]
        m[col] = [v / p for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0.0:
                f = m[r][col]
                m[r] = [v - f * w for v, w in zip(m[r], m[col], strict=True)]
    return [m[i][n] for i in range(n)]


def _inverse(a: list[list[float]]) -> list[list[float]]:
    n = len(a)
    cols = [_solve(a, [1.0 if i == j else 0.0 for i in range(n)]) for j in range(n)]
    return [[cols[j][i] for j in range(n)] for i in range(n)]


def fit(rows: Sequence[tuple[Sequence[float], float, float]], names: Sequence[str]) -> Fit:
    """Weighted least squares of ``y`` on the columns ``names`` of ``x``.

    Columns are scaled to unit size before solving so microsecond costs and whole-core
    intercepts are solved with the same precision."""
    k = len(names)
    if len(rows) < k:
        raise FitError(f"{len(rows)} measurements for {k} coefficients")
    norms = [max((abs(x[j]) for x, _, _ in rows), default=0.0) or 1.0 for j in range(k)]
    xtx = [[0.0] * k for _ in range(k)]
    xty = [0.0] * k
    for x, y, w in rows:
        xs = [x[j] / norms[j] for j in range(k)]
        for i in range(k):
            xty[i] += w * xs[i] * y
            for j in range(k):
                xtx[i][j] += w * xs[i] * xs[j]
    scaled = _solve(xtx, xty)
    coef = [scaled[j] / norms[j] for j in range(k)]
    residuals = [y - sum(c * v for c, v in zip(coef, x, strict=True)) for x, y, _ in rows]
    dof = len(rows) - k
    stderr: dict[str, float | None] = {n: None for n in names}
    if dof > 0:
        # Weights are relative (seconds measured); their scale cancels out of
        # sigma^2 (X'WX)^-1, so they need no normalising.
        sigma2 = sum(w * r * r for (_, _, w), r in zip(rows, residuals, strict=True)) / dof
        inv = _inverse(xtx)
        for j, name in enumerate(names):
            stderr[name] = math.sqrt(max(sigma2 * inv[j][j], 0.0)) / norms[j]
    return Fit(dict(zip(names, coef, strict=True)), stderr, residuals, dof)
