"""A position fix, as the rest of ECCM sees it (whatever the receiver or gpsd said)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fix:
    """One GNSS solution. Units: degrees, metres, m/s, degrees true.

    ``received`` is the monotonic time it arrived (for staleness) and ``received_wall`` the
    system clock at that moment (to measure how far off the system clock is).
    """

    # Seconds since the epoch from the receiver's date and time, GPS week rollover already
    # resolved (by NmeaDecoder, or by gpsd itself): consumers take it as is.
    time_utc: float | None
    latitude: float | None
    longitude: float | None
    altitude: float | None
    speed: float | None  # m/s over ground
    track: float | None  # degrees true
    quality: int | None  # GGA fix quality: 0 invalid, 1 GPS, 2 DGPS, ...
    satellites: int | None
    hdop: float | None
    received: float
    received_wall: float

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None
