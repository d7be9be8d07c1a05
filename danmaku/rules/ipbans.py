"""IP and prefix bans: pure rules, no I/O.

A ban names a network: one address (IPv4 /32, IPv6 /128) or the prefix around it that
one subscriber usually holds (IPv4 /24, IPv6 /64). Those four lengths only: a wider ban
would lock out a whole provider's customers, a narrower one is dodged by the next
address of the same line. An IPv4 address mapped into IPv6 (``::ffff:a.b.c.d``) counts
as the IPv4 address.

``candidates(ip)`` gives the (at most two) networks that could ban an address; a
connection computes them once, and ``IpBans.match`` is then two dict look-ups per
comment, with no parsing. Limits (documented in docs/operations.md): a shared NAT
(a campus, a mobile carrier's CGNAT) puts many people behind one IPv4 address; IPv6
privacy addresses change within the /64 (ban the prefix); behind a reverse proxy the
address is the client's only when the proxy is trusted (``DANMAKU_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX_LENGTHS = {4: (32, 24), 6: (128, 64)}  # address, subscriber prefix
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class IpBan:
    network: str  # canonical, with its length: "203.0.113.0/24"
    until: float  # epoch seconds; 0 = permanent
    reason: str = ""
    by: str = ""  # role:uid of who set it
    uid: str = ""  # the user whose last address it was derived from ("": given as an IP)
    ts: int = 0  # when set (ms)

    def in_force(self, now: float) -> bool:
        return self.until == 0 or self.until > now

    @property
    def id(self) -> str:
        return ban_id(self.network)

    def to_json(self) -> dict[str, Any]:
        return {
            "until": self.until,
            "reason": self.reason,
            "by": self.by,
            "uid": self.uid,
            "ts": self.ts,
        }

    @classmethod
    def from_json(cls, network: str, data: Any) -> IpBan | None:
        """The ban a stored entry holds, or ``None`` for a malformed one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                network=network,
                until=float(data.get("until", 0)),
                reason=str(data.get("reason", ""))[:MAX_REASON],
                by=str(data.get("by", "")),
                uid=str(data.get("uid", "")),
                ts=int(data.get("ts", 0)),
            )
        except (TypeError, ValueError):
            return None


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def network_of(value: str) -> str:
    """The canonical network a ban given as ``value`` names: an address (its /32 or
    /128) or a network of an allowed length (host bits are cleared: "203.0.113.7/24"
    is "203.0.113.0/24"). Raises ``ValueError`` saying what is allowed."""
    text = value.strip()
    if "/" not in text:
        addr = _address(text)
        return f"{addr}/{addr.max_prefixlen}"
    net = ipaddress.ip_network(text, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        raise ValueError("give an IPv4 network as a.b.c.d/24")
    if net.prefixlen not in PREFIX_LENGTHS[net.version]:
        lengths = " or ".join(f"/{n}" for n in PREFIX_LENGTHS[net.version])
        raise ValueError(f"an IPv{net.version} ban is one address or a {lengths} network")
    return str(net)


def prefix_of(ip: str) -> str:
    """The subscriber prefix around an address (/24 for IPv4, /64 for IPv6)."""
    addr = _address(ip)
    length = PREFIX_LENGTHS[addr.version][1]
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def candidates(ip: str) -> tuple[str, ...]:
    """The networks whose ban covers ``ip`` (its own, its prefix); ``()`` for what is
    not an address (a unix socket, "unknown"): no IP ban can match it."""
    try:
        addr = _address(ip)
    except ValueError:
        return ()
    own, prefix = PREFIX_LENGTHS[addr.version]
    return (
        f"{addr}/{own}",
        str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False)),
    )


def ban_id(network: str) -> str:
    """A stable short id for a ban (the API lifts bans by id: an id leaks no address)."""
    return hashlib.sha256(network.encode()).hexdigest()[:16]


class IpBans:
    """A room's IP bans as a gateway or the web app holds them."""

    __slots__ = ("_bans",)

    def __init__(self, bans: Mapping[str, IpBan] | None = None) -> None:
        self._bans = dict(bans or {})

    def __len__(self) -> int:
        return len(self._bans)

    def match(self, keys: tuple[str, ...], now: float) -> IpBan | None:
        """The ban in force on an address whose ``candidates`` are ``keys``, if any
        (the one lasting longest when both match)."""
        bans = self._bans
        if not bans:
            return None
        found: IpBan | None = None
        for key in keys:  # a plain loop: this runs per comment in rooms with IP bans
            ban = bans.get(key)
            if ban is not None and ban.in_force(now):
                found = ban if found is None else longest((found, ban))
        return found


def longest(bans: Iterable[IpBan]) -> IpBan | None:
    """Of several bans on one address, the one that lasts longest (a permanent one)."""
    found: IpBan | None = None
    for ban in bans:
        if found is None or ban.until == 0 or (found.until and ban.until > found.until):
            found = ban
    return found
