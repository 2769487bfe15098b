"""The server side of TLS, shared by the control socket and the web page."""

from __future__ import annotations

import ssl

from eccm.errors import ConfigError


def server_context(cert: str, key: str, prefix: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context from a PEM certificate and key; a file that cannot be
    loaded is a configuration error naming ``{prefix}_TLS_CERT`` / ``{prefix}_TLS_KEY``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{prefix}_TLS_CERT={cert!r} / {prefix}_TLS_KEY={key!r} cannot be loaded: "
            f"{exc}; expected a PEM certificate and its private key"
        ) from exc
    return ctx
