"""What the on-demand requests ask the car: a value, the trouble codes, clearing them.

Each function takes the python-OBD connection and runs in the link thread (queued through
:class:`eccm.obd.ondemand.RequestQueue`). Errors start with the control socket's code
(``unknown_value: ...``, ``obd_timeout: ...``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import obd

from eccm.errors import DeviceError
from eccm.obd.values import is_readable, known_command, to_reading

log = logging.getLogger("eccm.obd.link")  # the link's own lines, as before the split


def readable_command(supported: Mapping[str, Any], key: str) -> Any:
    """The python-OBD command ``key`` names, if the car supports it and it is a value;
    else DeviceError("unknown_value: ...")."""
    cmd = supported.get(key)
    if cmd is None:
        if known_command(key):
            raise DeviceError(f"unknown_value: the car does not support {key}")
        raise DeviceError(f"unknown_value: {key} is not a python-OBD command name")
    if not is_readable(cmd):
        raise DeviceError(f"unknown_value: {key} is not a value that can be read")
    return cmd


def read_dtcs(conn: Any, supported: Mapping[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """{"mil": bool | None, "stored": [{code, description}], "pending": [...]}.

    ``mil`` comes from 01 01 (None when the car does not give it); stored codes from
    mode 03, pending ones from mode 07. ``detail`` (a DTC reply, the evidence kept before
    a clear) adds ``readiness`` (the monitors of 01 01, None when the car does not give
    them) and, when a code is there, ``freeze_frame`` (mode 02, frame 0); the periodic
    DTC poll leaves them out: they cost dozens of requests.
    """
    mil: bool | None = None
    status: Any = None
    if "STATUS" in supported:
        status = conn.query(obd.commands.STATUS).value
        if status is not None:
            mil = bool(status.MIL)
    stored = _dtcs(conn, obd.commands.GET_DTC, "stored trouble codes (mode 03)")
    pending = _dtcs(conn, obd.commands.GET_CURRENT_DTC, "pending trouble codes (mode 07)")
    out: dict[str, Any] = {"mil": mil, "stored": stored, "pending": pending}
    if detail:
        out["readiness"] = None if status is None else readiness(status)
        if stored or pending or mil:
            frame = freeze_frame(conn, supported)
            if frame:
                out["freeze_frame"] = frame
    return out


def readiness(status: Any) -> dict[str, dict[str, bool]]:
    """The readiness monitors of a decoded 01 01 answer: {name: {available, complete}},
    only those the car has (a clear resets them; an inspection station reads them)."""
    names = [*obd.codes.BASE_TESTS, *obd.codes.SPARK_TESTS, *obd.codes.COMPRESSION_TESTS]
    out: dict[str, dict[str, bool]] = {}
    for name in names:
        test = getattr(status, name, None) if name else None
        if test is not None and test.available:
            out[name] = {"available": True, "complete": bool(test.complete)}
    return out


def freeze_frame(conn: Any, supported: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The freeze frame (mode 02, frame 0) as python-OBD decodes it: {command name: {value,
    unit}} for each mode 02 value the car supports and answers; {} when it has none."""
    out: dict[str, dict[str, Any]] = {}
    for cmd in obd.commands[2]:
        if cmd is None or cmd.name not in supported or cmd.name.startswith("DTC_PIDS_"):
            continue
        response = conn.query(cmd, force=True)
        if response.is_null():
            continue
        if cmd.name == "FREEZE_DTC":
            code = response.value
            if code is None or not isinstance(code, tuple):
                continue
            out[cmd.name] = {"value": str(code[0]), "unit": None}
            continue
        reading = to_reading(response.value, 0.0)
        if reading.value is not None:
            out[cmd.name] = {"value": reading.value, "unit": reading.unit}
    return out


def clear_dtcs(conn: Any) -> str:
    """Clear the trouble codes (mode 04): resets readiness monitors too.

    The result is what the ECU answered, as hex bytes, one message per ECU joined by
    "; ": "44" is a positive answer, "7F 04 xx" a refusal (xx: the reason).
    """
    response = conn.query(obd.commands.CLEAR_DTC, force=True)
    answers = [bytes(m.data).hex(" ").upper() for m in response.messages if m.data]
    if not answers:
        raise DeviceError("obd_timeout: the car did not answer the request to clear")
    text = "; ".join(answers)
    if all(a.replace(" ", "").startswith("44") for a in answers):
        log.warning("diagnostic trouble codes cleared on request; the car answered %s", text)
    else:
        # A refusal ("7F 04 22") or a partial clear (one ECU of two): the line must not
        # say the codes are gone while the car kept them.
        log.warning(
            "request to clear the diagnostic trouble codes: the car answered %s, codes not "
            "cleared%s",
            text,
            _CONDITIONS_HINT if "7F 04 22" in text else "",
        )
    return text


# Negative answer 0x22 (conditionsNotCorrect) to mode 04: most ECUs clear only with the
# ignition on and the engine stopped.
_CONDITIONS_HINT = " (conditions not correct: switch the engine off, ignition on, and try again)"


def _dtcs(conn: Any, cmd: Any, what: str) -> list[dict[str, str]]:
    response = conn.query(cmd, force=True)
    if response.value is None:
        raise DeviceError(f"obd_timeout: the car did not answer the request for {what}")
    codes: dict[str, str] = {}
    for code, description in response.value:
        codes.setdefault(str(code), str(description or ""))
    return [{"code": c, "description": d} for c, d in codes.items()]
