"""The publisher's pure parts (eccm/mqtt: topics, payloads, discovery, plan): what is sent
when, with times given, no broker and no thread."""

from __future__ import annotations

import json
import ssl

import pytest

from eccm.mqtt import discovery, payloads
from eccm.mqtt.payloads import BadCommand, Command, parse_command
from eccm.mqtt.plan import (
    STABLE,
    Discovery,
    Message,
    Plan,
    Problems,
    Reconnect,
    failure_text,
    refusal_text,
)
from eccm.mqtt.topics import Topics, node_id
from eccm.service import Position, ValueEntry, Values

T = Topics("eccm/car.1", "homeassistant", "car.1")


def _body(message: Message) -> object:
    return json.loads(message.payload)


def test_topics_of_spec_8() -> None:
    assert T.state == "eccm/car.1/state" and T.cmd_result == "eccm/car.1/cmd/result"
    assert node_id("car.1") == "eccm_car_1"
    topic = T.discovery("sensor", "rpm")
    assert topic == "homeassistant/sensor/eccm_car_1/rpm/config"
    assert T.is_discovery(topic) and not T.is_discovery("homeassistant/sensor/eccm_x/rpm/config")
    assert T.discovery_filter == "homeassistant/+/eccm_car_1/+/config"


def test_state_has_every_value_in_order_null_when_unknown_and_rounded() -> None:
    answer = Values(
        1_700_000_000.0,
        {"RPM": ValueEntry(850.123456, "rpm", 10), "FUEL_STATUS": ValueEntry("CL", None, 5)},
    )
    body = payloads.state(answer, ("SPEED", "RPM", "FUEL_STATUS"))
    assert list(body) == ["time", "SPEED", "RPM", "FUEL_STATUS"]
    assert body == {
        "time": "2023-11-14T22:13:20.000Z",
        "SPEED": None,
        "RPM": 850.12,
        "FUEL_STATUS": "CL",
    }
    assert payloads.encode({"x": float("nan")}) == b'{"x":null}'


def test_gnss_is_home_assistants_tracker_attributes() -> None:
    pos = Position(1.7e9, 48.1, 11.5, 520.0, 3.0, 90.0, 9, 1.2, 1, 100)
    assert payloads.gnss(pos) == {
        "latitude": 48.1,
        "longitude": 11.5,
        "gps_accuracy": 6.0,
        "altitude": 520.0,
        "speed": 3.0,
        "time": "2023-11-14T22:13:20.000Z",
    }
    assert payloads.gnss(None) == {"fix": False}
    # A receiver that gives no HDOP: no gps_accuracy at all (Home Assistant warns at a
    # null one in every message).
    no_hdop = Position(1.7e9, 48.1, 11.5, 520.0, 3.0, 90.0, 9, None, 1, 100)
    assert "gps_accuracy" not in payloads.gnss(no_hdop)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        (b"upload", Command("upload")),
        (b" DTC_READ\n", Command("dtc_read")),
        (b"dtc_clear", Command("dtc_clear")),
        (b"dtc_clear CONFIRM 1a2b3c4d", Command("dtc_clear", "1a2b3c4d")),
        (b'{"command": "dtc_clear", "token": "1a2b3c4d"}', Command("dtc_clear", "1a2b3c4d")),
        (b'{"command": "upload"}', Command("upload")),
    ],
)
def test_commands(text: bytes, command: Command) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"reboot", "unknown_command"),
        # A known command with wrong arguments is bad syntax, as on the socket.
        (b"upload now please", "bad_request"),
        (b"dtc_clear confirm", "bad_request"),
        (b"DTC_READ all", "bad_request"),
        (b"upload confirm x", "bad_request"),
        (b"{not json", "bad_request"),
        (b'{"cmd": 1}', "bad_request"),
        (b"\xff\xfe", "bad_request"),
        (b"x" * 300, "line_too_long"),
    ],
)
def test_bad_commands(text: bytes, code: str) -> None:
    with pytest.raises(BadCommand) as err:
        parse_command(text)
    assert err.value.code == code


def test_interval_keeps_its_cadence_without_bursts() -> None:
    plan = Plan(5.0)
    assert plan.due(100.0) and not plan.due(104.9) and plan.due(105.0)
    assert plan.wait(106.0) == pytest.approx(4.0)
    assert plan.due(130.0)  # a stall: one message, not five to catch up
    assert not plan.due(132.4) and plan.due(132.5)  # then at least half an interval apart
    assert not plan.due(137.4) and plan.due(137.5)  # and the cadence again


def test_state_sent_when_changed_else_once_per_heartbeat() -> None:
    plan = Plan(1.0, heartbeat=60.0)
    plan.on_connect(T.availability)
    parked = {"time": "a", "RPM": None}
    assert len(plan.offer_periodic(T.state, parked, 0.0)) == 1
    assert plan.offer_periodic(T.state, {**parked, "time": "b"}, 1.0) == []  # only the time moved
    assert len(plan.offer_periodic(T.state, {**parked, "time": "c"}, 60.0)) == 1  # heartbeat
    sent = plan.offer_periodic(T.state, {"time": "d", "RPM": 900.0}, 61.0)
    assert [(m.topic, m.retain, _body(m)) for m in sent] == [
        (T.state, True, {"time": "d", "RPM": 900.0})
    ]


def test_offline_keeps_the_latest_per_topic_and_connect_sends_online_first() -> None:
    plan = Plan(1.0)
    for i in range(100):  # a long tunnel
        assert plan.offer_periodic(T.state, {"time": str(i), "RPM": float(i)}, float(i)) == []
    assert plan.offer_dtc(T.dtc, {"class": "DTC", "mil": True}, 100.0) == []
    assert plan.offer_trip(T.trip, {"trip": "t1"}, 100.0) == []
    assert plan.result(T.cmd_result, {"class": "UPLOAD"}) == []  # its asker is gone
    assert len(plan.outbox) == 3
    sent = plan.on_connect(T.availability)
    assert [m.topic for m in sent] == [T.availability, T.state, T.dtc, T.trip]
    assert sent[0] == Message(T.availability, b"online", True, 1)
    assert _body(sent[1]) == {"time": "99", "RPM": 99.0}
    assert sent[3].retain is False and len(plan.outbox) == 0
    # Connected: retained topics are sent again at their next turn, the trip is not.
    assert len(plan.offer_dtc(T.dtc, {"class": "DTC", "mil": True}, 101.0)) == 1
    assert plan.offer_trip(T.trip, {"trip": "t1"}, 101.0) == []
    assert len(plan.offer_trip(T.trip, {"trip": "t2"}, 102.0)) == 1
    plan.on_disconnect()
    plan.on_connect(T.availability)
    assert plan.offer_trip(T.trip, {"trip": "t2"}, 103.0) == []


def test_status_on_a_change_that_matters_only() -> None:
    plan = Plan(1.0)
    plan.on_connect(T.availability)
    status = {"class": "STATUS", "obd": "connected", "rows": 1, "uptime_s": 1.0, "last_error": None}
    assert len(plan.offer_status(T.status, status, 0.0)) == 1
    assert plan.offer_status(T.status, {**status, "rows": 500, "uptime_s": 99.0}, 99.0) == []
    changed = plan.offer_status(T.status, {**status, "last_error": "disk full"}, 100.0)
    assert len(changed) == 1 and changed[0].retain and changed[0].qos == 1


def test_discovery_sent_once_changed_again_and_removed_when_dropped() -> None:
    d = Discovery()
    first = d.update({"a/config": {"x": 1}, "b/config": {"x": 2}})
    assert [m.topic for m in first] == ["a/config", "b/config"]
    assert all(m.retain and m.payload for m in first)
    assert d.update({"a/config": {"x": 1}, "b/config": {"x": 2}}) == []
    again = d.update({"a/config": {"x": 1}, "b/config": {"x": 3}})
    assert [m.topic for m in again] == ["b/config"]
    dropped = d.update({"a/config": {"x": 1}})
    assert dropped == [Message("b/config", b"", True, 1)]
    # A config of this car left on the broker by an earlier run with other values:
    assert d.seen("old/config", b'{"x": 0}') == Message("old/config", b"", True, 1)
    assert d.seen("a/config", b'{"x": 1}') is None and d.seen("old/config", b"") is None
    d.reset()  # a new connection: everything once more
    assert [m.topic for m in d.update({"a/config": {"x": 1}})] == ["a/config"]


def test_home_assistant_entities_carry_what_discovery_requires() -> None:
    values = [
        ("SPEED", "kilometer_per_hour", "Vehicle Speed"),
        ("RPM", "revolutions_per_minute", "Engine RPM"),
        ("FUEL_STATUS", None, "Fuel System Status"),
    ]
    found = {e.object_id: e for e in discovery.entities(T, values, "VIN123")}
    assert set(found) == {
        "speed",
        "rpm",
        "fuel_status",
        "mil",
        "position",
        "trip_end",
        "upload_queue",
        "last_error",
    }
    for e in found.values():
        c = e.config
        assert c["unique_id"] == f"eccm_car_1_{e.object_id}"
        assert c["availability_topic"] == T.availability
        device = c["device"]
        assert isinstance(device, dict) and device["identifiers"] == ["eccm_car_1"]
        assert device["serial_number"] == "VIN123" and device["sw_version"]
    speed = found["speed"].config
    assert speed["state_topic"] == T.state and speed["value_template"] == "{{ value_json.SPEED }}"
    assert (speed["unit_of_measurement"], speed["device_class"], speed["state_class"]) == (
        "km/h",
        "speed",
        "measurement",
    )
    assert (
        "device_class" not in found["rpm"].config
        and found["rpm"].config["unit_of_measurement"] == "rpm"
    )
    assert "state_class" not in found["fuel_status"].config  # text: no statistics
    assert found["mil"].component == "binary_sensor" and found["mil"].config["state_topic"] == T.dtc
    tracker = found["position"]
    assert (
        tracker.component == "device_tracker" and tracker.config["json_attributes_topic"] == T.gnss
    )


def test_every_discovery_template_renders_eccms_own_messages() -> None:
    """Each template of the discovery configs, rendered by Jinja (Home Assistant's template
    engine) against a message ECCM publishes on that entity's topic, gives what Home
    Assistant takes: a sensor's value, the MIL's ON/OFF and its attributes, and a trip
    end as an event of a declared type with the trip's totals."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    values = [("SPEED", "kilometer_per_hour", "Vehicle Speed")]
    found = {e.object_id: e.config for e in discovery.entities(T, values, None)}
    answer = Values(1.7e9, {"SPEED": ValueEntry(42.0, "kilometer_per_hour", 1.7e9)})
    previous = {
        "trip": "20261204T101010Z",
        "start": "2026-12-04T10:10:10.000Z",
        "end": "2026-12-04T10:40:10.000Z",
        "totals": {"distance_km": 12.3, "duration_s": 1800.0, "fuel_l": None},
        "now": {"SPEED": 0},  # more than the event carries
    }
    messages = {
        T.state: payloads.state(answer, ["SPEED"]),
        T.dtc: {
            "class": "DTC",
            "mil": True,
            "stored": [{"code": "P0301", "description": "Cylinder 1 Misfire Detected"}],
            "pending": [],
        },
        T.status: {"class": "STATUS", "upload_queue": 3, "last_error": None},
        T.trip: payloads.trip_end(previous),
    }

    def render(config: dict[str, object], key: str) -> str:
        topic = config.get("state_topic") or config["json_attributes_topic"]
        assert isinstance(topic, str) and topic in messages, topic
        value_json = json.loads(payloads.encode(messages[topic]))
        template = config[key]
        assert isinstance(template, str)
        return env.from_string(template).render(value_json=value_json)

    assert render(found["speed"], "value_template") == "42.0"
    assert render(found["mil"], "value_template") == "ON"
    assert json.loads(render(found["mil"], "json_attributes_template")) == {
        "stored": ["P0301"],
        "pending": [],
    }
    assert render(found["upload_queue"], "value_template") == "3"
    assert render(found["last_error"], "value_template") == "none"
    event = found["trip_end"]
    fired = json.loads(render(event, "value_template"))
    assert isinstance(event["event_types"], list) and fired["event_type"] in event["event_types"]
    assert fired["trip"] == "20261204T101010Z" and fired["totals"]["distance_km"] == 12.3
    assert fired["end"] == "2026-12-04T10:40:10.000Z" and "now" not in fired
    assert "json_attributes_topic" not in event  # an event's attributes come with it


def test_every_python_obd_unit_reaches_home_assistant_as_a_unit_people_read() -> None:
    """Each mode 01 value's unit as python-OBD names it becomes Home Assistant's symbol:
    MAF's was sent as "gps" (python-OBD's name of grams per second), read as GNSS."""
    import obd

    from eccm.obd.values import describe

    readable = {"%", "°C", "kPa", "Pa", "rpm", "km/h", "°", "g/s", "V", "mA", "s", "min"}
    readable |= {"km", "L/h", None}
    for command in obd.commands[1]:
        if command is None:
            continue
        unit, _ = describe(command)
        shown, _cls = discovery.ha_unit(unit)
        assert shown in readable, f"{command.name}: {unit!r} shown as {shown!r}"


def test_reconnect_backs_off_to_a_cap_and_starts_over() -> None:
    r = Reconnect(cap=60.0, draw=lambda: 0.0)
    assert r.due(0.0)
    delays = [r.failed(0.0) for _ in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and max(delays) == 60.0
    assert not r.due(59.0) and r.due(60.0)
    # Connected, then dropped at once (another client took the client id over): the
    # backoff goes on growing; only a connection that held STABLE s starts it over.
    r.succeeded(100.0)
    assert r.failed(101.0) == 60.0
    r.succeeded(200.0)
    assert not r.held(200.0 + STABLE - 1) and r.held(200.0 + STABLE)
    assert r.failed(200.0 + STABLE) == 1.0
    jittered = Reconnect(cap=60.0, draw=lambda: 0.99)
    assert 1.0 < jittered.failed(0.0) <= 1.25


def test_a_problem_is_logged_once_per_reason() -> None:
    p = Problems()
    assert p.report("refused") and not p.report("refused") and p.last_error == "refused"
    assert p.report("unreachable")
    assert p.clear() and p.last_error is None and not p.clear()


def test_failure_texts_name_the_key_to_check() -> None:
    text = refusal_text("Not authorized", "mqtt://b", "car")
    assert "MQTT_USERNAME" in text and "MQTT_PASSWORD" in text and "'car'" in text
    assert "MQTT_CLIENT_ID" in refusal_text("Client identifier not valid", "mqtt://b", "")
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    text = failure_text(cert, "mqtts://b", "/etc/ca.pem")
    assert "MQTT_CA_FILE='/etc/ca.pem'" in text and "self-signed certificate" in text
    assert "MQTT_BROKER" in failure_text(ConnectionRefusedError(), "mqtt://b", "")
