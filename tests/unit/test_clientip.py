"""client_ip: who the client is behind (or without) a trusted reverse proxy."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.config import Settings
from danmaku.rules.clientip import Headers, client_ip, parse_ip, parse_trusted

PROXIES = parse_trusted("10.0.0.0/8, 192.168.1.7, fd00::/8")

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
any_ip = st.one_of(ipv4, ipv6)
untrusted_ip = any_ip.filter(lambda a: not any(ipaddress.ip_address(a) in n for n in PROXIES))
# Header values as a client could write them: addresses, garbage, ports, brackets, quotes.
entry = st.one_of(
    any_ip,
    ipv4.map(lambda a: f"{a}:443"),
    ipv6.map(lambda a: f'"[{a}]:80"'),
    st.sampled_from(["unknown", "_hidden", "", " ", '"', "[", "::ffff:10.0.0.1", "1.2.3"]),
    st.text(max_size=30),
)
xff_value = st.lists(entry, max_size=8).map(", ".join)
forwarded_value = st.lists(entry, max_size=8).map(
    lambda xs: ", ".join(f"for={x};proto=https" for x in xs)
)
header_name = st.sampled_from(
    [b"x-forwarded-for", b"X-Forwarded-For", b"forwarded", b"Forwarded", b"x-real-ip", b"host"]
)
raw_headers = st.lists(
    st.tuples(header_name, st.one_of(xff_value, forwarded_value).map(lambda v: v.encode())),
    max_size=6,
)


def valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(untrusted_ip, raw_headers, st.sampled_from(["x-forwarded-for", "forwarded"]))
def test_headers_from_an_untrusted_peer_never_change_the_answer(
    peer: str, headers: list[tuple[bytes, bytes]], which: str
) -> None:
    expected = str(parse_ip(peer))
    assert client_ip(peer, headers, PROXIES, header=which) == expected
    assert client_ip(peer, headers, (), header=which) == expected
    as_map = {k.decode().lower(): v.decode() for k, v in headers}
    assert client_ip(peer, as_map, PROXIES, header=which) == expected


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(any_ip, st.sampled_from(["10.1.2.3", "192.168.1.7", "fd00::5"]), st.text()),
    raw_headers,
    st.sampled_from(["x-forwarded-for", "forwarded"]),
)
def test_the_answer_is_always_a_valid_ip(
    peer: str, headers: list[tuple[bytes, bytes]], which: str
) -> None:
    answer = client_ip(peer, headers, PROXIES, header=which)
    assert valid_ip(answer)
    # Behind a trusted proxy the answer is the peer or an address some header named.
    if parse_ip(peer) is not None:
        named = {str(a) for _, v in headers for a in map(parse_ip, _words(v)) if a is not None}
        assert answer == str(parse_ip(peer)) or answer in named


def _words(value: bytes) -> list[str]:
    text = value.decode("latin-1")
    return [w.partition("=")[2] or w for part in text.split(",") for w in part.split(";")]


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, max_size=6), untrusted_ip, st.lists(st.just("10.9.9.9"), max_size=3))
def test_a_client_cannot_hide_behind_what_it_writes_itself(
    spoofed: list[str], real: str, hops: list[str]
) -> None:
    """Whatever the client puts left in the header, the proxies' entries decide."""
    chain = ", ".join([*spoofed, real, *hops])
    assert client_ip("10.0.0.1", [(b"x-forwarded-for", chain.encode())], PROXIES) == str(
        parse_ip(real)
    )
    fwd = ", ".join(f"for={x}" for x in [*spoofed, f'"[{real}]"', *hops])
    assert client_ip("10.0.0.1", {"forwarded": fwd}, PROXIES, header="forwarded") == str(
        parse_ip(real)
    )


@pytest.mark.parametrize(
    ("peer", "headers", "which", "expected"),
    [
        # A peer that is not a trusted proxy: the peer, whatever the headers say.
        ("203.0.113.5", [(b"x-forwarded-for", b"1.1.1.1")], "x-forwarded-for", "203.0.113.5"),
        # Through one trusted proxy: the rightmost entry.
        ("10.0.0.2", [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7")], None, "198.51.100.7"),
        # Two trusted hops: skipped right to left.
        ("10.0.0.2", [(b"X-Forwarded-For", b"198.51.100.7, 10.3.3.3")], None, "198.51.100.7"),
        # Repeated header lines join in order.
        (
            "10.0.0.2",
            [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.8")],
            None,
            "198.51.100.8",
        ),
        # Ports, IPv4-mapped IPv6.
        ("::ffff:10.0.0.2", {"x-forwarded-for": "198.51.100.9:5555"}, None, "198.51.100.9"),
        # A garbage entry right of the client: the proxy that wrote it is the answer.
        ("10.0.0.2", {"x-forwarded-for": "198.51.100.7, 10.4.4.4, nonsense"}, None, "10.0.0.2"),
        ("10.0.0.2", {"x-forwarded-for": "198.51.100.7, nonsense, 10.4.4.4"}, None, "10.4.4.4"),
        # Only trusted hops: the furthest of them.
        ("10.0.0.2", {"x-forwarded-for": "10.5.5.5"}, None, "10.5.5.5"),
        ("10.0.0.2", {}, None, "10.0.0.2"),
        # RFC 7239, with IPv6 in brackets and a port, and obfuscated identifiers.
        (
            "fd00::1",
            {"forwarded": 'for=6.6.6.6, for="[2001:db8::cafe]:4711";proto=https;by=fd00::1'},
            "forwarded",
            "2001:db8::cafe",
        ),
        ("10.0.0.2", {"forwarded": "for=_hidden, for=unknown"}, "forwarded", "10.0.0.2"),
        # The header not chosen is not read: a client passing it through cannot pick.
        ("10.0.0.2", {"forwarded": "for=6.6.6.6"}, None, "10.0.0.2"),
        ("10.0.0.2", {"x-forwarded-for": "6.6.6.6"}, "forwarded", "10.0.0.2"),
        # A client's unterminated quote does not swallow the proxy's entry after it.
        ("10.0.0.2", {"forwarded": 'for="6.6.6.6, for=198.51.100.1'}, "forwarded", "198.51.100.1"),
        # Not an IP at all (a Unix socket): never trusted, 0.0.0.0.
        ("unix:/run/danmaku.sock", {"x-forwarded-for": "6.6.6.6"}, None, "0.0.0.0"),
    ],
)
def test_examples(peer: str, headers: Headers, which: str | None, expected: str) -> None:
    assert client_ip(peer, headers, PROXIES, header=which or "x-forwarded-for") == expected


def test_no_proxies_configured_means_the_peer_always() -> None:
    assert client_ip("10.0.0.2", {"x-forwarded-for": "1.1.1.1"}, ()) == "10.0.0.2"
    assert client_ip("::ffff:10.0.0.2", {"forwarded": "for=1.1.1.1"}, ()) == "10.0.0.2"


def test_trusted_proxies_setting_is_checked_at_start() -> None:
    assert parse_trusted(" 10.0.0.0/8 ,, 127.0.0.1 ") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert parse_trusted("") == ()
    with pytest.raises(ValueError, match=r"DANMAKU_TRUSTED_PROXIES.*'10\.0\.0\.0/33'"):
        Settings(trusted_proxies="10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValueError, match="DANMAKU_PROXY_HEADER"):
        Settings(proxy_header="x-real-ip")


def test_a_bad_proxy_setting_stops_start_up_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from danmaku.cli import main

    assert main(["web", "--trusted-proxies", "10.0.0.0/8,bogus"]) == 2
    err = capsys.readouterr().err
    assert err == "danmaku: DANMAKU_TRUSTED_PROXIES: not an address or CIDR: 'bogus'\n"
