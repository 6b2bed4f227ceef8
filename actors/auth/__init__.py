"""API security: who may call the gRPC API, and how a client proves it.

- ``serve`` listens on a unix socket ``<home>/run/supervisor.sock`` by default (0600 in a 0700 directory) and
  writes ``<home>/run/serve.json`` (0600) with its address and a fresh 256-bit owner token (``_files``).
- ``AuthInterceptor`` refuses every call but health's without a valid ``authorization: Bearer TOKEN`` (or,
  with mTLS, a verified client certificate): UNAUTHENTICATED before any handler runs (``_interceptor``).
- Tokens name principals (``_tokens``): the owner token the administrator, stored ones (``token create``) a
  principal that owns the sessions it starts (``Ownership``, ``<home>/auth/owners.tsv``).
- ``TlsConfig``: grpcio's TLS for a TCP listener; with a client CA, mTLS (the certificate's subject names the
  principal).
- ``connect(home)`` / ``open_channel(address, token)``: an authenticated client channel (``_client``).
"""

from __future__ import annotations

from actors.auth._client import bearer, connect, open_channel
from actors.auth._files import (
    SERVE_FILE,
    SOCKET_FILE,
    ServeInfo,
    read_serve_info,
    remove_serve_info,
    run_dir,
    serve_file,
    socket_path,
    write_serve_info,
)
from actors.auth._interceptor import EXEMPT_PREFIXES, AuthInterceptor, certificate_principal, current_principal
from actors.auth._owners import Ownership
from actors.auth._tls import TlsConfig
from actors.auth._tokens import (
    ADMIN,
    OWNER,
    Authenticator,
    AuthError,
    Principal,
    TokenEntry,
    TokenStore,
    check_principal_name,
    new_token,
)

__all__ = [
    "ADMIN",
    "EXEMPT_PREFIXES",
    "OWNER",
    "SERVE_FILE",
    "SOCKET_FILE",
    "AuthError",
    "AuthInterceptor",
    "Authenticator",
    "Ownership",
    "Principal",
    "ServeInfo",
    "TlsConfig",
    "TokenEntry",
    "TokenStore",
    "bearer",
    "certificate_principal",
    "check_principal_name",
    "connect",
    "current_principal",
    "new_token",
    "open_channel",
    "read_serve_info",
    "remove_serve_info",
    "run_dir",
    "serve_file",
    "socket_path",
    "write_serve_info",
]
