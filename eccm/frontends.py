"""Building the front ends from a Config: the one service they all call, the secrets and
failure limiter they share, then the control socket, the web page and MQTT.

Wiring only, like eccm/app.py, which calls these once recording and the OBD link have
started: each builder imports its front end's libraries (aiohttp for the web page,
paho-mqtt for MQTT) only when that front end is on, off the path of the first row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eccm.clock import Clock
from eccm.config import Config

if TYPE_CHECKING:
    from eccm.backend import DaemonBackend
    from eccm.control.authlimit import AuthLimiter
    from eccm.control.server import ControlServer
    from eccm.gnss.source import GnssSource
    from eccm.hub import Hub
    from eccm.mqtt.publisher import MqttPublisher
    from eccm.obd.link import ObdLink
    from eccm.service import Credentials, Service
    from eccm.store.recorder import Recorder
    from eccm.trip.computer import TripComputer
    from eccm.upload.uploader import Uploader
    from eccm.web.server import WebServer

# The daemon's lines, under the name they always had (the log format shows it).
log = logging.getLogger("eccm.app")


@dataclass(frozen=True)
class Shared:
    """What every front end is handed: the one service, the one set of secrets they accept
    (None: no SOCKET_SERVER_SECRET) and the one failure limiter they share (a guesser
    gains nothing by switching door)."""

    service: Service
    backend: DaemonBackend
    credentials: Credentials | None
    limiter: AuthLimiter


def build_service(
    cfg: Config,
    clock: Clock,
    *,
    hub: Hub,
    link: ObdLink | None,
    recorder: Recorder | None,
    uploader: Uploader | None,
    started_at: float,
    trip: TripComputer | None,
    gnss: GnssSource | None,
) -> Shared:
    """The service, its backend, the secrets and the limiter; recovers the audit records
    of trouble-code clears a power cut left half-written before any front end listens."""
    from eccm.backend import DaemonBackend
    from eccm.control.authlimit import AuthLimiter
    from eccm.errors import ConfigError
    from eccm.service import Credentials, Service
    from eccm.store.audit import AuditWriter, audit_seal
    from eccm.store.budget import DiskSettings

    audit = AuditWriter(cfg.record_dir, cfg.car_identifier, seal=audit_seal(cfg))
    try:
        audit.recover()
    except OSError as exc:
        log.error("audit records left by a power cut not recovered: %s", exc)
    backend = DaemonBackend(
        disk=DiskSettings.from_config(cfg),
        hub=hub,
        link=link,
        recorder=recorder,
        uploader=uploader,
        started_at=started_at,
        trip=trip,
        gnss=gnss,
    )
    service = Service(
        backend,
        clock,
        allow_dtc_clear=cfg.socket_server_allow_dtc_clear,
        audit=audit,
    )
    credentials = None
    if cfg.socket_server_secret:
        try:
            credentials = Credentials(cfg.socket_server_secret, cfg.socket_server_read_secret)
        except ValueError as exc:  # config.py refuses these already
            raise ConfigError(f"control socket secrets: {exc}") from None
    return Shared(service, backend, credentials, AuthLimiter(clock))


def build_control(cfg: Config, shared: Shared, clock: Clock) -> ControlServer | None:
    """The control socket (ENABLE_SOCKET_SERVER)."""
    if not cfg.enable_socket_server:
        return None
    from eccm.control.server import ControlServer
    from eccm.control.settings import ControlSettings

    return ControlServer(
        ControlSettings.from_config(cfg),
        shared.service,
        clock,
        credentials=shared.credentials,
        limiter=shared.limiter,
    )


def build_web(cfg: Config, shared: Shared, clock: Clock) -> WebServer | None:
    """The web page (ENABLE_WEB_SERVER); imports aiohttp."""
    if not cfg.enable_web_server:
        return None
    from eccm.web.server import WebServer
    from eccm.web.settings import WebSettings

    return WebServer(
        WebSettings.from_config(cfg),
        shared.service,
        clock,
        credentials=shared.credentials,
        limiter=shared.limiter,
    )


def build_mqtt(cfg: Config, shared: Shared, clock: Clock) -> MqttPublisher | None:
    """The MQTT publisher (MQTT_BROKER set); imports paho-mqtt."""
    if not cfg.mqtt_enabled:
        return None
    from eccm.mqtt.publisher import MqttPublisher
    from eccm.mqtt.settings import MqttSettings

    mqtt = MqttPublisher(MqttSettings.from_config(cfg), shared.service, clock)
    # A refused login or certificate shows in STATUS's last_error.
    shared.backend.add_error_source(lambda: mqtt.last_error)
    return mqtt
