"""``IpAdmission``: per-IP caps on concurrent connections and new connections per minute.

Pure: time is passed in. Memory is bounded: at most ``max_tracked`` IPs are tracked for
the per-minute window; when full, windows older than a minute are pruned first and, if
still full, the new IP is refused (an attacker with that many addresses gets no more
state from us).
"""

from __future__ import annotations


class IpAdmission:
    def __init__(self, max_conns: int, max_per_min: int, *, max_tracked: int = 100_000) -> None:
        self.max_conns = max_conns  # 0 = unlimited
        self.max_per_min = max_per_min  # 0 = unlimited
        self.max_tracked = max_tracked
        self._open: dict[str, int] = {}
        self._window: dict[str, tuple[int, int]] = {}  # ip -> (minute, count)

    def try_open(self, ip: str, now: float) -> str | None:
        """Admit a new connection (return ``None``) or say why not."""
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

    def close(self, ip: str) -> None:
        """A connection admitted by ``try_open`` ended. Call exactly once per admit."""
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
