"""The web page's keys (SPEC §7): defaults, validation, and the socket's bind rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from eccm.config import Config, parse
from eccm.errors import ConfigError

BASE = {"CAR_IDENTIFIER": "car-1"}
LONG = "x" * 32
SHORT = "x" * 31


def cfg_of(**values: str) -> Config:
    return parse({**BASE, **values})


def test_defaults_are_the_spec_defaults() -> None:
    c = cfg_of()
    assert c.enable_web_server is False
    assert c.web_server_bind == "127.0.0.1"
    assert c.web_server_port == 8080
    assert c.web_server_tls_cert == "" and c.web_server_tls_key == ""
    assert c.web_map_tiles == ""
    assert c.web_tls is False


def test_the_page_needs_the_socket_secret() -> None:
    with pytest.raises(ConfigError, match=r"SOCKET_SERVER_SECRET is required when ENABLE_WEB"):
        cfg_of(ENABLE_WEB_SERVER="yes")
    c = cfg_of(ENABLE_WEB_SERVER="yes", SOCKET_SERVER_SECRET="short is fine on loopback")
    assert c.enable_web_server and not c.enable_socket_server


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.4.1", "::"])
def test_a_network_bind_needs_32_characters(bind: str) -> None:
    with pytest.raises(ConfigError, match=r"SOCKET_SERVER_SECRET is too short \(31 .*WEB_SERVER"):
        cfg_of(ENABLE_WEB_SERVER="yes", WEB_SERVER_BIND=bind, SOCKET_SERVER_SECRET=SHORT)
    with pytest.raises(ConfigError, match=r"SOCKET_SERVER_READ_SECRET is too short"):
        cfg_of(
            ENABLE_WEB_SERVER="yes",
            WEB_SERVER_BIND=bind,
            SOCKET_SERVER_SECRET=LONG,
            SOCKET_SERVER_READ_SECRET=SHORT,
        )
    c = cfg_of(ENABLE_WEB_SERVER="yes", WEB_SERVER_BIND=bind, SOCKET_SERVER_SECRET=LONG)
    assert c.web_server_bind == bind


def test_a_network_bind_of_a_page_that_is_off_needs_nothing() -> None:
    assert cfg_of(WEB_SERVER_BIND="0.0.0.0").enable_web_server is False


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ENABLE_WEB_SERVER", "maybe", "yes/no"),
        ("WEB_SERVER_BIND", "pi.local", "an IP address"),
        ("WEB_SERVER_PORT", "0", "whole number at least 1"),
        ("WEB_SERVER_PORT", "80800", "at most 65535"),
        ("WEB_SERVER_TLS_CERT", "/no/such/cert.pem", "existing PEM file"),
        ("WEB_MAP_TILES", "tile.openstreetmap.org/{z}/{x}/{y}.png", "http"),
        ("WEB_MAP_TILES", "https://tile.openstreetmap.org/{z}/{x}.png", "{y}"),
        ("WEB_MAP_TILES", "javascript:alert(1)//{z}{x}{y}", "http"),
        ("WEB_MAP_TILES", 'https://t.example/{z}/{x}/{y}.png"onload=', "http"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_expected(
    key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    message = str(err.value)
    assert message.startswith(f"{key}=") and expected in message


def test_tls_needs_both_files(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not checked here", encoding="ascii")
    with pytest.raises(ConfigError, match="WEB_SERVER_TLS_KEY is empty"):
        cfg_of(WEB_SERVER_TLS_CERT=str(pem))
    with pytest.raises(ConfigError, match="WEB_SERVER_TLS_CERT is empty"):
        cfg_of(WEB_SERVER_TLS_KEY=str(pem))
    c = cfg_of(WEB_SERVER_TLS_CERT=str(pem), WEB_SERVER_TLS_KEY=str(pem))
    assert c.web_tls


def test_tiles_and_localhost_are_taken() -> None:
    url = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    c = cfg_of(WEB_MAP_TILES=f"  {url} ", WEB_SERVER_BIND="localhost")
    assert c.web_map_tiles == url and c.web_server_bind == "127.0.0.1"


def test_the_page_and_the_socket_need_a_port_each() -> None:
    both = {"ENABLE_WEB_SERVER": "yes", "ENABLE_SOCKET_SERVER": "yes", "SOCKET_SERVER_SECRET": LONG}
    with pytest.raises(ConfigError, match="WEB_SERVER_PORT=8765 is also SOCKET_SERVER_PORT"):
        cfg_of(**both, WEB_SERVER_PORT="8765")
    assert cfg_of(**both).web_server_port == 8080


def test_environment_and_effective_configuration() -> None:
    from eccm.config import read_raw

    raw = read_raw(None, {"ECCM_CAR_IDENTIFIER": "c", "ECCM_WEB_SERVER_PORT": "9090"})
    c = parse(raw)
    assert c.web_server_port == 9090
    shown = c.effective()
    assert shown["ENABLE_WEB_SERVER"] == "no" and shown["WEB_SERVER_PORT"] == "9090"
    assert list(shown).index("WEB_SERVER_BIND") == list(shown).index("ENABLE_WEB_SERVER") + 1
