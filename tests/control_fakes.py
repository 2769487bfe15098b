"""Helpers of the control socket tests: an in-memory Backend (the daemon's parts replaced;
the session and the server under test are real) and a client on a real socket."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from eccm.clock import Clock
from eccm.control.client import hmac_proof
from eccm.gnss.fix import Fix
from eccm.sample import Reading
from eccm.service import ClearResult, ServiceError, ValueInfo

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
        self.read_error: ServiceError | None = None
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
        self.upload_error: ServiceError | None = None
        self.fail_status = False
        # Set: read_dtcs waits for it (a slow car), telling dtc_waiting that it does.
        self.dtc_gate: threading.Event | None = None
        self.dtc_waiting = threading.Event()

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
            raise ServiceError("not_connected", "the OBD adapter is not connected")
        if name in self.on_demand:
            r = self.on_demand[name]
            return Reading(r.value, r.unit, self.clock.monotonic())
        if name in self.readings:
            return self.readings[name]
        raise ServiceError("unknown_value", f"{name} is not supported by the car")

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

    def read_dtcs(self, timeout: float, *, detail: bool = False) -> Mapping[str, object]:
        if self.dtc_gate is not None:
            self.dtc_waiting.set()
            self.dtc_gate.wait(60.0)
        if self.state != "connected":
            raise ServiceError("not_connected", "the OBD adapter is not connected")
        return self.dtcs

    def clear_dtcs(self, timeout: float) -> ClearResult:
        self.clears += 1
        return self.clear_answer

    def upload_now(self) -> int:
        if self.upload_error is not None:
            raise self.upload_error
        return self.queued

    def trip(self) -> Mapping[str, object]:
        return {"active": False, "trip": None, "previous": None}

    def track(self) -> tuple[str | None, Sequence[tuple[float, float]]]:
        return None, ()


def proof(nonce: str, secret: str = SECRET) -> str:
    return hmac_proof(secret, nonce)


Reply = dict[str, Any]


class Client:
    """A test client on a real socket."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        timeout: float = 20.0,
        source: str | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            # Another loopback address (127.0.0.2 ...) stands for another host on the LAN.
            sock.bind((source, 0))
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(address)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def reply(self) -> Reply:
        line = self._file.readline()
        assert line, "connection closed instead of a reply"
        assert line.endswith(b"\n")
        obj = json.loads(line)
        assert isinstance(obj, dict)
        return obj

    def ask(self, text: str) -> Reply:
        self.send(text)
        return self.reply()

    def ask_patiently(self, text: str, attempts: int = 20) -> Reply:
        """``ask``, asked again after a ``busy`` reply (after its ``retry_after``) or an
        ``obd_timeout``, as a client should: on a loaded machine the adapter's share may
        turn an on-demand read (the speed a DTC clear checks) away, or answer it late."""
        for _ in range(attempts - 1):
            reply = self.ask(text)
            if reply.get("code") not in ("busy", "obd_timeout"):
                return reply
            time.sleep(float(reply.get("retry_after", 0.5)))
        return self.ask(text)

    def hello(self) -> Reply:
        hello = self.reply()
        assert hello["class"] == "HELLO", hello
        return hello

    def auth(self) -> Client:
        nonce = self.hello()["nonce"]
        assert self.ask(f"AUTH HMAC {hmac_proof(SECRET, nonce)}") == {
            "class": "AUTH",
            "ok": True,
            "scopes": ["read", "control", "diagnose"],
        }
        return self

    def rest(self) -> list[Reply]:
        """Every reply until the server closes (a reset after the replies is fine)."""
        out = []
        try:
            for line in self._file:
                out.append(json.loads(line))
        except (ConnectionResetError, BrokenPipeError):
            pass
        return out
