"""The configuration keys the control socket uses, taken from ``Config`` in one place.

The listener and its sessions see these and nothing else of the 50-odd keys of
config.ini. Built once from the validated :class:`eccm.config.Config` (the secrets' length
rule, the bind address, the TLS files are checked there), and the defaults are config.py's
alone (no field has one here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eccm.config import Config


@dataclass(frozen=True)
class ControlSettings:
    """What the control socket is configured with (the keys' names in the comments)."""

    bind: str  # SOCKET_SERVER_BIND
    port: int  # SOCKET_SERVER_PORT
    # The secrets make the server's own Credentials when it is not handed the daemon's,
    # and an empty SOCKET_SERVER_SECRET refuses to start the socket.
    secret: str = field(repr=False)  # SOCKET_SERVER_SECRET: every scope
    read_secret: str = field(repr=False)  # SOCKET_SERVER_READ_SECRET: read only; empty: none
    tls_cert: str  # SOCKET_SERVER_TLS_CERT; empty: plain TCP
    tls_key: str  # SOCKET_SERVER_TLS_KEY
    allow_plain_auth: bool  # SOCKET_SERVER_ALLOW_PLAIN_AUTH
    allow_dtc_clear: bool  # SOCKET_SERVER_ALLOW_DTC_CLEAR (for a service of its own)
    max_clients: int  # SOCKET_SERVER_MAX_CLIENTS

    @classmethod
    def from_config(cls, cfg: Config) -> ControlSettings:
        return cls(
            bind=cfg.socket_server_bind,
            port=cfg.socket_server_port,
            secret=cfg.socket_server_secret,
            read_secret=cfg.socket_server_read_secret,
            tls_cert=cfg.socket_server_tls_cert,
            tls_key=cfg.socket_server_tls_key,
            allow_plain_auth=cfg.socket_server_allow_plain_auth,
            allow_dtc_clear=cfg.socket_server_allow_dtc_clear,
            max_clients=cfg.socket_server_max_clients,
        )
