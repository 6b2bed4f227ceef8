"""Host names and IP literals as the network proxy sees them (pure: no I/O, no DNS).

Contract:
- ``normalize_host(raw)`` turns the host part of a request target or CONNECT authority into one canonical
  string, or raises ``InvalidHostError``. It percent-decodes once (a second ``%`` is an error), lower-cases,
  IDNA-encodes non-ASCII names, drops one trailing dot, strips IPv6 brackets, and rewrites every IPv4 form a
  resolver or browser would accept (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) to dotted decimal
  and every IPv6 literal to its compressed form. A name whose last label is numeric must be a valid IPv4
  literal (the WHATWG URL rule), so ``1.2.3.999`` is an error rather than a name. Zone ids are refused.
- ``parse_ip(host)`` returns the address of a normalised IP literal, or None for a DNS name.
- ``is_non_public(ip)`` is True for every address that is not public unicast: loopback, private,
  link-local, CGNAT, ULA, site-local, multicast, unspecified, reserved and documentation ranges, and any
  IPv6 address that embeds such an IPv4 address (mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4
  ``2002::/16``). IPv4-compatible ``::/96``, SIIT ``::ffff:0:0:0/96``, local NAT64 ``64:ff9b:1::/48`` and
  Teredo are never public.
- ``split_authority(text, default_port)`` splits ``host[:port]`` / ``[v6][:port]`` into a normalised host
  and a port in 1..65535.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes

__all__ = [
    "LOCALHOST_NAMES",
    "InvalidHostError",
    "IpAddress",
    "format_host",
    "is_localhost_name",
    "is_non_public",
    "normalize_host",
    "parse_ip",
    "split_authority",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longest DNS name (RFC 1035) and label.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
#: Highest TCP port.
MAX_PORT = 65535
#: Names every resolver maps to loopback without asking DNS (RFC 6761 plus common /etc/hosts aliases).
LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_DECIMAL = re.compile(r"^[0-9]+$")
_HEX = re.compile(r"^0x[0-9a-f]*$")
_PORT = re.compile(r"^[0-9]{1,5}$")

_NEVER_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4")
)
_NEVER_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated), also :: and ::1
        "::ffff:0:0:0/96",  # SIIT
        "64:ff9b:1::/48",  # local-use NAT64
        "2001::/32",  # Teredo
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


class InvalidHostError(ValueError):
    """Raised when a host is neither a well-formed DNS name nor an IP literal."""


def _parse_ipv4_number(part: str) -> int:
    if _HEX.match(part):
        return int(part[2:] or "0", 16)
    if not _DECIMAL.match(part):
        raise InvalidHostError(f"not an IPv4 number: {part!r}")
    if len(part) > 1 and part.startswith("0"):
        if any(c in "89" for c in part):
            raise InvalidHostError(f"not an octal number: {part!r}")
        return int(part, 8)
    return int(part)


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return bool(_DECIMAL.match(last) or _HEX.match(last))


def _parse_ipv4(labels: list[str]) -> ipaddress.IPv4Address:
    """The WHATWG IPv4 parser: 1 to 4 parts, decimal/octal/hex, the last part fills the remaining bytes."""
    if len(labels) > 4:
        raise InvalidHostError("too many parts for an IPv4 address")
    numbers = [_parse_ipv4_number(p) for p in labels]
    if any(n > 255 for n in numbers[:-1]):
        raise InvalidHostError("IPv4 part out of range")
    width = 5 - len(numbers)
    if numbers[-1] >= 256**width:
        raise InvalidHostError("IPv4 address out of range")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    if "%" in text:
        raise InvalidHostError("IPv6 zone ids are not accepted")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise InvalidHostError(f"bad IPv6 literal: {text!r}") from exc


def _decode(raw: str) -> str:
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHostError("host is not UTF-8 after percent-decoding") from exc
    if "%" in text and not text.startswith("["):
        raise InvalidHostError("host is percent-encoded more than once")
    return text


def normalize_host(raw: str) -> str:
    """The canonical form of ``raw`` (see the module docstring); raises ``InvalidHostError``."""
    if not raw:
        raise InvalidHostError("empty host")
    text = _decode(raw).lower()
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")):
            raise InvalidHostError("unbalanced IPv6 brackets")
        return str(_parse_ipv6(text[1:-1]))
    if ":" in text:
        # a bare IPv6 literal (from a pattern or a resolver), never a name
        return str(_parse_ipv6(text))
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidHostError("host is not a valid internationalised name") from exc
    if text.endswith("."):
        text = text[:-1]
    labels = text.split(".")
    if not text or any(not label for label in labels):
        raise InvalidHostError(f"empty label in {raw!r}")
    if _ends_in_number(labels):
        return str(_parse_ipv4(labels))
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidHostError("host name too long")
    for label in labels:
        if len(label) > MAX_LABEL_LENGTH or not _LABEL.fullmatch(label):
            raise InvalidHostError(f"bad label {label!r}")
    return text


def parse_ip(host: str) -> IpAddress | None:
    """The address of a normalised IP-literal host, or None when ``host`` is a DNS name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_localhost_name(host: str) -> bool:
    """True for names that mean this machine whatever DNS says (``localhost``, ``*.localhost``, aliases)."""
    return host in LOCALHOST_NAMES or host.endswith(".localhost")


def _v4_non_public(ip: ipaddress.IPv4Address) -> bool:
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in _NEVER_PUBLIC_V4)
    )


def is_non_public(ip: IpAddress) -> bool:
    """True unless ``ip`` is a public unicast address (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_non_public(ip)
    if ip.scope_id:
        return True
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return _v4_non_public(mapped)
    if ip in _NAT64:
        return _v4_non_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _SIX_TO_FOUR:
        embedded = ip.sixtofour
        return embedded is None or _v4_non_public(embedded)
    if any(ip in net for net in _NEVER_PUBLIC_V6):
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def format_host(host: str) -> str:
    """``host`` as it appears in an authority: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """Split ``host[:port]`` into a normalised host and a port; raises ``InvalidHostError``."""
    if not text or "@" in text or any(c in text for c in "/\\?# \t"):
        raise InvalidHostError(f"bad authority {text!r}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidHostError("unbalanced IPv6 brackets")
        host_text, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidHostError(f"bad authority {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise InvalidHostError("IPv6 literals must be bracketed in an authority")
    else:
        host_text, sep, port_after = text.partition(":")
        port_text = port_after if sep else None
    if port_text is None or port_text == "":
        if default_port is None:
            raise InvalidHostError("a port is required")
        port = default_port
    else:
        if not _PORT.match(port_text):
            raise InvalidHostError(f"bad port {port_text!r}")
        port = int(port_text)
    if not 1 <= port <= MAX_PORT:
        raise InvalidHostError(f"port out of range: {port}")
    return normalize_host(host_text), port
