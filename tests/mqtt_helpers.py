"""A real MQTT broker for the tests (Debian's mosquitto, installed by ./test.sh) and a
subscriber that records what arrives (not a test module).

:class:`Broker` runs mosquitto on free ports of 127.0.0.1 with a password file and an ACL:
``eccm`` (the car) may write ``eccm/#`` and ``homeassistant/#`` and read its commands;
``watcher`` (the test) reads everything and may send commands. With a certificate it also
listens with TLS. It can be stopped and started again on the same ports (a broker restart).
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work
CAR_USER, CAR_PASSWORD = "eccm", "car-password"
WATCHER, WATCHER_PASSWORD = "watcher", "watcher-password"

_ACL = """\
user eccm
topic readwrite eccm/#
topic readwrite homeassistant/#

user watcher
topic read #
topic write eccm/+/cmd
topic write homeassistant/#
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        pytest.skip(
            "mosquitto is not installed (./test.sh installs it as root: apt-get install mosquitto)"
        )
    return found


class Broker:
    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.binary = mosquitto()
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        passwd = folder / "passwd"
        passwd.write_text("")
        for user, password in ((CAR_USER, CAR_PASSWORD), (WATCHER, WATCHER_PASSWORD)):
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        (folder / "acl").write_text(_ACL)
        lines = [
            # As root mosquitto would drop to the "mosquitto" user, who cannot read our files.
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {folder / 'acl'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if tls is not None:
            cert, key = tls
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {cert}",
                f"certfile {cert}",
                f"keyfile {key}",
            ]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def start(self) -> Broker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(self._listening, timeout=WAIT, what="mosquitto to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Watcher:
    """A client that subscribes to ``topic`` and keeps every message, in order."""

    def __init__(self, broker: Broker, topic: str = "#") -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{free_port()}")
        self.client.username_pw_set(WATCHER, WATCHER_PASSWORD)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, topic: str, predicate: Callable[[Received], Any] = bool, after: int = 0
    ) -> Received:
        """The first message on ``topic`` (past the first ``after`` of them) that satisfies
        ``predicate``."""

        def found() -> Received | None:
            for m in self.on(topic)[after:]:
                if predicate(m):
                    return m
            return None

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, WAIT)
        result = found()
        assert result is not None, f"no matching message on {topic}: {self.on(topic)[-3:]}"
        return result

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
