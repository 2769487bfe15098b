"""The README's `nc` transcript against a real session: every reply it shows has the keys,
in the same order, and the JSON types of the reply `eccm run` gives to the same command.

The transcript is read from README.md (section "A session in `nc`"), not copied here, so a
README edit that no longer matches the daemon fails this test. Values differ (time, nonce,
readings); only the shape is compared.
"""

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
from elm.obd_message import DT, ECU_R_ADDR_E, HD, SZ

from eccm.control.client import hmac_proof
from tests.control_fakes import SECRET, Client
from tests.emulator import emulated_car
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### A session in `nc`"
WAIT = 60.0  # generous: the suite shares two cores with other work
MOVING_KMH = 68  # DTC CLEAR is refused while the car moves, as in the transcript


@dataclass
class Step:
    command: str | None  # None: what the server says on connecting (HELLO)
    replies: list[dict[str, Any]]


def transcript() -> list[Step]:
    """The README session as (command, the JSON lines that follow it) steps."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    block = re.search(r"^```\n(.*?)^```", text[start:], re.S | re.M)
    assert block, f"no code block after {SECTION!r} in README.md"
    steps = [Step(None, [])]
    for line in block.group(1).splitlines():
        if line.startswith("$ ") or not line.strip():
            continue  # the shell prompt that starts nc
        if line.startswith("{"):
            reply = json.loads(line)
            assert isinstance(reply, dict), line
            steps[-1].replies.append(reply)
        else:
            steps.append(Step(line, []))
    return steps


def shape(value: Any) -> Any:
    """What is compared of a JSON value: keys in order (recursively) and the JSON type.

    JSON has one number type (5.0 and 5 are the same to a client); null is left out as it
    stands for "not yet" (no upload, no error) where the other session may have a value.
    """
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", sorted({repr(shape(v)) for v in value})]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def same_shape(readme: Any, real: Any, where: str) -> None:
    if readme is None or real is None:
        return  # see shape(): null matches any value
    if isinstance(readme, dict) and isinstance(real, dict):
        assert set(readme) == set(real), f"{where}: README keys {list(readme)}, real {list(real)}"
        for key in readme:
            same_shape(readme[key], real[key], f"{where}.{key}")
        # Order last, so that a known order mistake (README_WRONG) hides no other one.
        assert list(readme) == list(real), (
            f"{where}: README order {list(readme)}, real {list(real)}"
        )
        return
    if isinstance(readme, list) and isinstance(real, list):
        for a in readme:
            for b in real:
                same_shape(a, b, f"{where}[]")
        return
    assert shape(readme) == shape(real), f"{where}: README {readme!r}, real {real!r}"


def test_the_transcript_is_a_whole_session() -> None:
    steps = transcript()
    classes = [r["class"] for s in steps for r in s.replies]
    # What issue 11 item 9 says the transcript shows; a shorter one would check less.
    for cls in ("HELLO", "ERROR", "AUTH", "VALUES", "STATUS", "WATCH", "LIVE"):
        assert cls in classes, f"the README transcript has no {cls} reply"
    assert steps[0].command is None and [r["class"] for r in steps[0].replies] == ["HELLO"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`eccm run` on the emulator with the socket on, GNSS off (as in the transcript), the
    car moving."""
    tmp = tmp_path_factory.mktemp("readme")
    port = free_port()
    with emulated_car("car") as emu:
        emu.answer["SPEED"] = HD(ECU_R_ADDR_E) + SZ("03") + DT(f"41 0D {MOVING_KMH:02X}")
        config = tmp / "config.ini"
        config.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=my-car\n"
            f"OBD_INTERFACE={emu.get_pty()}\n"
            "OBD_FAST_COMMANDS=RPM,SPEED\n"
            "SAMPLE_INTERVAL=0.2\n"
            f"RECORD_DIRECTORY_LOCATION={tmp / 'records'}\n"
            "ENABLE_SOCKET_SERVER=yes\n"
            f"SOCKET_SERVER_PORT={port}\n"
            f"SOCKET_SERVER_SECRET={SECRET}\n",
            encoding="utf-8",
        )
        log = tmp / "daemon.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        where = ("127.0.0.1", port)
        try:

            def ready() -> bool:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                try:
                    c = Client(where, timeout=WAIT).auth()
                except OSError:
                    return False
                try:
                    speed = c.ask("GET SPEED").get("values", {}).get("SPEED", {})
                    status = c.ask("STATUS")
                finally:
                    c.close()
                # The transcript's STATUS names a recording file: wait for the first row.
                return bool(
                    speed.get("value") == MOVING_KMH
                    and status["obd"] == "connected"
                    and status["recording"]
                )

            wait_until(ready, timeout=WAIT, what="the daemon: OBD connected, moving, recording")
            yield where
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def replies() -> list[tuple[str, dict[str, Any]]]:
    """Every reply of the transcript, with the command it answers."""
    return [(step.command or "(connect)", r) for step in transcript() for r in step.replies]


# README lines known not to match the daemon, to be fixed in README.md (strict: this test
# fails once they match, so the entry goes).
README_WRONG: dict[str, str] = {}


@pytest.fixture(scope="module")
def session(address: tuple[str, int]) -> list[dict[str, Any]]:
    """The README's commands on one real connection, and the real replies, in order."""
    out: list[dict[str, Any]] = []
    client = Client(address, timeout=WAIT)
    try:
        nonce = ""
        for step in transcript():
            if step.command is not None:
                command = step.command
                if command.startswith("AUTH HMAC "):
                    # The README's proof is for its own nonce and secret.
                    command = f"AUTH HMAC {hmac_proof(SECRET, nonce)}"
                client.send(command)
            for expected in step.replies:
                real = client.reply()
                # While a WATCH runs, LIVE lines come between the replies to commands.
                while real["class"] == "LIVE" and expected["class"] != "LIVE":
                    real = client.reply()
                if real["class"] == "HELLO":
                    nonce = real["nonce"]
                out.append(real)
    finally:
        client.close()
    return out


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(
            i,
            id=f"{i:02d}-{command}-{reply['class']}",
            marks=[pytest.mark.xfail(strict=True, reason=README_WRONG[reply["class"]])]
            if reply["class"] in README_WRONG
            else [],
        )
        for i, (command, reply) in enumerate(replies())
    ],
)
def test_each_readme_reply_has_the_keys_of_the_real_reply(
    session: list[dict[str, Any]], index: int
) -> None:
    command, expected = replies()[index]
    real = session[index]
    where = f"reply to {command}"
    assert real["class"] == expected["class"], f"{where}: {real}"
    if expected["class"] == "ERROR":
        assert real["code"] == expected["code"], f"{where}: {real}"
    same_shape(expected, real, where)
