"""TLS for a TCP listener (grpcio's own): a certificate and key, and with a client CA, mTLS.

With ``client_ca`` the handshake requires a client certificate signed by that CA, and a call without a token is
authenticated as the certificate's subject (``certificate_principal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from actors.errors import ConfigError


def _pem(path: Path, what: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc
    if marker not in data:
        raise ConfigError(f"{what} {path}: not a PEM file (no {marker.decode()!r} block)")
    return data


@dataclass(frozen=True)
class TlsConfig:
    """A server's certificate chain and key (PEM), and the CA its clients' certificates must come from."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def load(cls, cert: Path, key: Path, client_ca: Path | None = None) -> TlsConfig:
        """Read the PEM files; ``ConfigError`` naming the file that is missing or not PEM."""
        return cls(cert_chain=_pem(cert, "--tls-cert", b"-----BEGIN CERTIFICATE-----"),
                   private_key=_pem(key, "--tls-key", b"PRIVATE KEY-----"),
                   client_ca=_pem(client_ca, "--tls-client-ca", b"-----BEGIN CERTIFICATE-----")
                   if client_ca is not None else None)

    @property
    def mutual(self) -> bool:
        """Client certificates are required (mTLS)."""
        return self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """grpcio's server credentials for this configuration."""
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)], root_certificates=self.client_ca,
                                           require_client_auth=self.mutual)
