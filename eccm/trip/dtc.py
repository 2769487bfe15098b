"""The diagnostics timeline of a trip: stored and pending trouble codes and the MIL, each
change an event with its time. Pure: :class:`DtcTimeline` takes reports in and gives events
out; the poller that reads them from the car is ``eccm.obd.dtc_poller``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eccm.sample import iso_utc

log = logging.getLogger(__name__)

KINDS = ("stored", "pending")


@dataclass(frozen=True)
class DtcState:
    """What one read found: the MIL (None when the car does not say) and code → description."""

    mil: bool | None
    stored: Mapping[str, str] = field(default_factory=dict)
    pending: Mapping[str, str] = field(default_factory=dict)

    def codes(self, kind: str) -> Mapping[str, str]:
        return self.stored if kind == "stored" else self.pending

    def to_json(self) -> dict[str, object]:
        return {
            "mil": self.mil,
            "stored": _listing(self.stored),
            "pending": _listing(self.pending),
        }


def _listing(codes: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"code": c, "description": d} for c, d in sorted(codes.items())]


def _codes(raw: object) -> dict[str, str]:
    """{code: description} of the link's list of {"code", "description"} (or pairs)."""
    out: dict[str, str] = {}
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return out
    for item in raw:
        if isinstance(item, Mapping):
            code, desc = item.get("code"), item.get("description")
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            code, desc = item[0], item[1]
        else:
            continue
        if code:
            out.setdefault(str(code), "" if desc is None else str(desc))
    return out


def state_of(report: Mapping[str, object]) -> DtcState:
    """A report of ``ObdLink.read_dtcs`` as a DtcState."""
    mil = report.get("mil")
    return DtcState(
        mil=mil if isinstance(mil, bool) else None,
        stored=_codes(report.get("stored")),
        pending=_codes(report.get("pending")),
    )


def changes(before: DtcState, after: DtcState, time: float) -> list[dict[str, object]]:
    """Events that lead from ``before`` to ``after``, stamped ``time`` (epoch seconds).

    A MIL that was or became unknown is no change: the car only stopped saying.
    """
    at = iso_utc(time)
    events: list[dict[str, object]] = []
    if before.mil is not None and after.mil is not None and before.mil != after.mil:
        events.append({"time": at, "event": "mil_on" if after.mil else "mil_off"})
    for kind in KINDS:
        old, new = before.codes(kind), after.codes(kind)
        for code in sorted(new.keys() - old.keys()):
            events.append(
                {"time": at, "event": "dtc_added", "kind": kind, "code": code,
                 "description": new[code]}
            )  # fmt: skip
        for code in sorted(old.keys() - new.keys()):
            events.append(
                {"time": at, "event": "dtc_removed", "kind": kind, "code": code,
                 "description": old[code]}
            )  # fmt: skip
    return events


class DtcTimeline:
    """The events of one trip: its first read in full ("initial"), then every change."""

    def __init__(self) -> None:
        self.state: DtcState | None = None
        self.events: list[dict[str, object]] = []
        self.reads = 0
        self.failed_reads = 0
        self.last_error: str | None = None

    def observe(self, time: float, report: Mapping[str, object]) -> list[dict[str, object]]:
        """A successful read at ``time``; returns the events it adds."""
        new = state_of(report)
        self.reads += 1
        self.last_error = None
        if self.state is None:
            added: list[dict[str, object]] = [
                {"time": iso_utc(time), "event": "initial", **new.to_json()}
            ]
        else:
            added = changes(self.state, new, time)
        self.state = new
        self.events.extend(added)
        return added

    def failed(self, reason: str) -> None:
        self.failed_reads += 1
        self.last_error = reason

    def to_json(self) -> dict[str, object]:
        state = self.state.to_json() if self.state is not None else None
        return {
            "reads": self.reads,
            "failed_reads": self.failed_reads,
            "last_error": self.last_error,
            "state": state,
            "events": list(self.events),
        }


# -- the thread --------------------------------------------------------------------------
