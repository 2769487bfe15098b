"""The configuration keys the OBD link and the trouble-code poller use, and nothing else.

Built once from the validated :class:`eccm.config.Config` (``ObdSettings.from_config``):
every value here is already typed and checked, so the link has no parsing of its own, and
the defaults are config.py's alone (no field has one here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eccm.config import Config

# ELM327 protocol numbers python-OBD has no decoder for (user-defined CAN): valid for the
# adapter, so the configuration accepts them, but the link detects the protocol instead.
UNDECODABLE_PROTOCOLS = frozenset({"B", "C"})


@dataclass(frozen=True)
class ObdSettings:
    """What the OBD side of ECCM is configured with (the keys' names in the comments)."""

    interface: str  # OBD_INTERFACE; empty: python-OBD looks for the adapter
    baudrate: int | None  # OBD_BAUDRATE; None: detected
    protocol: str | None  # OBD_PROTOCOL, "1"-"9" or "A"-"C"; None: detected
    fast_commands: tuple[str, ...]  # OBD_FAST_COMMANDS
    slow_commands: tuple[str, ...]  # OBD_SLOW_COMMANDS, ("ALL",) for every other value
    slow_interval: float  # OBD_SLOW_INTERVAL
    sample_interval: float  # SAMPLE_INTERVAL
    reconnect_max_interval: float  # OBD_RECONNECT_MAX_INTERVAL
    trip_end_timeout: float  # TRIP_END_TIMEOUT
    dtc_interval: float  # OBD_DTC_INTERVAL
    low_battery_voltage: float  # LOW_BATTERY_VOLTAGE
    gps_columns: bool  # GPS_POSITION_MONITORING: rows have position columns

    @classmethod
    def from_config(cls, cfg: Config) -> ObdSettings:
        return cls(
            interface=cfg.obd_interface,
            baudrate=cfg.obd_baudrate,
            protocol=cfg.obd_protocol,
            fast_commands=cfg.obd_fast_commands,
            slow_commands=cfg.obd_slow_commands,
            slow_interval=cfg.obd_slow_interval,
            sample_interval=cfg.sample_interval,
            reconnect_max_interval=cfg.obd_reconnect_max_interval,
            trip_end_timeout=cfg.trip_end_timeout,
            dtc_interval=cfg.obd_dtc_interval,
            low_battery_voltage=cfg.low_battery_voltage,
            gps_columns=cfg.gps_position_monitoring,
        )

    @property
    def interface_shown(self) -> str:
        """OBD_INTERFACE as messages name it."""
        return self.interface or "(auto-detect)"

    @property
    def python_obd_protocol(self) -> str | None:
        """The protocol python-OBD is asked for (None: it detects one)."""
        if self.protocol in UNDECODABLE_PROTOCOLS:
            return None
        return self.protocol
