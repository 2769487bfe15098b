"""The MQTT keys (SPEC §8): defaults, validation with a message naming the key, and the
values the publisher reads from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from eccm.config import Config, parse
from eccm.errors import ConfigError

BASE = {"CAR_IDENTIFIER": "car-1"}


def cfg_of(**values: str) -> Config:
    return parse({**BASE, **values})


def test_defaults_are_the_spec_defaults() -> None:
    c = cfg_of()
    assert c.mqtt_enabled is False and c.mqtt_broker == ""
    assert c.mqtt_client == "eccm-car-1"
    assert c.mqtt_prefix == "eccm/car-1"
    assert c.mqtt_values == ("SPEED", "RPM", "COOLANT_TEMP", "FUEL_LEVEL", "ENGINE_LOAD")
    assert c.mqtt_interval == 5
    assert c.mqtt_homeassistant is True and c.mqtt_discovery_prefix == "homeassistant"
    assert c.mqtt_allow_commands is False


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("mqtt://broker.lan", ("broker.lan", 1883, False)),
        ("broker.lan", ("broker.lan", 1883, False)),
        ("mqtts://broker.lan", ("broker.lan", 8883, True)),
        ("mqtts://10.0.0.2:18883/", ("10.0.0.2", 18883, True)),
        ("mqtt://[::1]:1884", ("::1", 1884, False)),
    ],
)
def test_broker_urls(given: str, address: tuple[str, int, bool]) -> None:
    c = cfg_of(MQTT_BROKER=given)
    assert c.mqtt_enabled and c.mqtt_address == address


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MQTT_BROKER", "http://broker", "mqtt://host[:port] or mqtts://host[:port]"),
        ("MQTT_BROKER", "mqtt://broker:99999", "a port from 1 to 65535"),
        ("MQTT_BROKER", "mqtt://u@broker", "MQTT_USERNAME/MQTT_PASSWORD"),
        ("MQTT_BROKER", "mqtt://broker/topic", "mqtt://host[:port]"),
        ("MQTT_TOPIC_PREFIX", "cars/#", "no + #"),
        ("MQTT_TOPIC_PREFIX", "/eccm", "none empty"),
        ("MQTT_TOPIC_PREFIX", "eccm//x", "none empty"),
        ("MQTT_TOPIC_PREFIX", "my car", "blanks"),
        ("MQTT_DISCOVERY_PREFIX", "home+assistant", "no + #"),
        ("MQTT_CLIENT_ID", "", "1 to 128 characters"),
        ("MQTT_CLIENT_ID", "a b", "1 to 128 characters"),
        ("MQTT_VALUES", "RPM,NOT_A_VALUE", "unknown: NOT_A_VALUE"),
        ("MQTT_INTERVAL", "0.1", "at least 0.5"),
        ("MQTT_INTERVAL", "often", "a number"),
        ("MQTT_HOMEASSISTANT", "maybe", "yes/no"),
        ("MQTT_ALLOW_COMMANDS", "sure", "yes/no"),
        ("MQTT_CA_FILE", "/no/such/ca.pem", "existing PEM file"),
    ],
)
def test_bad_values_name_key_value_and_expectation(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(**{"MQTT_BROKER": "mqtts://broker", key: value})
    text = str(err.value)
    assert text.startswith(f"{key}=") and repr(value) in text and expected in text


@pytest.mark.parametrize("url", ["mqtt://car:s3cret@broker", "http://car:s3cret@broker:99999"])
def test_a_password_in_the_broker_url_is_not_repeated_in_the_error(url: str) -> None:
    # The error goes to the journal (eccm run) and the terminal: the URL, password masked.
    with pytest.raises(ConfigError) as err:
        cfg_of(MQTT_BROKER=url)
    text = str(err.value)
    assert "s3cret" not in text and url.replace("s3cret", "***") in text, text


def test_placeholders_and_lists() -> None:
    c = cfg_of(
        MQTT_BROKER="mqtt://b",
        MQTT_TOPIC_PREFIX="fleet/{CAR_IDENTIFIER}/obd",
        MQTT_CLIENT_ID="logger-{CAR_IDENTIFIER}",
        MQTT_VALUES="rpm, speed,RPM",
    )
    assert c.mqtt_prefix == "fleet/car-1/obd" and c.mqtt_client == "logger-car-1"
    assert c.mqtt_values == ("RPM", "SPEED")  # upper case, once each, in the given order


def test_keys_that_go_together(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"MQTT_CA_FILE=.* is set but MQTT_BROKER=.*mqtts://"):
        cfg_of(MQTT_BROKER="mqtt://b", MQTT_CA_FILE=str(ca))
    assert cfg_of(MQTT_BROKER="mqtts://b", MQTT_CA_FILE=str(ca)).mqtt_ca_file == str(ca)
    with pytest.raises(ConfigError, match="MQTT_PASSWORD is set but MQTT_USERNAME is empty"):
        cfg_of(MQTT_BROKER="mqtt://b", MQTT_PASSWORD="pw")
    with pytest.raises(ConfigError, match="MQTT_DISCOVERY_PREFIX="):
        cfg_of(MQTT_BROKER="mqtt://b", MQTT_DISCOVERY_PREFIX="ha/{CAR_IDENTIFIER}")
    # MQTT off: the other keys are still checked, but none is required.
    assert cfg_of(MQTT_PASSWORD="pw").mqtt_enabled is False


def test_password_is_masked_and_read_from_the_environment(tmp_path: Path) -> None:
    from eccm.config import load

    ini = tmp_path / "config.ini"
    ini.write_text("[DEFAULT]\nCAR_IDENTIFIER=car-1\nMQTT_BROKER=mqtt://b\nMQTT_USERNAME=car\n")
    c = load(ini, {"ECCM_MQTT_PASSWORD": "s3cret"})
    assert c.mqtt_password == "s3cret"
    shown = c.effective()
    assert shown["MQTT_PASSWORD"] == "********" and "s3cret" not in str(shown)
    assert shown["MQTT_TOPIC_PREFIX"] == "eccm/{CAR_IDENTIFIER}"


def test_template_lists_every_mqtt_key_with_its_default() -> None:
    template = (Path(__file__).parent.parent / "config.ini.template").read_text()
    defaults = cfg_of().effective()
    for key, value in defaults.items():
        if key.startswith("MQTT_"):
            assert f"\n{key}={value}\n" in template, key
