"""An in-memory Backend for the control session and server tests (the daemon's parts are
replaced, the session and the server under test are real)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from eccm.clock import Clock
from eccm.control.backend import ClearResult, Refused, ValueInfo
from eccm.control.client import hmac_proof
from eccm.gnss.fix import Fix
from eccm.sample import Reading

SECRET = "correct horse battery staple, a secret of 40+ chars"


class FakeBackend:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        now = clock.monotonic()
        self._lock = threading.Lock()
        self.readings: dict[str, Reading] = {
            "RPM": Reading(850.0, "revolutions_per_minute", now),
            "SPEED": Reading(0.0, "kilometer_per_hour", now),
        }
        self.info: list[ValueInfo] = [
            ValueInfo("RPM", "revolutions_per_minute", "Engine RPM", True),
            ValueInfo("SPEED", "kilometer_per_hour", "Vehicle Speed", True),
            ValueInfo("THROTTLE_POS", "percent", "Throttle Position", True),
            ValueInfo("FUEL_LEVEL", "percent", "Fuel Level Input", False),
        ]
        self.on_demand: dict[str, Reading] = {"FUEL_LEVEL": Reading(42.5, "percent", now)}
        self.read_error: Refused | None = None
        self.state = "connected"
        self.fix: Fix | None = None
        self.dtcs: dict[str, object] = {
            "mil": True,
            "stored": [{"code": "P0143", "description": "O2 Sensor Circuit Low Voltage"}],
            "pending": [],
        }
        self.clear_answer = ClearResult(True, "44")
        self.clears = 0
        self.reads: list[str] = []
        self.queued = 3
        self.upload_error: Refused | None = None
        self.fail_status = False

    def set(self, name: str, value: float | str | None, unit: str | None = None) -> None:
        with self._lock:
            self.readings[name] = Reading(value, unit, self.clock.monotonic())

    def now(self) -> float:
        return self.clock.time()

    def values(self) -> Mapping[str, Reading]:
        with self._lock:
            return dict(self.readings)

    def catalogue(self) -> Sequence[ValueInfo]:
        return list(self.info)

    def read(self, name: str, timeout: float) -> Reading:
        self.reads.append(name)
        if self.read_error is not None:
            raise self.read_error
        if self.state != "connected":
            raise Refused("not_connected", "the OBD adapter is not connected")
        if name in self.on_demand:
            r = self.on_demand[name]
            return Reading(r.value, r.unit, self.clock.monotonic())
        if name in self.readings:
            return self.readings[name]
        raise Refused("unknown_value", f"{name} is not supported by the car")

    def obd_state(self) -> str:
        return self.state

    def gnss(self) -> Fix | None:
        return self.fix

    def status(self) -> Mapping[str, object]:
        if self.fail_status:
            raise RuntimeError("boom")
        return {
            "obd": self.state,
            "protocol": "ISO 15765-4 (CAN 11/500)",
            "trip": "20261122T022005Z",
            "recording": "car_20261122T022005Z_0001.tsv.part",
            "rows": 12,
            "upload_queue": self.queued,
            "last_upload": None,
            "last_error": None,
            "uptime_s": 1.5,
            "odd": float("nan"),
        }

    def read_dtcs(self, timeout: float) -> Mapping[str, object]:
        if self.state != "connected":
            raise Refused("not_connected", "the OBD adapter is not connected")
        return self.dtcs

    def clear_dtcs(self, timeout: float) -> ClearResult:
        self.clears += 1
        return self.clear_answer

    def upload_now(self) -> int:
        if self.upload_error is not None:
            raise self.upload_error
        return self.queued


def proof(nonce: str, secret: str = SECRET) -> str:
    return hmac_proof(secret, nonce)
