"""Scenarios: what load to generate, read from TOML and overridable from the command line.

A scenario is a plain TOML file (``loadtest/scenarios/NAME.toml`` or any path). Every knob
lives in the file; ``--set dotted.key=value`` overrides any of them (values are parsed as
TOML, so ``--set phases.1.rate=500`` is an int and ``--set name=x`` a string). Parsing is
pure: ``load`` reads a file, ``apply_overrides`` edits the raw dict, ``Scenario.from_dict``
validates and returns frozen dataclasses. Nothing here does I/O beyond reading the file.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).parent / "scenarios"
ARRIVALS = ("even", "jitter")
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x`` (pure, fast)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class ScenarioError(ValueError):
    """The scenario file or an override is malformed; the message says which key."""


@dataclass(frozen=True)
class Phase:
    """One timed stretch of the run.

    ``rate``: aggregate comments/s over all senders (linear ramp from ``rate_from`` when
    that is set). ``join``: extra viewers that connect at the phase start, ``join_rate`` per
    second (0 = all at once: a storm). ``reconnect_fraction``: that share of connected
    viewers drop and reconnect with ``since`` at the phase start, spread over
    ``reconnect_spread_s``. ``slow_fraction``: that share of viewers stop reading for the
    whole phase (and resume afterwards).
    """

    name: str
    duration_s: float
    rate: float
    rate_from: float | None = None
    join: int = 0
    join_rate: float = 0.0
    reconnect_fraction: float = 0.0
    reconnect_spread_s: float = 1.0
    slow_fraction: float = 0.0

    def rate_at(self, t: float) -> float:
        """Target aggregate comments/s ``t`` seconds into the phase."""
        if self.rate_from is None or self.duration_s <= 0:
            return self.rate
        frac = min(max(t / self.duration_s, 0.0), 1.0)
        return self.rate_from + (self.rate - self.rate_from) * frac

    def _ramp(self) -> tuple[float, float]:
        """``(a, b)`` of the rate ``a + b t`` over the phase."""
        if self.rate_from is None or self.duration_s <= 0:
            return self.rate, 0.0
        return self.rate_from, (self.rate - self.rate_from) / self.duration_s

    def offered_by(self, t: float) -> float:
        """Comments the phase asks for in its first ``t`` seconds: the integral of
        ``rate_at`` (clamped to the phase)."""
        t = min(max(t, 0.0), self.duration_s)
        a, b = self._ramp()
        return a * t + b * t * t / 2

    @property
    def offered(self) -> float:
        """Comments the whole phase asks for (rate x duration, or the ramp's mean)."""
        return self.offered_by(self.duration_s)

    def time_for(self, x: float) -> float:
        """Seconds into the phase at which ``offered_by`` reaches ``x`` (the inverse;
        clamped to ``[0, duration_s]``)."""
        if x <= 0:
            return 0.0
        a, b = self._ramp()
        # a t + b t^2 / 2 = x, in the form that is stable for b -> 0 and for a = 0
        den = a + math.sqrt(max(a * a + 2 * b * x, 0.0))
        return min(2 * x / den, self.duration_s) if den > 0 else self.duration_s


@dataclass(frozen=True)
class Scenario:
    """A whole run: population, room layout, server settings (local runs) and phases.

    ``viewers`` connect before the first phase (plus each phase's ``join``); ``senders``
    hold one connection each with a distinct user token and share the aggregate rate.
    Rooms get viewers and senders by Zipf popularity with exponent ``zipf_s`` (0 =
    uniform). ``sample_fraction`` of viewers parse every frame and record latency; the
    rest only count frames, items and bytes. ``idle_s``: a quiet window after connecting
    that measures idle CPU per connection. ``settle_s``: time after the last phase for
    in-flight frames to arrive before the counters are read. ``server`` holds
    ``DANMAKU_*`` settings for ``local`` runs (lower-case names without the prefix).

    ``procs`` processes hold the viewers; the senders run in ``sender_procs`` processes
    of their own (0: they share the viewer processes), so a loop busy draining frames
    or connecting a storm of viewers never delays the load it is measuring.

    Sending follows the schedule ``due_time``: the run's comments are numbered in the
    order the rate function asks for them, comment ``n`` is due when ``offered_by``
    reaches ``n + arrival_offset(n)`` and sender ``n mod senders`` sends it. So the
    aggregate follows the target exactly (ramps included) and each sender sends every
    ``senders``-th comment, at ``rate / senders`` per second. ``arrivals``: ``"even"``
    puts comment ``n`` in the middle of its slot (offset 1/2); ``"jitter"`` at a
    pseudo-random point of it (seeded, the same in every process). Even arrivals at a
    rate that divides the tick keep a fixed phase against the server's frame tick, so a
    quiet phase's latency depends on that phase (a run's p50 could be 25 or 65 ms at
    20/s); jittered ones wait a uniform share of the tick, like real viewers.
    """

    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    viewers: int = 100
    senders: int = 10
    rooms: int = 1
    zipf_s: float = 0.0
    tick_ms: int = 100
    sample_fraction: float = 0.1
    max_sampled: int = 200
    connect_rate: float = 1000.0
    idle_s: float = 2.0
    settle_s: float = 1.5
    procs: int = 1
    sender_procs: int = 1
    seed: int = 1
    max_inflight: int = 16
    text_bytes: int = 24
    arrivals: str = "even"
    server: dict[str, Any] = field(default_factory=dict)
    #: Zipf exponent of the senders' rooms (``None``: ``zipf_s``); 0 spreads them evenly,
    #: so every room of a long tail gets comments (``danmaku-loadtest fleet``).
    sender_zipf_s: float | None = None

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    @property
    def total_viewers(self) -> int:
        return self.viewers + sum(p.join for p in self.phases)

    @property
    def sender_proc_count(self) -> int:
        """Processes that run only senders (none without senders)."""
        return min(self.sender_procs, self.senders)

    @property
    def process_count(self) -> int:
        """Load-generator processes: ``procs`` viewer processes + the sender processes."""
        return self.procs + self.sender_proc_count

    def senders_of(self, proc: int) -> list[int]:
        """Global indices of the senders load process ``proc`` runs."""
        if self.sender_proc_count:
            q = proc - self.procs
            if not 0 <= q < self.sender_proc_count:
                return []
            return list(range(q, self.senders, self.sender_proc_count))
        if not 0 <= proc < self.procs:
            return []
        return list(range(proc, self.senders, self.procs))

    def offered_by(self, t: float) -> float:
        """Comments the phases ask for in the first ``t`` seconds (integral of the rate)."""
        total = 0.0
        for p in self.phases:
            if t <= 0:
                break
            total += p.offered_by(t)
            t -= p.duration_s
        return total

    def due_time(self, x: float) -> float | None:
        """Seconds after the start at which ``offered_by`` reaches ``x`` (``x`` > 0), or
        None when the phases ask for fewer comments than that."""
        start = 0.0
        for p in self.phases:
            n = p.offered
            if n > 0 and x <= n:
                return start + p.time_for(x)
            x -= n
            start += p.duration_s
        return None

    def arrival_offset(self, n: int) -> float:
        """Where in its slot comment ``n`` falls: ``1/2`` for even arrivals, else a
        deterministic pseudo-random number in ``(0, 1)`` from ``seed`` and ``n``."""
        if self.arrivals == "even":
            return 0.5
        return (_mix64(self.seed * 0x9E3779B97F4A7C15 + n) >> 11) / float(1 << 53) or 0.5

    def max_sender_rate(self) -> float:
        """The highest per-sender comments/s any phase asks for."""
        peak = max(max(p.rate, p.rate_from or 0.0) for p in self.phases)
        return peak / max(self.senders, 1)

    def phase_at(self, t: float) -> int:
        """Index of the phase running ``t`` seconds after the start (last one after the end)."""
        acc = 0.0
        for i, p in enumerate(self.phases):
            acc += p.duration_s
            if t < acc:
                return i
        return len(self.phases) - 1

    def phase_start(self, index: int) -> float:
        return sum(p.duration_s for p in self.phases[:index])

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario (every default filled in), as the report records it."""
        out = asdict(self)
        out["phases"] = [asdict(p) for p in self.phases]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scenario:
        """Validate a raw (TOML-shaped) dict. Raises ``ScenarioError`` naming the bad key."""
        raw = dict(raw)
        phases_raw = raw.pop("phases", None)
        if not isinstance(phases_raw, list) or not phases_raw:
            raise ScenarioError("a scenario needs at least one [[phases]] table")
        phases = tuple(_build(Phase, p, f"phases.{i}") for i, p in enumerate(_tables(phases_raw)))
        if "name" not in raw:
            raw["name"] = "scenario"
        sc: Scenario = _build(cls, {**raw, "phases": phases}, "")
        _validate(sc)
        return sc


def _tables(items: list[Any]) -> list[dict[str, Any]]:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScenarioError(f"phases.{i} must be a table")
    return items


def _build(cls: Any, raw: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ScenarioError(f"unknown key {where!r} (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(known[key].type, value, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ScenarioError(f"{prefix or 'scenario'}: {exc}") from None


def _coerce(type_name: Any, value: Any, where: str) -> Any:
    t = str(type_name)
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ScenarioError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if t in ("float", "float | None"):
        if value is None and "None" in t:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where} must be a number, got {value!r}")
        return float(value)
    if t == "str":
        if not isinstance(value, str):
            raise ScenarioError(f"{where} must be a string, got {value!r}")
        return value
    if t.startswith("dict"):
        if not isinstance(value, dict):
            raise ScenarioError(f"{where} must be a table")
        return dict(value)
    return value


def _validate(sc: Scenario) -> None:
    checks: list[tuple[bool, str]] = [
        (sc.viewers >= 0, "viewers must be >= 0"),
        (sc.senders >= 0, "senders must be >= 0"),
        (1 <= sc.rooms <= 100_000, "rooms must be 1..100000"),
        (sc.zipf_s >= 0, "zipf_s must be >= 0"),
        ((sc.sender_zipf_s or 0) >= 0, "sender_zipf_s must be >= 0"),
        (10 <= sc.tick_ms <= 10_000, "tick_ms must be 10..10000"),
        (0 <= sc.sample_fraction <= 1, "sample_fraction must be in [0, 1]"),
        (sc.connect_rate >= 0, "connect_rate must be >= 0 (0 = unlimited)"),
        (1 <= sc.procs <= 64, "procs must be 1..64"),
        (0 <= sc.sender_procs <= 64, "sender_procs must be 0..64"),
        (sc.max_inflight >= 1, "max_inflight must be >= 1"),
        (8 <= sc.text_bytes <= 90, "text_bytes must be 8..90"),
        (sc.idle_s >= 0 and sc.settle_s >= 0, "idle_s and settle_s must be >= 0"),
        (sc.arrivals in ARRIVALS, f"arrivals must be one of {', '.join(ARRIVALS)}"),
    ]
    for i, p in enumerate(sc.phases):
        checks += [
            (p.duration_s > 0, f"phases.{i}.duration_s must be > 0"),
            (p.rate >= 0 and (p.rate_from or 0) >= 0, f"phases.{i}.rate must be >= 0"),
            (p.join >= 0 and p.join_rate >= 0, f"phases.{i}.join/join_rate must be >= 0"),
            (0 <= p.reconnect_fraction <= 1, f"phases.{i}.reconnect_fraction in [0, 1]"),
            (0 <= p.slow_fraction <= 1, f"phases.{i}.slow_fraction in [0, 1]"),
            (p.rate == 0 or sc.senders > 0, f"phases.{i}.rate > 0 needs senders > 0"),
        ]
    for ok, message in checks:
        if not ok:
            raise ScenarioError(message)


# ---- files and overrides ----------------------------------------------------------------


def available() -> list[str]:
    """Names of the scenarios shipped in ``loadtest/scenarios``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def read_raw(name_or_path: str) -> dict[str, Any]:
    """The raw dict of a shipped scenario name or a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ScenarioError(
            f"no scenario {name_or_path!r} (shipped: {', '.join(available())}; or a .toml path)"
        )
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def parse_value(text: str) -> Any:
    """An override value: TOML syntax when it parses (``100``, ``0.5``, ``true``,
    ``"x"``, ``[1, 2]``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied.

    List elements are addressed by index (``phases.0.rate``); ``phases.*.rate`` sets the
    key in every phase. Raises ``ScenarioError`` for a malformed override or a missing
    list index.
    """
    out: dict[str, Any] = _deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"override {item!r} is not KEY=VALUE")
        parts = key.strip().split(".")
        _set(out, parts, parse_value(text.strip()), key)
    return out


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


def _set(node: Any, parts: list[str], value: Any, key: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        targets = range(len(node)) if head == "*" else [_index(head, len(node), key)]
        for i in targets:
            if rest:
                _set(node[i], rest, value, key)
            else:
                node[i] = value
        return
    if not isinstance(node, dict):
        raise ScenarioError(f"override {key!r}: {head!r} is inside a non-table value")
    if not rest:
        node[head] = value
        return
    if head not in node:
        node[head] = {}
    _set(node[head], rest, value, key)


def _index(text: str, length: int, key: str) -> int:
    if not text.isdigit() or int(text) >= length:
        raise ScenarioError(f"override {key!r}: no element {text!r} (list has {length})")
    return int(text)


def load(name_or_path: str, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario."""
    return Scenario.from_dict(apply_overrides(read_raw(name_or_path), overrides or []))
