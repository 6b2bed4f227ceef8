"""Unit and property tests of the pure network policy and host normalisation (no I/O)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.proxy._hosts import InvalidHostError, is_non_public, normalize_host, parse_ip, split_authority
from actors.proxy._policy import (
    Action,
    BlockReason,
    InvalidPatternError,
    NetworkMode,
    NetworkPolicy,
    evaluate_addresses,
    evaluate_request,
)

NON_PUBLIC_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
NON_PUBLIC_V6 = ["::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "fec0::/10"]
ANY = NetworkPolicy(allowed_domains=("*",))
LABEL = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
NAMES = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
METHODS = st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "CONNECT"])


@st.composite
def address_in(draw: st.DrawFn, networks: list[str]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    net = ipaddress.ip_network(draw(st.sampled_from(networks)))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return net[offset]


def v4_spellings(ip: ipaddress.IPv4Address) -> list[str]:
    """Every legacy way a resolver or browser accepts to write ``ip``."""
    a, b, c, d = ip.packed
    n = int(ip)
    return [
        str(ip),
        str(n),
        hex(n),
        "0" + oct(n)[2:],
        f"{a}.{b}.{(c << 8) | d}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{oct(a).replace('0o', '0')}.{hex(b)}.{c}.{d}",
        f"[::ffff:{ip}]",
        f"[64:ff9b::{ip}]",
        f"[2002:{a:02x}{b:02x}:{c:02x}{d:02x}::1]",
        f"{ip}.",
        "".join(f"%{ch:02x}" for ch in str(ip).encode()),
    ]


@settings(max_examples=300, deadline=None)
@given(address_in(NON_PUBLIC_V4))
def test_every_spelling_of_a_non_public_v4_address_is_blocked(ip: ipaddress.IPv4Address) -> None:
    for spelling in v4_spellings(ip):
        host = normalize_host(spelling)
        parsed = parse_ip(host)
        assert parsed is not None and is_non_public(parsed), spelling
        verdict = evaluate_request(ANY, host, 80, "GET")
        assert (verdict.action, verdict.reason) == (Action.BLOCK, BlockReason.LOCAL_ADDRESS), spelling


@settings(max_examples=200, deadline=None)
@given(address_in(NON_PUBLIC_V6))
def test_non_public_v6_literals_are_blocked(ip: ipaddress.IPv6Address) -> None:
    host = normalize_host(f"[{ip}]")
    verdict = evaluate_request(ANY, host, 443, "CONNECT")
    assert (verdict.action, verdict.reason) == (Action.BLOCK, BlockReason.LOCAL_ADDRESS)
    assert evaluate_addresses(ANY, "name.test", 443, [ip]).action is Action.BLOCK


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_v4_spellings_agree(value: int) -> None:
    ip = ipaddress.IPv4Address(value)
    assert {normalize_host(s) for s in v4_spellings(ip)[:7]} == {str(ip)}


def test_public_addresses_pass_and_embedded_public_v4_is_public() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"):
        assert not is_non_public(ipaddress.ip_address(text)), text
    for text in ("192.0.0.8", "198.18.0.1", "::8.8.8.8", "64:ff9b:1::1", "2001::1", "2001:db8::1", "::ffff:0:808:808"):
        assert is_non_public(ipaddress.ip_address(text)), text
    assert evaluate_request(ANY, "8.8.8.8", 443, "CONNECT").action is Action.ALLOW


@settings(max_examples=100, deadline=None)
@given(NAMES, st.integers(min_value=1, max_value=65535), METHODS)
def test_deny_always_wins(host: str, port: int, method: str) -> None:
    for allow, deny in [((host,), (host,)), (("*",), (host,)), (("**." + host,), ("**." + host,))]:
        policy = NetworkPolicy(allowed_domains=allow, denied_domains=deny)
        verdict = evaluate_request(policy, host, port, method)
        assert (verdict.action, verdict.reason) == (Action.BLOCK, BlockReason.DENYLIST)


@settings(max_examples=100, deadline=None)
@given(NAMES, st.integers(min_value=1, max_value=65535), METHODS, st.sampled_from(list(NetworkMode)))
def test_empty_allowlist_never_allows(host: str, port: int, method: str, mode: NetworkMode) -> None:
    verdict = evaluate_request(NetworkPolicy(mode=mode), host, port, method)
    assert verdict.action is not Action.ALLOW


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_normalize_host_either_refuses_or_returns_canonical(raw: str) -> None:
    try:
        host = normalize_host(raw)
    except InvalidHostError:
        return
    assert parse_ip(host) is not None or re.fullmatch(r"[a-z0-9_.-]+", host), host
    assert normalize_host(host if ":" not in host else f"[{host}]") == host


def test_wildcards_and_ports() -> None:
    sub = NetworkPolicy(allowed_domains=("*.example.com",))
    apex = NetworkPolicy(allowed_domains=("**.example.com",))
    ported = NetworkPolicy(allowed_domains=("api.example.com:443",))
    cases = {
        ("example.com", 443): (Action.ASK, Action.ALLOW, Action.ASK),
        ("a.example.com", 443): (Action.ALLOW, Action.ALLOW, Action.ASK),
        ("a.b.example.com", 80): (Action.ALLOW, Action.ALLOW, Action.ASK),
        ("api.example.com", 443): (Action.ALLOW, Action.ALLOW, Action.ALLOW),
        ("api.example.com", 80): (Action.ALLOW, Action.ALLOW, Action.ASK),
        ("badexample.com", 443): (Action.ASK, Action.ASK, Action.ASK),
        ("example.com.evil.test", 443): (Action.ASK, Action.ASK, Action.ASK),
    }
    for (host, port), expected in cases.items():
        got = tuple(evaluate_request(p, host, port, "GET").action for p in (sub, apex, ported))
        assert got == expected, (host, port)


def test_modes_and_methods() -> None:
    limited = NetworkPolicy(mode=NetworkMode.LIMITED, allowed_domains=("a.test",))
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert evaluate_request(limited, "a.test", 80, method).action is Action.ALLOW
    for method in ("POST", "PUT", "DELETE", "PATCH", "CONNECT"):
        assert evaluate_request(limited, "a.test", 80, method).reason is BlockReason.METHOD
    off = NetworkPolicy(mode="off", allowed_domains=("*",))  # type: ignore[arg-type]
    assert evaluate_request(off, "a.test", 80, "GET").reason is BlockReason.PROXY_DISABLED
    assert NetworkPolicy(mode="limited").mode is NetworkMode.LIMITED  # type: ignore[arg-type]


def test_local_addresses_need_explicit_allowance() -> None:
    assert evaluate_request(ANY, "localhost", 80, "GET").reason is BlockReason.LOCAL_ADDRESS
    explicit = NetworkPolicy(allowed_domains=("localhost", "127.0.0.1:8080", "10.0.0.0/8"))
    assert evaluate_request(explicit, "localhost", 80, "GET").action is Action.ALLOW
    assert evaluate_request(explicit, "127.0.0.1", 8080, "GET").action is Action.ALLOW
    assert evaluate_request(explicit, "127.0.0.1", 8081, "GET").reason is BlockReason.LOCAL_ADDRESS
    assert evaluate_request(explicit, "10.9.8.7", 22, "CONNECT").action is Action.ALLOW
    local = NetworkPolicy(allowed_domains=("*",), allow_local_binding=True)
    assert evaluate_request(local, "192.168.0.1", 80, "GET").action is Action.ALLOW
    # names resolving to local addresses
    named = NetworkPolicy(allowed_domains=("intranet.test", "localhost"))
    loopback = ipaddress.ip_address("127.0.0.1")
    private = ipaddress.ip_address("10.1.1.1")
    public = ipaddress.ip_address("93.184.216.34")
    assert evaluate_addresses(named, "intranet.test", 80, [private]).reason is BlockReason.LOCAL_ADDRESS
    assert evaluate_addresses(named, "intranet.test", 80, [public, private]).action is Action.BLOCK
    assert evaluate_addresses(named, "intranet.test", 80, [public]).action is Action.ALLOW
    assert evaluate_addresses(named, "localhost", 80, [loopback]).action is Action.ALLOW
    assert evaluate_addresses(named, "localhost", 80, [private]).action is Action.BLOCK
    assert evaluate_addresses(local, "x.test", 80, [private]).action is Action.ALLOW
    cidr_deny = NetworkPolicy(allowed_domains=("*",), denied_domains=("93.184.216.0/24",))
    assert evaluate_addresses(cidr_deny, "x.test", 80, [public]).reason is BlockReason.DENYLIST
    with pytest.raises(ValueError):
        evaluate_addresses(named, "x.test", 80, [])


def test_pattern_parsing() -> None:
    policy = NetworkPolicy(
        allowed_domains=("[::1]:8080", "::2", "[fc00::]/7", "EXAMPLE.org.", "%61pi.test", "bücher.test")
    )
    assert evaluate_request(policy, "::1", 8080, "GET").action is Action.ALLOW
    assert evaluate_request(policy, "::2", 1, "GET").action is Action.ALLOW
    assert evaluate_request(policy, "fd00::5", 1, "GET").action is Action.ALLOW
    assert evaluate_request(policy, "example.org", 1, "GET").action is Action.ALLOW
    assert evaluate_request(policy, "api.test", 1, "GET").action is Action.ALLOW
    assert evaluate_request(policy, normalize_host("BÜCHER.test"), 1, "GET").action is Action.ALLOW
    for bad in ("a.*.test", "exa mple.com", "host:99999", "*", "1.2.3.999"):
        with pytest.raises(InvalidPatternError):
            NetworkPolicy(denied_domains=(bad,))


def test_split_authority() -> None:
    assert split_authority("Example.COM.", 80) == ("example.com", 80)
    assert split_authority("[::1]:443", None) == ("::1", 443)
    assert split_authority("0x7f.1:8080", None) == ("127.0.0.1", 8080)
    for bad in ("", "a.test", "a.test:", "a.test:0", "a.test:65536", "::1:443", "[::1", "[::1]x", "u@a.test:1",
                "a.test:1/x", "[::1]:+1"):
        with pytest.raises(InvalidHostError):
            split_authority(bad, None)


@pytest.mark.parametrize("raw", ["example.com\n", "A\n", "a.b\n.c"])
def test_a_name_with_a_trailing_newline_is_refused(raw: str) -> None:
    # `$` in a regex matches before a final newline: a label check must match the whole label
    with pytest.raises(InvalidHostError):
        normalize_host(raw)
