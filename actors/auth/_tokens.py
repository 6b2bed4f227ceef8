"""Tokens and the principals they name.

- The **owner token** is 256 random bits made when ``serve`` starts (or read from ``--token-file``); it names
  the administrator, ``OWNER``, who sees and drives every session. It is compared in constant time.
- **Principal tokens** (``supervisor.py token create --principal NAME [--ttl S]``) live in
  ``<home>/auth/tokens.json`` (0600 in a 0700 directory) as SHA-256 digests, never in clear: a stolen file
  names no usable token. The server re-reads the file when it changes, so a token created or revoked while it
  runs takes effect on the next call. Looking a digest up in a dict is not constant time, but the timing can
  only tell an attacker about a hash of the guess, which does not help guessing the token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from actors.errors import ConfigError

#: The administrator's principal name (the owner token's).
OWNER = "owner"
TOKEN_BYTES = 32
AUTH_DIR = "auth"
TOKENS_FILE = "tokens.json"
#: A principal name: letters, digits and ``._@-``, at most 128 characters (it appears in logs and messages).
PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class AuthError(Exception):
    """A call's credentials are missing, malformed, wrong or expired (UNAUTHENTICATED); the text says which."""


@dataclass(frozen=True)
class Principal:
    """Who makes a call: a name, and whether it is the administrator (sees and drives every session)."""

    name: str
    admin: bool = False


ADMIN = Principal(OWNER, admin=True)


def new_token() -> str:
    """A fresh 256-bit token, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_principal_name(name: str) -> str:
    """``name`` if it is a valid principal name, else ``ConfigError``."""
    if not PRINCIPAL_RE.fullmatch(name) or name == OWNER:
        raise ConfigError(f"principal {name!r}: use 1-128 letters, digits or ._@- (and not {OWNER!r})")
    return name


@dataclass(frozen=True)
class TokenEntry:
    """One stored principal token (its digest, never the token)."""

    digest: str
    principal: str
    created: float
    #: Unix time after which the token is refused; 0 = never.
    expires: float = 0.0


class TokenStore:
    """The principal tokens of one home, shared by the ``token`` CLI (writes) and the server (reads)."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / AUTH_DIR / TOKENS_FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, TokenEntry] = {}

    def create(self, principal: str, ttl_s: float = 0.0) -> str:
        """A new token for ``principal`` (valid ``ttl_s`` seconds, or until revoked if 0); returns the token."""
        check_principal_name(principal)
        if ttl_s < 0:
            raise ConfigError(f"--ttl {ttl_s}: must be 0 (no expiry) or more")
        token = new_token()
        now = time.time()
        entry = TokenEntry(_digest(token), principal, now, now + ttl_s if ttl_s else 0.0)
        with self._locked_file() as entries:
            entries[entry.digest] = entry
        return token

    def revoke(self, token: str = "", principal: str = "") -> int:
        """Revoke one token, or every token of ``principal``; returns how many were revoked."""
        with self._locked_file() as entries:
            doomed = [d for d, e in entries.items()
                      if (token and hmac.compare_digest(d, _digest(token))) or (principal and e.principal == principal)]
            for digest in doomed:
                del entries[digest]
        return len(doomed)

    def lookup(self, token: str, now: float | None = None) -> Principal:
        """The principal a token names; ``AuthError`` if it names none or has expired."""
        entry = self._current().get(_digest(token))
        if entry is None:
            raise AuthError("invalid token")
        if entry.expires and (time.time() if now is None else now) >= entry.expires:
            raise AuthError(f"token of {entry.principal!r} expired")
        return Principal(entry.principal)

    def entries(self) -> list[TokenEntry]:
        """Every stored token entry."""
        return list(self._current().values())

    def _current(self) -> dict[str, TokenEntry]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._entries = _parse(self.path.read_bytes())
                self._stamp = stamp
            return self._entries

    @contextlib.contextmanager
    def _locked_file(self) -> Iterator[dict[str, TokenEntry]]:
        """The entries under an exclusive lock; written back atomically (0600) when the block ends."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            entries = _parse(self.path.read_bytes()) if self.path.exists() else {}
            yield entries
            tmp = self.path.with_name(f".{TOKENS_FILE}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                body = {d: {"principal": e.principal, "created": e.created, "expires": e.expires}
                        for d, e in entries.items()}
                os.write(fd, (json.dumps(body, indent=1) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        finally:
            os.close(lock_fd)


def _parse(raw: bytes) -> dict[str, TokenEntry]:
    try:
        data = json.loads(raw or b"{}")
        return {d: TokenEntry(d, str(v["principal"]), float(v["created"]), float(v.get("expires", 0.0)))
                for d, v in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"tokens file is corrupt: {exc}") from exc


class Authenticator:
    """Maps a call's ``authorization`` metadata to a ``Principal``: the owner token, or a stored principal token."""

    def __init__(self, owner_token: str, store: TokenStore | None = None) -> None:
        if len(owner_token) < 16:
            raise ConfigError("the owner token must be at least 16 characters")
        self.owner_token = owner_token
        self._owner = owner_token.encode()
        self.store = store

    def principal(self, authorization: str | None) -> Principal:
        """The principal of ``authorization`` (the metadata value, or None when absent); ``AuthError`` if none."""
        if authorization is None:
            raise AuthError("missing credentials: send metadata 'authorization: Bearer TOKEN' "
                            "(the owner token is in <home>/run/serve.json)")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise AuthError("malformed authorization metadata: expected 'Bearer TOKEN'")
        if hmac.compare_digest(token.encode(), self._owner):
            return ADMIN
        if self.store is None:
            raise AuthError("invalid token")
        return self.store.lookup(token)
