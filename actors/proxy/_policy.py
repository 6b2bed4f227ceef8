"""Network policy for the session's proxy: pure decisions, no I/O.

Contract:
- ``NetworkPolicy`` is immutable; the proxy holds one per view and swaps it whole (``set_policy``).
- Modes: ``full`` (every method), ``limited`` (GET, HEAD, OPTIONS only; CONNECT refused because the proxy
  cannot see the methods inside a tunnel), ``off`` (everything blocked).
- Patterns (allow and deny lists): ``example.com`` (that name only), ``*.example.com`` (subdomains only),
  ``**.example.com`` (the apex and its subdomains), ``*`` (any host; allowlist only), IP literals
  (``10.1.2.3``, ``::1``, ``[::1]``) and networks (``10.0.0.0/8``). Any host pattern may end in ``:port``
  to match that port only (``api.example.com:443``, ``[::1]:8080``).
- ``evaluate_request`` runs before any DNS lookup, in this order: mode ``off`` -> denylist (deny always
  wins) -> local addresses (IP literals that are not public, and ``localhost`` names) -> method policy ->
  allowlist. An allowlist hit is ``ALLOW``; a miss is ``ASK`` (the proxy asks its approver, or blocks with
  ``blocked-by-allowlist`` when it has none), so an empty allowlist never allows anything by itself.
- ``evaluate_addresses`` runs on EVERY address a name resolved to, before dialling: an address on the
  denylist blocks, and so does a non-public address unless local binding is allowed, the address (or a
  network holding it) is allowlisted explicitly, or the host is an explicitly allowlisted ``localhost`` name
  resolving to loopback. One bad address blocks the whole request.
- A local address is allowed only explicitly: ``allow_local_binding=True``, or a literal / network / exact
  ``localhost`` entry on the allowlist. ``*`` never allows one.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from actors.proxy._hosts import (
    InvalidHostError,
    IpAddress,
    is_localhost_name,
    is_non_public,
    normalize_host,
    parse_ip,
)

__all__ = [
    "LIMITED_METHODS",
    "Action",
    "BlockReason",
    "HostPattern",
    "InvalidPatternError",
    "NetworkMode",
    "NetworkPolicy",
    "Verdict",
    "evaluate_addresses",
    "evaluate_request",
]

#: Methods a ``limited`` policy lets through: the read-only ones.
LIMITED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PORT_SUFFIX = re.compile(r"^(?P<host>.*?):(?P<port>[0-9]{1,5})$")


class NetworkMode(enum.StrEnum):
    """How much network a policy grants at all."""

    FULL = "full"
    LIMITED = "limited"
    OFF = "off"


class BlockReason(enum.StrEnum):
    """Why a request was blocked; the value is the ``x-proxy-error`` header the client sees."""

    DENYLIST = "blocked-by-denylist"
    ALLOWLIST = "blocked-by-allowlist"
    METHOD = "blocked-by-method-policy"
    LOCAL_ADDRESS = "blocked-local-address"
    PROXY_DISABLED = "blocked-by-proxy-disabled"


class Action(enum.Enum):
    """What the proxy should do with a request."""

    ALLOW = "allow"
    ASK = "ask"
    BLOCK = "block"


@dataclass(frozen=True)
class Verdict:
    """A policy decision; ``reason`` is set for ``BLOCK`` and for ``ASK`` (what a denial would be)."""

    action: Action
    reason: BlockReason | None = None


_ALLOW = Verdict(Action.ALLOW)


class InvalidPatternError(ValueError):
    """Raised when an allow or deny list entry cannot be parsed."""


class _Kind(enum.Enum):
    EXACT = "exact"
    SUBDOMAINS = "subdomains"
    APEX_AND_SUBDOMAINS = "apex_and_subdomains"
    ANY = "any"
    NETWORK = "network"


@dataclass(frozen=True)
class HostPattern:
    """One parsed allow/deny entry."""

    kind: _Kind
    host: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Parse one entry (see the module docstring); raises ``InvalidPatternError``."""
        raw = text.strip().lower()
        port: int | None = None
        match = _PORT_SUFFIX.match(raw)
        if match and (raw.startswith("[") or raw.count(":") == 1):
            raw, port = match["host"], int(match["port"])
            if not 1 <= port <= 65535:
                raise InvalidPatternError(f"port out of range in {text!r}")
        try:
            if raw == "*":
                return cls(_Kind.ANY, port=port)
            if "/" in raw:
                network = ipaddress.ip_network(raw.replace("[", "").replace("]", ""), strict=False)
                return cls(_Kind.NETWORK, network=network, port=port)
            if raw.startswith("**."):
                return cls(_Kind.APEX_AND_SUBDOMAINS, normalize_host(raw[3:]), port=port)
            if raw.startswith("*."):
                return cls(_Kind.SUBDOMAINS, normalize_host(raw[2:]), port=port)
            if "*" in raw:
                raise InvalidPatternError(f"wildcards are only allowed as a leading label: {text!r}")
            return cls(_Kind.EXACT, normalize_host(raw), port=port)
        except (InvalidHostError, ValueError) as exc:
            raise InvalidPatternError(f"bad host pattern {text!r}: {exc}") from exc

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_host(self, host: str, port: int) -> bool:
        """True if the normalised ``host`` (name or IP literal) and ``port`` match this entry."""
        if not self._port_ok(port):
            return False
        if self.kind is _Kind.ANY:
            return True
        if self.kind is _Kind.NETWORK:
            ip = parse_ip(host)
            return ip is not None and self._in_network(ip)
        if self.kind is _Kind.EXACT:
            return host == self.host
        is_sub = host.endswith("." + self.host)
        return is_sub or (self.kind is _Kind.APEX_AND_SUBDOMAINS and host == self.host)

    def matches_ip(self, ip: IpAddress, port: int) -> bool:
        """True if this is a literal or network entry naming ``ip`` (wildcards and names never do)."""
        if not self._port_ok(port):
            return False
        if self.kind is _Kind.NETWORK:
            return self._in_network(ip)
        return self.kind is _Kind.EXACT and parse_ip(self.host) == ip

    def _in_network(self, ip: IpAddress) -> bool:
        assert self.network is not None
        return ip.version == self.network.version and ip in self.network


def _parse_all(entries: Iterable[str]) -> tuple[HostPattern, ...]:
    return tuple(HostPattern.parse(e) for e in entries)


@dataclass(frozen=True)
class NetworkPolicy:
    """An immutable network policy: mode, allow and deny lists, and whether local addresses are allowed."""

    mode: NetworkMode = NetworkMode.FULL
    allowed_domains: tuple[str, ...] = ()
    denied_domains: tuple[str, ...] = ()
    allow_local_binding: bool = False
    _allow: tuple[HostPattern, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[HostPattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", NetworkMode(self.mode))
        object.__setattr__(self, "allowed_domains", tuple(self.allowed_domains))
        object.__setattr__(self, "denied_domains", tuple(self.denied_domains))
        deny = _parse_all(self.denied_domains)
        if any(p.kind is _Kind.ANY for p in deny):
            raise InvalidPatternError("'*' on the denylist: use mode 'off' to block everything")
        object.__setattr__(self, "_allow", _parse_all(self.allowed_domains))
        object.__setattr__(self, "_deny", deny)

    def is_denied(self, host: str, port: int) -> bool:
        """True if ``host`` matches the denylist."""
        return any(p.matches_host(host, port) for p in self._deny)

    def is_allowed(self, host: str, port: int) -> bool:
        """True if ``host`` matches the allowlist."""
        return any(p.matches_host(host, port) for p in self._allow)

    def is_ip_denied(self, ip: IpAddress, port: int) -> bool:
        """True if a literal or network on the denylist names ``ip``."""
        return any(p.matches_ip(ip, port) for p in self._deny)

    def is_ip_explicitly_allowed(self, ip: IpAddress, port: int) -> bool:
        """True if a literal or network on the allowlist names ``ip`` (the explicit form local needs)."""
        return any(p.matches_ip(ip, port) for p in self._allow)

    def is_name_explicitly_allowed(self, host: str, port: int) -> bool:
        """True if ``host`` is on the allowlist as an exact name (no wildcard)."""
        return any(p.kind is _Kind.EXACT and p.matches_host(host, port) for p in self._allow)


def _local_verdict(policy: NetworkPolicy, host: str, port: int) -> Verdict | None:
    if policy.allow_local_binding:
        return None
    ip = parse_ip(host)
    if ip is not None:
        if is_non_public(ip) and not policy.is_ip_explicitly_allowed(ip, port):
            return Verdict(Action.BLOCK, BlockReason.LOCAL_ADDRESS)
    elif is_localhost_name(host) and not policy.is_name_explicitly_allowed(host, port):
        return Verdict(Action.BLOCK, BlockReason.LOCAL_ADDRESS)
    return None


def evaluate_request(policy: NetworkPolicy, host: str, port: int, method: str) -> Verdict:
    """Decide a request for normalised ``host``:``port`` before any lookup (see the module docstring)."""
    if policy.mode is NetworkMode.OFF:
        return Verdict(Action.BLOCK, BlockReason.PROXY_DISABLED)
    if policy.is_denied(host, port):
        return Verdict(Action.BLOCK, BlockReason.DENYLIST)
    local = _local_verdict(policy, host, port)
    if local is not None:
        return local
    if policy.mode is NetworkMode.LIMITED and method.upper() not in LIMITED_METHODS:
        return Verdict(Action.BLOCK, BlockReason.METHOD)
    if policy.is_allowed(host, port):
        return _ALLOW
    return Verdict(Action.ASK, BlockReason.ALLOWLIST)


def evaluate_addresses(
    policy: NetworkPolicy, host: str, port: int, addresses: Sequence[IpAddress]
) -> Verdict:
    """Decide the addresses ``host`` resolved to; ``ALLOW`` only if every one of them passes."""
    if not addresses:
        raise ValueError("no addresses to evaluate")
    localhost_ok = is_localhost_name(host) and policy.is_name_explicitly_allowed(host, port)
    for ip in addresses:
        if policy.is_ip_denied(ip, port):
            return Verdict(Action.BLOCK, BlockReason.DENYLIST)
        if not is_non_public(ip) or policy.allow_local_binding:
            continue
        if policy.is_ip_explicitly_allowed(ip, port) or (localhost_ok and ip.is_loopback):
            continue
        return Verdict(Action.BLOCK, BlockReason.LOCAL_ADDRESS)
    return _ALLOW
