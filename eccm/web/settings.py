"""The configuration keys the web page's server uses, taken from ``Config`` in one place.

The server, its login and its API see these and nothing else of the 50-odd keys of
config.ini. Built once from the validated :class:`eccm.config.Config` (the secrets' length
rule, the bind address, the TLS files, the tile URL are checked there), and the defaults
are config.py's alone (no field has one here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eccm.config import Config


@dataclass(frozen=True)
class WebSettings:
    """What the web page is configured with (the keys' names in the comments)."""

    bind: str  # WEB_SERVER_BIND
    port: int  # WEB_SERVER_PORT
    tls_cert: str  # WEB_SERVER_TLS_CERT; empty: plain HTTP
    tls_key: str  # WEB_SERVER_TLS_KEY
    map_tiles: str  # WEB_MAP_TILES; empty: the track alone
    car: str  # CAR_IDENTIFIER, shown on the page
    # The page accepts the control socket's secrets (and its plain-auth rule): they make
    # its own Credentials and login links when it is not handed the daemon's.
    secret: str = field(repr=False)  # SOCKET_SERVER_SECRET: every scope
    read_secret: str = field(repr=False)  # SOCKET_SERVER_READ_SECRET: read only; empty: none
    allow_plain_auth: bool  # SOCKET_SERVER_ALLOW_PLAIN_AUTH
    # RECORD_DIRECTORY_LOCATION: the sessions are kept there across restarts (None: not kept)
    session_folder: Path | None

    @classmethod
    def from_config(cls, cfg: Config) -> WebSettings:
        return cls(
            bind=cfg.web_server_bind,
            port=cfg.web_server_port,
            tls_cert=cfg.web_server_tls_cert,
            tls_key=cfg.web_server_tls_key,
            map_tiles=cfg.web_map_tiles,
            car=cfg.car_identifier,
            secret=cfg.socket_server_secret,
            read_secret=cfg.socket_server_read_secret,
            allow_plain_auth=cfg.socket_server_allow_plain_auth,
            session_folder=cfg.record_dir,
        )
