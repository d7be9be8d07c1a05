"""Who the client is, when a reverse proxy may stand between it and us.

``client_ip(peer, headers, trusted)`` answers with the socket's peer unless that peer is
one of the operator's trusted proxies (``DANMAKU_TRUSTED_PROXIES``); only then is the
forwarding header read, right to left, skipping the trusted hops, and the first address
that is not a trusted proxy is the client ("rightmost untrusted"). Addresses left of it
were written by the client itself and are never believed.

Pure functions, no I/O; the web app and the gateway both call ``client_ip``.

``headers`` is either

* the raw pairs as ASGI (``scope["headers"]``), h11 and wsproto give them: an iterable
  of ``(name, value)`` ``bytes`` pairs, names in any case, repeated headers as repeated
  pairs (joined in order, as RFC 9110 says a list header may be); or
* a mapping of lower-case ``str`` names to ``str`` values (one value per name).

Which header is read is the operator's choice (``DANMAKU_PROXY_HEADER``): a proxy that
writes one of ``X-Forwarded-For``/``Forwarded`` usually passes the other through from the
client untouched, so reading both would let a client pick its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = Iterable[tuple[bytes, bytes]] | Mapping[str, str]

HEADERS = ("x-forwarded-for", "forwarded")
UNKNOWN = "0.0.0.0"  # the answer when even the socket's peer is not an IP address
MAX_HOPS = 64  # forwarding entries looked at, right to left (a chain is a handful)


def parse_trusted(spec: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` -> networks; a bare address is a /32 (/128).
    Raises ``ValueError`` naming the bad entry."""
    out: list[IPNetwork] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address or CIDR: {part!r}") from exc
    return tuple(out)


def parse_ip(text: str) -> IPAddress | None:
    """An address as a forwarding header or a socket may spell it (``1.2.3.4``,
    ``1.2.3.4:5678``, ``[::1]:80``, ``::1``, quoted), IPv4-mapped IPv6 as IPv4;
    ``None`` for anything else (``unknown``, ``_hidden``, garbage)."""
    text = text.strip().strip('"').strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 has two or more colons)
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _header(headers: Headers, name: str) -> str:
    if isinstance(headers, Mapping):
        value = headers.get(name, "")
        return value if isinstance(value, str) else ""
    wanted = name.encode()
    return ",".join(
        v.decode("latin-1") for k, v in headers if isinstance(k, bytes) and k.lower() == wanted
    )


def _chain(headers: Headers, name: str) -> list[str]:
    """The header's client addresses, left (furthest) to right (nearest), as text."""
    raw = _header(headers, name)
    if not raw:
        return []
    entries = raw.split(",")  # not quote-aware on purpose: a client's unterminated
    # quote must not swallow the entries its proxies append after it
    if name == "x-forwarded-for":
        return entries
    out = []
    for element in entries:
        found = ""  # an element without for= says nothing about the address: unknown
        for pair in element.split(";"):
            key, _, value = pair.partition("=")
            if key.strip().lower() == "for":
                found = value
        out.append(found)
    return out


def _trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip in net for net in trusted)


def is_trusted(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    """Is the socket's peer one of the trusted proxies (so its forwarding header counts)?
    A peer that is not an IP address never is."""
    ip = parse_ip(peer)
    return ip is not None and _trusted(ip, trusted)


def client_ip(
    peer: str,
    headers: Headers,
    trusted: Sequence[IPNetwork],
    *,
    header: str = "x-forwarded-for",
) -> str:
    """The client's address, always a valid IP in canonical text form.

    ``peer`` is the socket's peer address. When it is not inside ``trusted``, it is the
    answer and ``headers`` are not read. When it is, ``header`` (``x-forwarded-for`` or
    ``forwarded``) is walked right to left past trusted addresses; the first untrusted
    one is the answer. An entry that is not an address (``unknown``, garbage) ends the
    walk: the hop right of it (a trusted proxy) is the answer. A chain of only trusted
    hops gives its leftmost one. A peer that is not an IP address (a Unix socket) gives
    ``0.0.0.0`` and is never trusted."""
    ip = parse_ip(peer)
    if ip is None:
        return UNKNOWN
    if not trusted or not _trusted(ip, trusted):
        return str(ip)
    for entry in reversed(_chain(headers, header)[-MAX_HOPS:]):
        hop = parse_ip(entry)
        if hop is None:
            break
        ip = hop
        if not _trusted(hop, trusted):
            break
    return str(ip)
