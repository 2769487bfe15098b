"""Reply bodies of the service's answers: the JSON objects every front end sends.

The control socket sends them as lines (SPEC §5), the web page's API as HTTP bodies and
WebSocket messages (SPEC §7): one builder per reply, so that the two cannot drift apart.
Every body is JSON-safe (NaN and odd objects made plain) and carries its ``class``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eccm.sample import iso_utc
from eccm.service import (
    ClearConfirm,
    ClearResult,
    Dtc,
    DtcReport,
    Position,
    ValueInfo,
    Values,
    plain,
)


def values(cls: str, answer: Values) -> dict[str, object]:
    """A VALUES (GET) or LIVE (WATCH) reply."""
    return {
        "class": cls,
        "time": iso_utc(answer.time),
        "values": {
            name: {"value": e.value, "unit": e.unit, "age_ms": e.age_ms}
            for name, e in answer.values.items()
        },
    }


def supported(infos: Sequence[ValueInfo]) -> dict[str, object]:
    return {
        "class": "SUPPORTED",
        "values": [
            {"name": v.name, "unit": v.unit, "description": v.description, "logged": v.logged}
            for v in infos
        ],
    }


def gnss(pos: Position | None) -> dict[str, object]:
    if pos is None:
        return {"class": "GNSS", "fix": False}
    return {
        "class": "GNSS",
        "fix": True,
        "time": None if pos.time is None else iso_utc(pos.time),
        "lat": pos.lat,
        "lon": pos.lon,
        "alt": pos.alt,
        "speed": pos.speed,
        "track": pos.track,
        "satellites": pos.satellites,
        "hdop": pos.hdop,
        "quality": pos.quality,
        "age_ms": pos.age_ms,
    }


def status(report: Mapping[str, object]) -> dict[str, object]:
    return {"class": "STATUS", **{k: plain_tree(v) for k, v in report.items()}}


def trip(report: Mapping[str, object]) -> dict[str, object]:
    return {"class": "TRIP", **{k: plain_tree(v) for k, v in report.items()}}


def track(trip: str | None, points: Sequence[tuple[float, float]]) -> dict[str, object]:
    """The running trip's positions as [latitude, longitude] pairs, oldest first."""
    return {"class": "TRACK", "trip": trip, "points": [[lat, lon] for lat, lon in points]}


def dtc(report: DtcReport) -> dict[str, object]:
    def codes(entries: Sequence[Dtc]) -> list[dict[str, str]]:
        return [{"code": d.code, "description": d.description} for d in entries]

    out: dict[str, object] = {
        "class": "DTC",
        "mil": report.mil,
        "stored": codes(report.stored),
        "pending": codes(report.pending),
    }
    if report.freeze_frame is not None:  # only when the car keeps one (SPEC §5)
        out["freeze_frame"] = dict(report.freeze_frame)
    return out


def confirm(answer: ClearConfirm) -> dict[str, object]:
    return {
        "class": "CONFIRM",
        "token": answer.token,
        "expires_in": answer.expires_in,
        "warning": answer.warning,
    }


def cleared(result: ClearResult) -> dict[str, object]:
    return {"class": "DTC_CLEARED", "ok": result.ok, "ecu": result.answer}


def upload(queued: int) -> dict[str, object]:
    return {"class": "UPLOAD", "queued": queued}


def error(code: str, message: str, retry_after: float | None = None) -> dict[str, object]:
    reply: dict[str, object] = {"class": "ERROR", "code": code, "message": message}
    if retry_after is not None:
        reply["retry_after"] = retry_after  # busy: seconds before asking again
    return reply


def plain_tree(value: object) -> Any:
    """Backend data made JSON-safe all the way down (NaN → null, odd objects → text)."""
    if isinstance(value, Mapping):
        return {str(k): plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_tree(v) for v in value]
    return plain(value)
