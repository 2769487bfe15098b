"""Bodies of the messages (SPEC §8) and the commands read from ``P/cmd``.

State, position and trip are built here from the service's typed answers; status, DTC and
command results are the control socket's replies (:mod:`eccm.replies`), unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eccm.replies import plain_tree
from eccm.sample import iso_utc
from eccm.service import Position, Values

ONLINE = b"online"
OFFLINE = b"offline"


def encode(body: Mapping[str, object]) -> bytes:
    """Compact JSON (every byte counts on a mobile plan), valid even for NaN."""
    return json.dumps(plain_tree(body), separators=(",", ":"), allow_nan=False).encode()


DIGITS = 2  # decimals of a value in a state message (the files keep every digit)


def rounded(value: object) -> object:
    """A float cut to DIGITS decimals: 66.66666666666667 costs 15 bytes, 66.67 five."""
    if isinstance(value, float):
        return round(value, DIGITS)
    return value


def state(answer: Values, names: Sequence[str]) -> dict[str, object]:
    """``{"time": ..., NAME: value, ...}``: the MQTT_VALUES in their order, null when unknown."""
    body: dict[str, object] = {"time": iso_utc(answer.time)}
    for name in names:
        entry = answer.values.get(name)
        body[name] = None if entry is None else rounded(entry.value)
    return body


def gnss(pos: Position | None) -> dict[str, object]:
    """Home Assistant's device_tracker attributes (gps_accuracy in metres, from HDOP with
    a receiver's usual 5 m user range error: the receiver gives no accuracy of its own)."""
    if pos is None or pos.lat is None or pos.lon is None:
        return {"fix": False}
    body: dict[str, object] = {"latitude": pos.lat, "longitude": pos.lon}
    if pos.hdop is not None:
        # Left out when unknown: Home Assistant logs a warning for every message whose
        # gps_accuracy is not a number (null included), and takes 0 without it anyway.
        body["gps_accuracy"] = round(pos.hdop * 5.0, 1)
    body["altitude"] = pos.alt
    body["speed"] = pos.speed
    body["time"] = None if pos.time is None else iso_utc(pos.time)
    return body


def trip_end(previous: Mapping[str, object]) -> dict[str, object]:
    """The finished trip of the trip computer's ``previous``: id, start, end and totals."""
    return {
        "trip": previous.get("trip"),
        "start": previous.get("start"),
        "end": previous.get("end"),
        "totals": previous.get("totals"),
    }


def without_time(body: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "time"}


# -- commands ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    name: str  # upload, dtc_read, dtc_clear
    token: str | None = None  # dtc_clear confirm <token>


class BadCommand(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


COMMANDS = ("upload", "dtc_read", "dtc_clear")
MAX_COMMAND = 256


def parse_command(payload: bytes) -> Command:
    """``upload``, ``dtc_read``, ``dtc_clear``, ``dtc_clear confirm <token>`` (words in any
    case, as the socket's), or the same as JSON ``{"command": ..., "token": ...}``."""
    if len(payload) > MAX_COMMAND:
        raise BadCommand("line_too_long", f"a command is at most {MAX_COMMAND} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadCommand("bad_request", "a command is UTF-8 text") from None
    token: str | None = None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            raise BadCommand("bad_request", "not a JSON object") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("command"), str):
            raise BadCommand("bad_request", 'JSON commands are {"command": "...", "token": ...}')
        words = [str(obj["command"])]
        if obj.get("token") is not None:
            token = str(obj["token"])
    else:
        words = text.split()
        if len(words) == 3 and words[1].lower() == "confirm":
            token = words[2]
            words = words[:1]
        elif len(words) >= 2 and words[0].lower() in COMMANDS:
            # A known command with the wrong arguments is bad syntax, as on the socket
            # ("DTC CLEAR CONFIRM" without its token), not an unknown command.
            name = words[0].lower()
            raise BadCommand(
                "bad_request",
                "dtc_clear takes nothing, or confirm <token>"
                if name == "dtc_clear"
                else f"{name} takes no argument",
            )
    if len(words) != 1 or words[0].lower() not in COMMANDS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise BadCommand(
            "unknown_command",
            f"unknown command {shown!r}: upload, dtc_read, dtc_clear, dtc_clear confirm <token>",
        )
    name = words[0].lower()
    if token is not None and name != "dtc_clear":
        raise BadCommand("bad_request", f"{name} takes no token")
    return Command(name, token)
