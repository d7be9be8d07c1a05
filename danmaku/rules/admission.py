"""Admission at the door: ``IpAdmission`` (per-IP caps on concurrent connections and new
connections per minute) and ``SmoothedCeiling`` (the room ingest ceiling fed with a
smoothed offered rate).

Pure: time is passed in. Memory is bounded: at most ``max_tracked`` IPs are tracked for
the per-minute window; when full, windows older than a minute are pruned first and, if
still full, the new IP is refused (an attacker with that many addresses gets no more
state from us).
"""

from __future__ import annotations

import math

from danmaku.rules.ratelimit import IngestCeiling


class IpAdmission:
    """Per-IP caps (concurrent, new per minute) and a cap on all open connections
    (``max_total``; 0 = unlimited): the gateway asks before it parses anything."""

    def __init__(
        self, max_conns: int, max_per_min: int, *, max_total: int = 0, max_tracked: int = 100_000
    ) -> None:
        self.max_conns = max_conns  # 0 = unlimited
        self.max_per_min = max_per_min  # 0 = unlimited
        self.max_total = max_total  # 0 = unlimited
        self.max_tracked = max_tracked
        self.total = 0  # connections admitted and not yet closed
        self._open: dict[str, int] = {}
        self._window: dict[str, tuple[int, int]] = {}  # ip -> (minute, count)

    def try_open(self, ip: str | None, now: float) -> str | None:
        """Admit a new connection (return ``None``) or say why not. ``ip=None``: only the
        total cap applies (the peer is a trusted proxy: its clients are admitted one by
        one with ``try_open_ip`` once their address is read)."""
        if self.max_total and self.total >= self.max_total:
            return "server_full"
        if ip is not None:
            refused = self.try_open_ip(ip, now)
            if refused is not None:
                return refused
        self.total += 1
        return None

    def close(self, ip: str | None) -> None:
        """A connection admitted by ``try_open`` ended. Call exactly once per admit,
        with the same ``ip``."""
        self.total = max(0, self.total - 1)
        if ip is not None:
            self.close_ip(ip)

    def try_open_ip(self, ip: str, now: float) -> str | None:
        """The per-IP caps alone: admit one more connection of ``ip`` or say why not."""
        if self.max_conns and self._open.get(ip, 0) >= self.max_conns:
            return "too_many_connections"
        if self.max_per_min:
            minute = int(now // 60)
            start, count = self._window.get(ip, (minute, 0))
            if start != minute:
                count = 0
            if count >= self.max_per_min:
                return "too_many_sessions"
            if ip not in self._window and len(self._window) >= self.max_tracked:
                self._prune(minute)
                if len(self._window) >= self.max_tracked:
                    return "too_many_sessions"
            self._window[ip] = (minute, count + 1)
        self._open[ip] = self._open.get(ip, 0) + 1
        return None

    def close_ip(self, ip: str) -> None:
        """A connection admitted by ``try_open_ip`` ended (exactly once per admit)."""
        n = self._open.get(ip, 0) - 1
        if n > 0:
            self._open[ip] = n
        else:
            self._open.pop(ip, None)

    def open_count(self, ip: str) -> int:
        return self._open.get(ip, 0)

    def tracked(self) -> int:
        return len(self._window)

    def _prune(self, minute: int) -> None:
        for ip in [ip for ip, (m, _) in self._window.items() if m != minute]:
            del self._window[ip]


class SmoothedCeiling(IngestCeiling):
    """``IngestCeiling`` fed with a smoothed offered rate, so bursts are not shed while
    the room stays under its ceiling on average.

    Gateways report offered comments per ``PRESENCE_EVERY_S`` (0.5 s) window. Senders
    are bursty (a client catching up after a stall sends a second's worth at once), so a
    room averaging 1,900/s under a 2,000/s ceiling shows windows of 2,300/s, and the
    plain ``IngestCeiling`` sheds an eighth of those. Here the rate that sets the
    admission probability is ``max(ewma, instant / burst_tolerance)``:

    * ``ewma``: an exponentially weighted mean of the reported rates, rising with time
      constant ``tau_up_s`` and falling with ``tau_down_s`` (shorter: shedding stops
      soon after a spike ends); irregular report intervals weigh by
      ``1 - exp(-dt / tau)``;
    * ``instant / burst_tolerance``: a real overload (a window over ``burst_tolerance``
      x the ceiling) is shed from its first report on, not after the mean caught up.

    Pure: the caller passes ``now`` (seconds, any monotonic clock). ``ceiling`` may be
    changed at any time (a room setting); ``<= 0`` disables shedding.
    """

    __slots__ = ("_at", "burst_tolerance", "rate", "tau_down_s", "tau_up_s")

    def __init__(
        self,
        ceiling: float = 2000.0,
        *,
        tau_up_s: float = 1.0,
        tau_down_s: float = 0.25,
        burst_tolerance: float = 1.5,
    ) -> None:
        super().__init__(ceiling)
        if tau_up_s <= 0 or tau_down_s <= 0 or burst_tolerance < 1:
            raise ValueError("time constants must be > 0 and burst_tolerance >= 1")
        self.tau_up_s = tau_up_s
        self.tau_down_s = tau_down_s
        self.burst_tolerance = burst_tolerance
        self.rate = 0.0  # the smoothed offered rate (comments/s)
        self._at: float | None = None

    def observe(self, offered_rate: float, now: float) -> float:
        """Fold in a reported room-wide offered rate (comments/s, before shedding) at
        time ``now``; set and return the admission probability."""
        offered_rate = max(0.0, offered_rate)
        if self._at is None:
            self.rate = offered_rate
        else:
            dt = max(0.0, now - self._at)
            tau = self.tau_up_s if offered_rate > self.rate else self.tau_down_s
            self.rate += (offered_rate - self.rate) * (1.0 - math.exp(-dt / tau))
        self._at = now
        return self.update(max(self.rate, offered_rate / self.burst_tolerance))
