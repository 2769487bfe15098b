"""MQTT end to end (SPEC §8): the daemon on the ELM327 emulator publishing to a real
mosquitto (password file, ACL, TLS listener with a self-made CA), read by a real client."""

from __future__ import annotations

import itertools
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from eccm.config import Config, parse
from eccm.mqtt.publisher import MqttPublisher
from eccm.service import Service
from tests.mqtt_helpers import CAR_PASSWORD, CAR_USER, WAIT, Broker, Watcher
from tests.s3server import self_signed_cert
from tests.speed import set_speed
from tests.waiting import wait_until

CAR = "mqtt-car"
P = f"eccm/{CAR}"
INTERVAL = 1.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The broker's certificate (its own CA) and key, and another CA that did not sign it."""
    folder = tmp_path_factory.mktemp("mqtt-tls")
    cert, key = self_signed_cert(folder / "broker")
    other, _ = self_signed_cert(folder / "other")
    return cert, key, other


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path, Path]
) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"), tls=(certs[0], certs[1])).start()
    yield b
    b.stop()


@dataclass
class Running:
    emu: Any
    daemon: Any
    cfg: Config
    watcher: Watcher

    @property
    def service(self) -> Service:
        assert self.daemon.service is not None
        return self.daemon.service

    def speed(self, kmh: int) -> None:
        set_speed(self.emu, self.daemon.hub, kmh)


def mqtt_keys(broker: Broker, **extra: str) -> dict[str, str]:
    return {
        "MQTT_BROKER": broker.url,
        "MQTT_USERNAME": CAR_USER,
        "MQTT_PASSWORD": CAR_PASSWORD,
        "MQTT_INTERVAL": str(INTERVAL),
        **extra,
    }


@pytest.fixture(scope="module")
def running(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from eccm.app import Daemon
    from eccm.sim.car import emulated_car

    watcher = Watcher(broker)
    with emulated_car("car") as emu:
        cfg = parse(
            {
                "CAR_IDENTIFIER": CAR,
                "OBD_INTERFACE": emu.get_pty(),
                "OBD_FAST_COMMANDS": "RPM,SPEED",
                "OBD_SLOW_COMMANDS": "COOLANT_TEMP,FUEL_LEVEL",
                "SAMPLE_INTERVAL": "0.1",
                "RECORD_DIRECTORY_LOCATION": str(tmp_path_factory.mktemp("records")),
                **mqtt_keys(
                    broker, MQTT_VALUES="SPEED,RPM,COOLANT_TEMP", MQTT_ALLOW_COMMANDS="yes"
                ),
            }
        )
        daemon = Daemon(cfg)
        daemon.start()
        try:
            wait_until(
                lambda: daemon.hub.latest_values().get("RPM"), timeout=WAIT, what="a first row"
            )
            yield Running(emu, daemon, cfg, watcher)
        finally:
            emu.answer.pop("SPEED", None)
            daemon.stop()
            watcher.close()


def test_discovery_carries_what_home_assistant_requires(running: Running) -> None:
    w = running.watcher
    speed = w.wait_for(
        f"homeassistant/sensor/eccm_{CAR}/speed/config",
        lambda m: "serial_number" in m.json()["device"],  # once the VIN is known
    ).json()
    assert speed["unique_id"] == f"eccm_{CAR}_speed"
    assert speed["state_topic"] == f"{P}/state"
    assert speed["availability_topic"] == f"{P}/availability"
    assert speed["unit_of_measurement"] == "km/h" and speed["device_class"] == "speed"
    assert speed["state_class"] == "measurement"
    device = speed["device"]
    assert device["identifiers"] == [f"eccm_{CAR}"] and device["sw_version"]
    assert device["serial_number"] == running.daemon.hub.facts()["vin"]
    coolant = w.wait_for(f"homeassistant/sensor/eccm_{CAR}/coolant_temp/config").json()
    assert (coolant["unit_of_measurement"], coolant["device_class"]) == ("°C", "temperature")
    mil = w.wait_for(f"homeassistant/binary_sensor/eccm_{CAR}/mil/config").json()
    assert mil["state_topic"] == f"{P}/dtc" and mil["device_class"] == "problem"
    for name in ("upload_queue", "last_error"):
        entity = w.wait_for(f"homeassistant/sensor/eccm_{CAR}/{name}/config").json()
        assert entity["state_topic"] == f"{P}/status"
    # No GNSS receiver (GPS_POSITION_MONITORING=no): no position that would stay unknown.
    assert not w.on(f"homeassistant/device_tracker/eccm_{CAR}/position/config")
    # Values not in MQTT_VALUES have no entity.
    assert not w.on(f"homeassistant/sensor/eccm_{CAR}/fuel_level/config")


def test_state_arrives_at_the_interval_with_the_emulators_values(running: Running) -> None:
    w = running.watcher
    seen = len(w.on(f"{P}/state"))
    w.wait_for(f"{P}/state", after=seen + 3)
    states = [m.json() for m in w.on(f"{P}/state")[seen:]]
    assert all(list(s) == ["time", "SPEED", "RPM", "COOLANT_TEMP"] for s in states)
    driving = [s for s in states if s["RPM"] is not None]
    assert driving and all(isinstance(s["RPM"], float) and 0 <= s["SPEED"] <= 255 for s in driving)
    times = [datetime.fromisoformat(s["time"].replace("Z", "+00:00")) for s in states]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # Never a burst: a late message is followed by the next at least half an interval on.
    assert min(gaps) >= 0.4 * INTERVAL
    assert w.wait_for(f"{P}/availability").payload == b"online"
    # The link says "connected" a moment before the trip begins: wait for both.
    status = w.wait_for(
        f"{P}/status", lambda m: m.json()["obd"] == "connected" and m.json()["trip"]
    ).json()
    assert status["class"] == "STATUS" and status["last_error"] is None
    assert w.wait_for(f"{P}/gnss").json() == {"fix": False}  # GPS is off
    dtc = w.wait_for(f"{P}/dtc").json()
    assert dtc["class"] == "DTC" and dtc["mil"] is False and dtc["stored"] == []


def test_commands_obeyed_when_allowed_dtc_clear_at_standstill(running: Running) -> None:
    from tests.emulator import stored_dtcs

    w, emu = running.watcher, running.emu
    emu.counters.pop("cmd_dtc_cleared", None)
    with stored_dtcs(["0143"]):
        before = len(w.on(f"{P}/cmd/result"))
        w.publish(f"{P}/cmd", "dtc_read")
        reply = w.wait_for(f"{P}/cmd/result", after=before).json()
        assert reply["class"] == "DTC" and [d["code"] for d in reply["stored"]] == ["P0143"]
        # P/dtc follows (on change).
        w.wait_for(f"{P}/dtc", lambda m: m.json()["mil"] is True)
        running.speed(40)
        w.publish(f"{P}/cmd", "dtc_clear")
        assert w.wait_for(f"{P}/cmd/result", after=before + 1).json()["code"] == "vehicle_moving"
        running.speed(0)
        w.publish(f"{P}/cmd", "dtc_clear")
        confirm = w.wait_for(f"{P}/cmd/result", after=before + 2).json()
        assert confirm["class"] == "CONFIRM" and not emu.counters.get("cmd_dtc_cleared")
        w.publish(f"{P}/cmd", f"dtc_clear confirm {confirm['token']}")
        done = w.wait_for(f"{P}/cmd/result", after=before + 3).json()
        assert done == {"class": "DTC_CLEARED", "ok": True, "ecu": "44"}
        assert emu.counters.get("cmd_dtc_cleared") is True
        w.publish(f"{P}/cmd", "upload")
        upload = w.wait_for(f"{P}/cmd/result", after=before + 4).json()
        assert upload["code"] == "forbidden"  # S3 is off here: the socket's very reply
        w.publish(f"{P}/cmd", "reboot")
        assert w.wait_for(f"{P}/cmd/result", after=before + 5).json()["code"] == "unknown_command"
    emu.answer.pop("SPEED", None)


def test_commands_refused_when_off(running: Running, broker: Broker) -> None:
    """A second publisher on the daemon's service, with MQTT_ALLOW_COMMANDS=no."""
    emu = running.emu
    cfg = parse(
        {
            "CAR_IDENTIFIER": "quiet-car",
            **mqtt_keys(broker, MQTT_HOMEASSISTANT="no"),
        }
    )
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    w = Watcher(broker, "eccm/quiet-car/#")
    try:
        running.speed(0)
        emu.counters.pop("cmd_dtc_cleared", None)
        w.wait_for("eccm/quiet-car/availability", lambda m: m.payload == b"online")
        for command in ("dtc_clear", "upload", "dtc_read"):
            before = len(w.on("eccm/quiet-car/cmd/result"))
            w.publish("eccm/quiet-car/cmd", command)
            reply = w.wait_for("eccm/quiet-car/cmd/result", after=before).json()
            assert reply["class"] == "ERROR" and reply["code"] == "forbidden"
            assert "MQTT_ALLOW_COMMANDS" in reply["message"]
        assert not emu.counters.get("cmd_dtc_cleared")
    finally:
        emu.answer.pop("SPEED", None)
        w.close()
        publisher.stop()


def test_a_retained_command_is_obeyed_at_most_once(running: Running, broker: Broker) -> None:
    """MQTT 3.1.1 delivers a retained message to those connected unflagged (obeyed, as any
    command), then flagged to every later subscriber: at each connect of ECCM, which must
    not obey it again (an upload, a clear's confirmation at every reconnect)."""
    cfg = parse({"CAR_IDENTIFIER": "late-car", **mqtt_keys(broker, MQTT_ALLOW_COMMANDS="yes")})
    w = Watcher(broker, "eccm/late-car/#")
    publisher = MqttPublisher.from_config(cfg, running.service)
    try:
        w.publish("eccm/late-car/cmd", "dtc_read", retain=True)  # waiting on the broker
        publisher.start()
        w.wait_for("eccm/late-car/availability", lambda m: m.payload == b"online")
        w.publish("eccm/late-car/cmd", "upload")  # after the retained one, on its heels
        answer = w.wait_for("eccm/late-car/cmd/result").json()
        assert answer["class"] == "ERROR" and answer["code"] == "forbidden"  # S3 is off
        assert len(w.on("eccm/late-car/cmd/result")) == 1  # the retained dtc_read: no answer
    finally:
        w.publish("eccm/late-car/cmd", "", retain=True)  # the broker forgets it
        w.close()
        publisher.stop()


def test_wrong_password_one_clear_line_and_last_error(
    running: Running, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eccm.mqtt")
    cfg = parse(
        {"CAR_IDENTIFIER": "locked-car", **mqtt_keys(broker, MQTT_PASSWORD="not-the-password")}
    )
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    try:
        wait_until(lambda: publisher.attempts >= 3, timeout=WAIT, what="three attempts")
    finally:
        publisher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # one line, not one per attempt
    assert "MQTT_USERNAME" in errors[0] and "MQTT_PASSWORD" in errors[0]
    assert "not-the-password" not in caplog.text
    assert publisher.last_error == errors[0]


def test_tls_with_a_self_made_ca(
    running: Running,
    broker: Broker,
    certs: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, _key, other = certs
    w = Watcher(broker, "eccm/tls-car/#")
    cfg = parse(
        {
            "CAR_IDENTIFIER": "tls-car",
            **mqtt_keys(broker, MQTT_BROKER=broker.tls_url, MQTT_CA_FILE=str(cert)),
        }
    )
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    try:
        w.wait_for("eccm/tls-car/availability", lambda m: m.payload == b"online")
        state = w.wait_for("eccm/tls-car/state").json()
        assert "RPM" in state and publisher.last_error is None
    finally:
        publisher.stop()
        w.close()
    caplog.set_level(logging.INFO, logger="eccm.mqtt")
    cfg = parse(
        {
            "CAR_IDENTIFIER": "tls-car",
            **mqtt_keys(broker, MQTT_BROKER=broker.tls_url, MQTT_CA_FILE=str(other)),
        }
    )
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    try:
        wait_until(lambda: publisher.attempts >= 2, timeout=WAIT, what="two attempts")
    finally:
        publisher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "MQTT_CA_FILE" in errors[0] and str(other) in errors[0], errors
    assert "not trusted" in errors[0]


def test_mqtts_on_the_plain_port_says_tls_not_unreachable(
    running: Running, broker: Broker, certs: tuple[Path, Path, Path]
) -> None:
    """mqtts:// with the broker's plain port (1883 for 8883): mosquitto takes the TCP
    connection and resets it at the ClientHello. It was "not reachable: Connection reset
    by peer", which sends the user to the network, not to the port or scheme."""
    url = f"mqtts://localhost:{broker.port}"
    keys = mqtt_keys(broker, MQTT_BROKER=url, MQTT_CA_FILE=str(certs[0]))
    publisher = MqttPublisher.from_config(
        parse({"CAR_IDENTIFIER": "port-car", **keys}), running.service
    )
    publisher.start()
    try:
        error = wait_until(lambda: publisher.last_error, timeout=WAIT, what="the problem")
    finally:
        publisher.stop()
    assert "TLS" in error and "MQTT_BROKER" in error and "not reachable" not in error, error


def test_broker_restart_is_survived_and_logging_goes_on(
    running: Running, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The module's broker goes down and comes back on the same port (the tests above use
    the fixture's watcher, which this one closes)."""
    daemon = running.daemon
    publisher = daemon.mqtt
    assert publisher is not None
    wait_until(lambda: publisher.connected, timeout=WAIT, what="the publisher to connect")
    running.watcher.close()
    broker.stop()
    rows = daemon.hub.rows
    wait_until(lambda: not publisher.connected, timeout=WAIT, what="the publisher to notice")
    # Logging goes on while the broker is away, and STATUS says why nothing is published.
    wait_until(lambda: daemon.hub.rows >= rows + 20, timeout=WAIT, what="rows while down")
    status = wait_until(
        lambda: (s := running.service.status(publisher.caller))["last_error"] and s,
        timeout=WAIT,
        what="last_error in STATUS",
    )
    assert "MQTT_BROKER" in str(status["last_error"])
    lost = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert lost and "closed the connection" in lost[0], lost  # not paho's "Unspecified error"
    broker.start()
    w = Watcher(broker, f"{P}/#")
    try:
        wait_until(lambda: publisher.connected, timeout=WAIT, what="the publisher to reconnect")
        assert w.wait_for(f"{P}/availability").payload == b"online"
        fresh = w.wait_for(f"{P}/state", lambda m: not m.retain)
        assert fresh.json()["RPM"] is not None
        assert running.service.status(publisher.caller)["last_error"] is None
    finally:
        w.close()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_daemon_gone_without_a_word_turns_availability_offline(
    broker: Broker, tmp_path: Path, how: str
) -> None:
    """The last will. SIGKILL: the kernel closes the socket, the broker sends the will at
    once. SIGSTOP: the socket stays open and silent, as in a power cut; the broker sends
    the will after 1.5 keep-alives (5 s at MQTT_INTERVAL=1)."""
    car = f"gone-{how.lower()}"
    config = tmp_path / "config.ini"
    values = {
        "CAR_IDENTIFIER": car,
        "OBD_INTERFACE": str(tmp_path / "no-adapter"),  # no car needed: MQTT runs anyway
        "FILE_RECORDING": "no",
        **mqtt_keys(broker),
    }
    config.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    topic = f"eccm/{car}/availability"
    w = Watcher(broker, topic)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w.wait_for(topic, lambda m: m.payload == b"online")
        seen = len(w.on(topic))
        proc.send_signal(getattr(signal, how))
        assert w.wait_for(topic, after=seen).payload == b"offline"
    finally:
        proc.kill()
        proc.wait(WAIT)
        w.close()
    # Retained: a client that comes later learns it too.
    late = Watcher(broker, topic)
    try:
        assert late.wait_for(topic).payload == b"offline"
    finally:
        late.close()


def test_demo_publishes_to_the_broker_on_its_command_line(broker: Broker, tmp_path: Path) -> None:
    """`eccm demo --mqtt mqtt://user:password@host:port`: the simulated car on the broker."""
    w = Watcher(broker, "eccm/demo-car/#")
    url = f"mqtt://{CAR_USER}:{CAR_PASSWORD}@127.0.0.1:{broker.port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eccm.cli",
            "demo",
            "--duration",
            "300",
            "--dir",
            str(tmp_path / "demo"),
            "--mqtt",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        state = w.wait_for("eccm/demo-car/state", lambda m: m.json()["RPM"] is not None).json()
        assert isinstance(state["SPEED"], float)
        gnss = w.wait_for("eccm/demo-car/gnss", lambda m: "latitude" in m.json()).json()
        assert isinstance(gnss["latitude"], float) and gnss["gps_accuracy"] is not None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=WAIT)
        w.close()
    assert proc.returncode == 0
    assert b"mosquitto_sub" in out and CAR_PASSWORD.encode() not in out
    # The broker asks for a login: the printed command says so (not "not authorised").
    assert f"-u {CAR_USER} -P 'PASSWORD'".encode() in out


def test_the_demos_mosquitto_sub_line_works_on_a_tls_broker(
    broker: Broker, certs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`eccm demo --mqtt mqtts://...` prints a mosquitto_sub command: run as printed (the
    password put in), it shows the car's messages. Without a CA it waited in silence."""
    url = f"mqtts://{CAR_USER}:{CAR_PASSWORD}@localhost:{broker.tls_port}"
    demo = ["demo", "--duration", "300", "--dir", str(tmp_path / "demo"), "--mqtt", url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "eccm.cli", *demo],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ECCM_MQTT_CA_FILE": str(certs[0])},
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        for line in proc.stdout:  # the banner comes at once; the demo runs on after it
            if line.strip().startswith("mosquitto_sub"):
                printed = line.strip().rstrip(")")
                break
        assert printed.startswith("mosquitto_sub"), printed
        command = shlex.split(printed.replace("'PASSWORD'", shlex.quote(CAR_PASSWORD)))
        sub = subprocess.run(
            [*command, "-C", "1", "-W", str(int(WAIT))], capture_output=True, timeout=WAIT + 10
        )
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(b"eccm/demo-car/")
    finally:
        proc.terminate()
        proc.communicate(timeout=WAIT)


def test_a_value_that_left_mqtt_values_is_removed_from_home_assistant(
    running: Running, broker: Broker
) -> None:
    """A config of the car left retained by an earlier run with more values goes away."""
    old = "homeassistant/sensor/eccm_trim-car/fuel_level/config"
    w = Watcher(broker, "homeassistant/+/eccm_trim-car/#")
    w.publish(old, '{"unique_id": "eccm_trim-car_fuel_level"}', retain=True)
    w.wait_for(old)
    cfg = parse({"CAR_IDENTIFIER": "trim-car", **mqtt_keys(broker, MQTT_VALUES="SPEED")})
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    try:
        assert w.wait_for(old, lambda m: m.payload == b"").retain is False  # deleted
        w.wait_for("homeassistant/sensor/eccm_trim-car/speed/config")
    finally:
        publisher.stop()
        w.close()
    late = Watcher(broker, "homeassistant/+/eccm_trim-car/#")
    try:
        late.wait_for("homeassistant/sensor/eccm_trim-car/speed/config")
        assert not late.on(old)  # no retained config left for it
    finally:
        late.close()


def test_the_position_entity_only_with_a_gnss_receiver(running: Running, broker: Broker) -> None:
    """GPS_POSITION_MONITORING=no: P/gnss is {"fix":false} for ever, so a device_tracker
    would stay 'unknown' for ever; one left by a run with the receiver on is removed."""
    tracker = "homeassistant/device_tracker/eccm_{}/position/config"
    w = Watcher(broker, "homeassistant/+/+/#")
    try:
        for car, gnss in (("gnss-car", "yes"), ("gnss-car", "no")):
            keys = {"CAR_IDENTIFIER": car, "GPS_POSITION_MONITORING": gnss, **mqtt_keys(broker)}
            publisher = MqttPublisher.from_config(parse(keys), running.service)
            seen = len(w.on(tracker.format(car)))
            publisher.start()
            try:
                found = w.wait_for(tracker.format(car), after=seen)
                if gnss == "yes":
                    assert found.json()["json_attributes_topic"] == "eccm/gnss-car/gnss"
                else:
                    assert found.payload == b""  # removed from Home Assistant
            finally:
                publisher.stop()
    finally:
        w.close()
    late = Watcher(broker, "homeassistant/+/eccm_gnss-car/#")
    try:
        late.wait_for("homeassistant/sensor/eccm_gnss-car/speed/config")
        assert not late.on(tracker.format("gnss-car"))  # no retained config left for it
    finally:
        late.close()


def test_a_peer_that_never_answers_connect_is_named(running: Running) -> None:
    """A port that takes the TCP connection and stays silent (not a broker, or a hung one):
    one line, STATUS-ready, and the publisher keeps trying without blocking anything."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads
        port = silent.getsockname()[1]
        cfg = parse(
            {
                "CAR_IDENTIFIER": "mute-car",
                "MQTT_BROKER": f"mqtt://127.0.0.1:{port}",
                "MQTT_INTERVAL": "1",
            }
        )
        publisher = MqttPublisher.from_config(cfg, running.service)
        publisher.start()
        try:
            error = wait_until(lambda: publisher.last_error, timeout=WAIT, what="the problem")
            assert "did not answer MQTT's CONNECT" in error and "MQTT_BROKER" in error
            wait_until(lambda: publisher.attempts >= 2, timeout=WAIT, what="another attempt")
        finally:
            publisher.stop()


def test_the_trip_a_stop_ends_is_published(broker: Broker, tmp_path: Path) -> None:
    """systemctl stop (or the demo's Ctrl-C) ends the running trip: P/trip must carry it
    like a trip ended by the car (the stop used to close MQTT before the trip ended)."""
    from eccm.app import Daemon
    from eccm.sim.car import emulated_car

    with emulated_car("car") as emu:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "stop-car",
                "OBD_INTERFACE": emu.get_pty(),
                "OBD_FAST_COMMANDS": "RPM,SPEED",
                "OBD_SLOW_COMMANDS": "COOLANT_TEMP",
                "SAMPLE_INTERVAL": "0.2",
                "RECORD_DIRECTORY_LOCATION": str(tmp_path / "records"),
                **mqtt_keys(broker),
            }
        )
        w = Watcher(broker, f"{cfg.mqtt_prefix}/#")
        daemon = Daemon(cfg)
        daemon.start()
        try:
            trip = wait_until(lambda: daemon.hub.engine_trip_id, timeout=WAIT, what="a trip")
            w.wait_for(f"{cfg.mqtt_prefix}/availability", lambda m: m.payload == b"online")
            # Publishing settled (a state with the car's values): MQTT stops at once.
            w.wait_for(f"{cfg.mqtt_prefix}/state", lambda m: m.json().get("RPM") is not None)
        finally:
            daemon.stop()
        try:
            got = w.wait_for(f"{cfg.mqtt_prefix}/trip", lambda m: m.json().get("trip") == trip)
            offline = w.wait_for(
                f"{cfg.mqtt_prefix}/availability", lambda m: m.payload == b"offline"
            )
            assert w.messages.index(got) < w.messages.index(offline)
        finally:
            w.close()


def test_a_twin_with_the_same_client_id_is_said_once_and_backed_off(
    running: Running, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Another client with our MQTT_CLIENT_ID (a second Pi cloned with the same
    CAR_IDENTIFIER) takes the connection over each time it reconnects, so the broker drops
    ours a moment after accepting it. Found: the backoff started over at every CONNACK, so
    the publisher reconnected every ~2 s for good, logging a WARNING and an INFO each time
    (57 lines a minute)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from eccm.mqtt.plan import FLAPPING

    caplog.set_level(logging.INFO, logger="eccm.mqtt")
    cfg = parse({"CAR_IDENTIFIER": "twin-car", **mqtt_keys(broker)})
    twin = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client)
    twin.username_pw_set(CAR_USER, CAR_PASSWORD)
    twin.reconnect_delay_set(1, 1)  # a twin that comes back at once, every time
    publisher = MqttPublisher.from_config(cfg, running.service)
    publisher.start()
    try:
        wait_until(lambda: publisher.connected, timeout=WAIT, what="the first connection")
        twin.connect("127.0.0.1", broker.port, keepalive=30)
        twin.loop_start()
        try:
            wait_until(lambda: publisher.attempts >= 5, timeout=WAIT, what="four takeovers")
            # The backoff grew (1, 2, 4, 8 s and on) instead of starting over.
            assert publisher.reconnect_delay >= 8.0 * 0.99
        finally:
            twin.loop_stop()
            twin.disconnect()
        error = publisher.last_error
        assert error is not None and "MQTT_CLIENT_ID='eccm-twin-car'" in error
    finally:
        publisher.stop()
    # A drop or two look like a broker's restart; then it is the twin, said once.
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) <= FLAPPING + 1 and "MQTT_CLIENT_ID" in loud[-1], loud
    connected = [r.getMessage() for r in caplog.records if "connected to" in r.getMessage()]
    assert len(connected) <= FLAPPING + 1, connected
