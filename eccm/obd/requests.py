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
from eccm.obd.values import is_readable, known_command

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


def read_dtcs(conn: Any, supported: Mapping[str, Any]) -> dict[str, Any]:
    """{"mil": bool | None, "stored": [{code, description}], "pending": [...]}.

    ``mil`` comes from 01 01 (None when the car does not give it); stored codes from
    mode 03, pending ones from mode 07.
    """
    mil: bool | None = None
    if "STATUS" in supported:
        status = conn.query(obd.commands.STATUS).value
        if status is not None:
            mil = bool(status.MIL)
    stored = _dtcs(conn, obd.commands.GET_DTC, "stored trouble codes (mode 03)")
    pending = _dtcs(conn, obd.commands.GET_CURRENT_DTC, "pending trouble codes (mode 07)")
    return {"mil": mil, "stored": stored, "pending": pending}


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
    log.warning("diagnostic trouble codes cleared on request; the car answered %s", text)
    return text


def _dtcs(conn: Any, cmd: Any, what: str) -> list[dict[str, str]]:
    response = conn.query(cmd, force=True)
    if response.value is None:
        raise DeviceError(f"obd_timeout: the car did not answer the request for {what}")
    codes: dict[str, str] = {}
    for code, description in response.value:
        codes.setdefault(str(code), str(description or ""))
    return [{"code": c, "description": d} for c, d in codes.items()]
