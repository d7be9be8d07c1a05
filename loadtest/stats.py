"""Measurement primitives: latency histograms, counters, Prometheus text parsing.

``Latency`` wraps an HDR histogram (1 ms .. 10 min, 3 significant digits) in milliseconds;
it pickles through ``encode``/``decode`` so load-generator processes can send theirs to
the coordinator, which merges them. ``Tally`` is a plain counter dict that merges by sum.
``parse_prometheus`` reads the text exposition format into ``{series: value}`` and
``metric_delta`` subtracts two scrapes. All pure, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)
_LOWEST_MS = 1
_HIGHEST_MS = 600_000
_DIGITS = 3


class Latency:
    """A latency distribution in milliseconds. Values are clamped to [0, 10 min]."""

    def __init__(self) -> None:
        self._h = HdrHistogram(_LOWEST_MS, _HIGHEST_MS, _DIGITS)
        self._max = 0.0

    def record(self, ms: float) -> None:
        v = min(max(ms, 0.0), float(_HIGHEST_MS))
        self._h.record_value(max(round(v), _LOWEST_MS) if v >= 0.5 else 0)
        self._max = max(self._max, v)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, p: float) -> float:
        return float(self._h.get_value_at_percentile(p)) if self.count else 0.0

    def merge(self, other: Latency) -> None:
        if other.count:
            self._h.add(other._h)
            self._max = max(self._max, other._max)

    def summary(self) -> dict[str, float]:
        """``count``, ``mean``, ``p50``, ``p90``, ``p99``, ``p99_9``, ``max`` (ms; zeros when
        empty). These key names are part of the report's stable schema."""
        out: dict[str, float] = {"count": float(self.count)}
        out["mean"] = round(float(self._h.get_mean_value()), 2) if self.count else 0.0
        for key, p in PERCENTILES:
            # Values are kept to the millisecond, the max exactly: 91.9 ms is counted as
            # 92, and a percentile must not come out above the largest value seen.
            out[key] = min(self.percentile(p), round(self._max, 1))
        out["max"] = round(self._max, 1)
        return out

    def encode(self) -> tuple[str, float]:
        """A picklable, compact form (HDR base64 + the exact max)."""
        raw = self._h.encode()
        return (raw.decode() if isinstance(raw, bytes) else str(raw), self._max)

    @classmethod
    def decode(cls, data: tuple[str, float]) -> Latency:
        lat = cls()
        encoded, mx = data
        if encoded:
            lat._h.decode_and_add(encoded)
        lat._max = mx
        return lat

    @classmethod
    def merged(cls, items: Iterable[Latency]) -> Latency:
        out = cls()
        for item in items:
            out.merge(item)
        return out


class Tally(dict[str, int]):
    """Named counts that merge by addition (errors by kind, closes by code)."""

    def add(self, key: str, n: int = 1) -> None:
        self[key] = self.get(key, 0) + n

    def merge(self, other: Mapping[str, int]) -> None:
        for key, n in other.items():
            self.add(key, n)


# ---- Prometheus text format --------------------------------------------------------------

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """``{"name{labels}": value}`` for every sample line (labels exactly as written);
    comments and malformed lines are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1) + (m.group(2) or "")] = value
    return out


def metric_total(samples: Mapping[str, float], name: str) -> float:
    """Sum of every series of ``name`` (all label sets); 0 when absent."""
    total = 0.0
    for key, value in samples.items():
        base = key.split("{", 1)[0]
        if base == name and not math.isnan(value):
            total += value
    return total


def metric_delta(
    before: Mapping[str, float], after: Mapping[str, float], names: Iterable[str]
) -> dict[str, float]:
    """``after - before`` of each metric name (summed over labels)."""
    return {n: metric_total(after, n) - metric_total(before, n) for n in names}


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded to 4 significant places, None when undefined."""
    if not denominator:
        return None
    value = numerator / denominator
    return float(f"{value:.4g}")


def zipf_weights(n: int, s: float) -> list[float]:
    """Normalised Zipf popularity of ``n`` ranks with exponent ``s`` (0 = uniform)."""
    raw = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def apportion(count: int, weights: list[float]) -> list[int]:
    """Split ``count`` into integer shares proportional to ``weights`` (largest remainder):
    the shares sum to ``count`` exactly and each is within 1 of its exact value."""
    exact = [count * w for w in weights]
    shares = [math.floor(x) for x in exact]
    left = count - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[:left]:
        shares[i] += 1
    return shares


def summarise_numbers(values: list[float]) -> dict[str, Any]:
    """min/mean/max of a list (for time series columns); zeros when empty."""
    if not values:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}
