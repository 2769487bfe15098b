"""SPEC §5 line by line against `eccm run` as a real subprocess (the ELM327 emulator on a
pseudo-terminal, an NMEA receiver on another, the control socket on, logging at DEBUG),
spoken to over TCP as a phone app or `nc` would, and with the README's `eccm query` lines."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eccm.control.client import hmac_proof
from eccm.sim.gnss import NmeaPty, Route
from tests.control_fakes import SECRET, Client
from tests.emulator import emulated_car, stored_dtcs
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

WAIT = 60.0  # generous: the suite shares two cores with other work
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX8 = re.compile(r"^[0-9a-f]{8}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MAX_CLIENTS = 4
Reply = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    emu: Any
    proc: subprocess.Popen[bytes]
    config: Path
    log: Path
    address: tuple[str, int]

    def client(self, source: str | None = None) -> Client:
        return Client(self.address, timeout=WAIT, source=source)

    def speed(self, kmh: int | None) -> None:
        """The emulated car's speed from now on (None: the emulator's own), once the
        daemon has seen it."""
        from elm.obd_message import DT, ECU_R_ADDR_E, HD, SZ

        if kmh is None:
            self.emu.answer.pop("SPEED", None)
            return
        self.emu.answer["SPEED"] = HD(ECU_R_ADDR_E) + SZ("03") + DT(f"41 0D {kmh:02X}")
        c = self.client().auth()
        wait_until(
            lambda: c.ask("GET SPEED")["values"]["SPEED"]["value"] == kmh,
            timeout=WAIT,
            what=f"the daemon to see {kmh} km/h",
        )
        c.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("conformance")
    port = free_port()
    with (
        emulated_car("car") as emu,
        NmeaPty(Route(latitude=45.0, longitude=7.0), rate_hz=2.0) as gnss,
    ):
        config = tmp / "config.ini"
        config.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=spec-car\n"
            f"OBD_INTERFACE={emu.get_pty()}\n"
            "OBD_FAST_COMMANDS=RPM,SPEED\n"
            "OBD_SLOW_COMMANDS=COOLANT_TEMP\n"
            "SAMPLE_INTERVAL=0.1\n"
            "GPS_POSITION_MONITORING=yes\n"
            f"GPS_INTERFACE={gnss.path}\n"
            f"RECORD_DIRECTORY_LOCATION={tmp / 'records'}\n"
            "ENABLE_SOCKET_SERVER=yes\n"
            f"SOCKET_SERVER_PORT={port}\n"
            f"SOCKET_SERVER_SECRET={SECRET}\n"
            f"SOCKET_SERVER_MAX_CLIENTS={MAX_CLIENTS}\n"
            "LOG_LEVEL=DEBUG\n",
            encoding="utf-8",
        )
        log = tmp / "daemon.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        d = Daemon(emu, proc, config, log, ("127.0.0.1", port))
        try:

            def ready() -> bool:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                try:
                    c = d.client().auth()
                except OSError:
                    return False
                status, gnss_reply = c.ask("STATUS"), c.ask("GNSS")
                c.close()
                return status["obd"] == "connected" and gnss_reply["fix"] is True

            wait_until(ready, timeout=WAIT, what="the daemon: OBD connected and a GNSS fix")
            yield d
        finally:
            emu.answer.pop("SPEED", None)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(WAIT)
            finally:
                proc.kill()
            assert code == 0, log.read_text(errors="replace")[-3000:]


def hello_when_room(daemon: Daemon) -> tuple[Client, dict[str, Any]]:
    """A connection and its HELLO. Connections closed just before may not be reaped yet by
    a daemon on a loaded machine (SOCKET_SERVER_MAX_CLIENTS is small here): a refused one
    is tried again, as a client would."""
    got: list[tuple[Client, dict[str, Any]]] = []

    def attempt() -> bool:
        c = daemon.client()
        first = c.reply()
        if first.get("code") == "too_many_clients":
            c.close()
            return False
        got.append((c, first))
        return True

    wait_until(attempt, what="room on the control socket")
    return got[0]


def test_hello_then_auth_hmac(daemon: Daemon) -> None:
    nonces = set()
    for _ in range(20):
        c, hello = hello_when_room(daemon)
        assert hello["class"] == "HELLO", hello
        assert set(hello) == {"class", "proto", "version", "nonce", "auth"}
        assert hello["proto"] == 1 and isinstance(hello["version"], str)
        assert HEX32.match(hello["nonce"]) and "hmac-sha256" in hello["auth"]
        nonces.add(hello["nonce"])
        c.close()
    assert len(nonces) == 20  # random per connection
    c, hello = hello_when_room(daemon)
    nonce = hello["nonce"]
    assert c.ask(f"auth hmac {hmac_proof(SECRET, nonce).upper()}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read", "control", "diagnose"],
    }


def test_plain_auth_from_loopback_and_crlf(daemon: Daemon) -> None:
    c = daemon.client()
    c.hello()
    c.sock.sendall(f"AUTH {SECRET}\r\nPing\r\n".encode())
    assert c.reply() == {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
    assert c.reply() == {"class": "PONG"}


def test_values_supported_gnss_status(daemon: Daemon) -> None:
    c = daemon.client().auth()
    supported = c.ask("supported")
    assert supported["class"] == "SUPPORTED"
    for entry in supported["values"]:
        assert set(entry) == {"name", "unit", "description", "logged"}
        assert isinstance(entry["logged"], bool) and isinstance(entry["description"], str)
    by_name = {e["name"]: e for e in supported["values"]}
    assert by_name["RPM"]["unit"] == "revolutions_per_minute" and by_name["RPM"]["logged"]
    assert by_name["FUEL_LEVEL"]["logged"] is False

    values = c.ask("GET RPM speed")
    assert values["class"] == "VALUES" and ISO_MS.match(values["time"])
    assert list(values["values"]) == ["RPM", "SPEED"]
    for v in values["values"].values():
        assert set(v) == {"value", "unit", "age_ms"}
        assert isinstance(v["value"], float) and isinstance(v["age_ms"], int)
    assert c.ask("GET FUEL_LEVEL")["values"]["FUEL_LEVEL"]["unit"] == "percent"  # on demand
    every = c.ask("GET")["values"]
    assert {"RPM", "SPEED", "COOLANT_TEMP", "GPS_LATITUDE", "GPS_SATELLITES"} <= set(every)

    gnss = c.ask("GNSS")
    assert gnss["class"] == "GNSS" and gnss["fix"] is True and ISO_MS.match(gnss["time"])
    assert {"lat", "lon", "alt", "speed", "track", "satellites", "hdop"} <= set(gnss)
    assert abs(gnss["lat"] - 45.0) < 0.1 and isinstance(gnss["satellites"], int)

    status = c.ask("STATUS")
    assert status["class"] == "STATUS" and status["obd"] == "connected"
    for key in ("protocol", "trip", "recording", "rows", "upload_queue", "last_upload"):
        assert key in status
    assert status["last_error"] is None and isinstance(status["uptime_s"], float)
    assert isinstance(status["rows"], int) and isinstance(status["upload_queue"], int)


def test_watch_live_until_watch_off(daemon: Daemon) -> None:
    c = daemon.client().auth()
    watch = c.ask("watch rpm SPEED every 0.1")
    assert watch["class"] == "WATCH" and watch["ok"] is True
    for _ in range(3):
        live = c.reply()
        assert live["class"] == "LIVE" and list(live["values"]) == ["RPM", "SPEED"]
    c.send("WATCH OFF")
    while (r := c.reply())["class"] == "LIVE":
        pass
    assert r["class"] == "WATCH" and r["ok"] is True and r["watching"] is False
    assert c.ask("PING") == {"class": "PONG"}
    help_ = c.ask("HELP")
    assert help_["class"] == "HELP" and "DTC CLEAR CONFIRM <token>" in help_["commands"]
    c.send("quit")
    assert c.rest() == []


def test_dtc_and_the_two_step_clear(daemon: Daemon) -> None:
    c = daemon.client().auth()
    with stored_dtcs(["0143"]):
        dtc = c.ask("DTC")
        assert dtc["class"] == "DTC" and dtc["mil"] is True and dtc["pending"] == []
        assert dtc["stored"] == [{"code": "P0143", "description": "O2 Sensor Circuit Low Voltage"}]
        daemon.speed(40)
        assert c.ask("DTC CLEAR")["code"] == "vehicle_moving"
        daemon.speed(0)
        try:
            confirm = c.ask("dtc clear")
            assert set(confirm) == {"class", "token", "expires_in", "warning"}
            assert confirm["class"] == "CONFIRM" and HEX8.match(confirm["token"])
            assert confirm["expires_in"] == 30
            assert confirm["warning"] == "clears stored codes and resets readiness monitors"
            other = daemon.client().auth()  # bound to the session
            assert other.ask(f"DTC CLEAR CONFIRM {confirm['token']}")["code"] == "confirm_invalid"
            done = c.ask(f"DTC CLEAR CONFIRM {confirm['token']}")
            assert done["class"] == "DTC_CLEARED" and done["ok"] is True
            # single use
            assert c.ask(f"DTC CLEAR CONFIRM {confirm['token']}")["code"] == "confirm_invalid"
            assert c.ask("DTC")["stored"] == []
        finally:
            daemon.speed(None)


def test_every_error_code_a_client_can_cause(daemon: Daemon) -> None:
    """not_connected, obd_timeout and busy need the adapter down or slow, server_error a
    bug: tests/test_control_daemon.py and tests/test_control_protocol.py have them."""
    pre = daemon.client()
    pre.hello()
    assert pre.ask("STATUS")["code"] == "noauth"
    assert pre.ask("PING") == {"class": "PONG"}
    c = daemon.client().auth()
    assert c.ask("")["code"] == "bad_request"
    assert c.ask("FROB")["code"] == "unknown_command"
    assert c.ask("GET NO_SUCH_VALUE")["code"] == "unknown_value"
    assert c.ask("DTC CLEAR CONFIRM 00000000")["code"] == "confirm_invalid"
    assert c.ask("UPLOAD")["code"] == "forbidden"  # S3 is off here
    c.send("GET " + "X" * 1100)
    assert [r["code"] for r in c.rest()] == ["line_too_long"]
    bad = daemon.client(source="127.0.0.2")  # loopback is one address: later AUTHs wait 1 s
    bad.hello()
    assert bad.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    assert bad.rest() == []
    # Connections of the tests before may still be closing: open until one is refused.
    held = []
    for _ in range(MAX_CLIENTS + 3):
        h = daemon.client()
        first = h.reply()
        if first["class"] == "ERROR":
            assert first["code"] == "too_many_clients"
            break
        held.append(h)
    else:
        raise AssertionError(f"no refusal after {len(held)} connections")
    assert len(held) <= MAX_CLIENTS
    pre.send("QUIT")
    for h in held:
        h.close()


def test_readme_eccm_query_lines(daemon: Daemon) -> None:
    def query(*words: str, stdin: str | None = None) -> tuple[int, list[Reply], str]:
        proc = subprocess.run(
            [sys.executable, "-m", "eccm.cli", "query", "--config", str(daemon.config), *words],
            input=stdin, capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr

    code, out, _err = query("STATUS")
    assert code == 0 and out[0]["class"] == "STATUS"
    code, out, _err = query("GET", "RPM", "SPEED")
    assert code == 0 and list(out[0]["values"]) == ["RPM", "SPEED"]
    code, out, _err = query("DTC")
    assert code == 0 and out[0]["class"] == "DTC"
    code, out, _err = query("GET", "NOPE")
    assert code == 1 and out[0]["code"] == "unknown_value"
    daemon.speed(0)
    try:
        code, out, err = query("DTC", "CLEAR", stdin="no\n")
        assert code == 1 and [r["class"] for r in out] == ["CONFIRM"] and "nothing cleared" in err
        code, out, _err = query("DTC", "CLEAR", stdin="yes\n")
        assert code == 0 and [r["class"] for r in out] == ["CONFIRM", "DTC_CLEARED"]
    finally:
        daemon.speed(None)


def test_the_secret_is_never_logged(daemon: Daemon) -> None:
    """Run last in this module: its DEBUG log then holds every session above."""
    near_miss = SECRET[:-1] + "#"
    c = daemon.client(source="127.0.0.3")
    c.hello()
    assert c.ask(f"AUTH {near_miss}")["code"] == "auth_failed"
    c = daemon.client()
    c.hello()
    assert c.ask(f"AUTH {SECRET}")["class"] == "AUTH"
    c.send("QUIT")
    c.rest()
    wait_until(lambda: "failed to authenticate (plain)" in daemon.log.read_text(errors="replace"))
    text = daemon.log.read_text(errors="replace")
    assert "DEBUG" in text and "authenticated (hmac)" in text
    for secret_part in (SECRET, near_miss, SECRET[:16], SECRET[-16:]):
        assert secret_part not in text
