"""How the OBD link's requests reach the car, through python-OBD's own connection.

python-OBD sends one command per request. ``PidReader`` sends a group of mode 01 PIDs
(up to six on CAN) as one request on python-OBD's open port (``wire``: the same
exchange as python-OBD's ``query``, with its header logic left in charge, and the
frames parsed into messages as python-OBD's protocol objects parse them), cuts the
answer per PID (``multipid``) and decodes each value with python-OBD's own decoder, once
per distinct answer (``values.ReadingCache``). When the wire cannot be used (not a local
serial port, another header set) the request goes through python-OBD's ``query``. It
appends the ELM327 response-count digit once an answer showed how many lines come back,
and falls back to one PID per request for a group the ECU will not answer as a whole.

Only the link thread uses these objects (it owns the connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import serial
from obd import OBDCommand, decoders
from obd.protocols import ECU
from obd.utils import OBDStatus

from eccm.clock import Clock
from eccm.obd.multipid import (
    Answer,
    Cut,
    ResponseCounts,
    cut_for,
    is_pid_value,
    pid_request,
    split_answer,
)
from eccm.obd.plan import Group
from eccm.obd.values import ReadingCache, reading_of
from eccm.obd.wire import Wire
from eccm.sample import Reading

log = logging.getLogger(__name__)

# Confirmations needed before a group is read one PID per request for good: one odd
# answer (an ECU busy for a moment) must not slow logging down for the rest of the run.
STRIKES_TO_SPLIT = 2
# Incomplete answers that single-PID requests could not complete either, after which a
# group's gap is accepted (a PID the car lists but never answers) and no longer checked.
CHECKS_TO_ACCEPT = 2
# A group that was answered whole before is looked into again only after this many
# incomplete answers in a row; a single one is a glitch, its missing values stay empty.
GLITCHES_TO_CHECK = 3
# A PID read alone (every PID on K-line and J1850, a lone or split group on CAN) that the
# car leaves unanswered this many times in a row while it answers other values is only
# asked again every SILENT_RETRY seconds: a PID listed in the 0100 bitmap but answered NO
# DATA would otherwise cost the adapter's timeout in every row for good. It may answer
# later (some only once the engine runs): then it is read in every row again.
SILENT_STRIKES = 3
SILENT_RETRY = 10.0
# Longest silence of the serial line while the adapter works on an answer. An ELM327 says
# NO DATA within its own timeout (at most about a second); python-OBD waits 10 s instead,
# and tries an empty read ten times more, so a hung adapter or one pulled out of the OBD
# socket (its USB side still plugged in) would freeze the link for almost two minutes per
# request.
READ_SILENCE = 3.0
# How long an adapter has to answer a stray character with its prompt before python-OBD
# is handed the port (python-OBD itself would wait minutes on a silent device).
PROMPT_TIMEOUT = 3.0


def query_reading(conn: Any, cmd: Any, clock: Clock, undecodable: set[str]) -> Reading:
    """One command through python-OBD's ``query``, as a Reading (None when unknown)."""
    try:
        response = conn.query(cmd)
        return reading_of(response, clock.monotonic())
    except Exception as exc:  # a decoder choking on an odd answer: this value is unknown
        if cmd.name not in undecodable:
            undecodable.add(cmd.name)
            log.warning("cannot decode %s (logged once): %s", cmd.name, exc)
        return Reading(None, None, clock.monotonic())


def save_time(conn: Any) -> list[str]:
    """Adapter settings that shorten every answer; returns those the adapter took.

    Spaces off (ATS0) cuts a third of the characters of each answer, which at the
    ELM327's usual 38400 baud is milliseconds per request. python-OBD's parser drops
    spaces anyway, so its own queries (discovery, DTCs) read the same. Headers stay on:
    python-OBD needs them to tell ECUs apart and to reassemble multi-frame answers.
    """
    taken = []
    for setting, what in ((b"ATS0", "spaces off"),):
        command = OBDCommand(what, what, setting, 0, decoders.raw_string, ECU.UNKNOWN, False)
        response = conn.query(command, force=True)
        if response.value == "OK":
            taken.append(what)
        else:
            log.debug("the adapter did not take %s: %r", setting.decode(), response.value)
    return taken


def bound_reads(conn: Any, seconds: float | None = None) -> bool:
    """Shorten python-OBD's fixed 10 s serial read timeout; False if it cannot be reached.

    python-OBD has no setting for it: the port is the ELM327 object's private attribute.
    """
    port = getattr(getattr(conn, "interface", None), "_ELM327__port", None)
    if port is None or not hasattr(port, "timeout"):
        return False
    port.timeout = READ_SILENCE if seconds is None else seconds
    return True


def probe_prompt(device: str, baudrate: int | None, timeout: float | None = None) -> str | None:
    """Ask ``device`` for an ELM327 prompt; None when it answered, else what went wrong.

    ATI (the adapter's name) changes nothing and every ELM327, clone or emulator answers
    it with its prompt ">"; a lone CR would repeat the adapter's last command instead.
    """
    try:
        port = serial.Serial(device, baudrate or 38400, timeout=0.1, write_timeout=5.0)
    except (serial.SerialException, OSError, ValueError) as exc:
        return f"cannot open it ({exc})"
    timeout = PROMPT_TIMEOUT if timeout is None else timeout
    received = bytearray()
    try:
        port.reset_input_buffer()
        port.write(b"ATI\r")
        deadline = time.monotonic() + timeout
        while b">" not in received and time.monotonic() < deadline:
            received += port.read(max(1, port.in_waiting))
    except (serial.SerialException, OSError) as exc:
        return f"it failed while asked for a prompt ({exc})"
    finally:
        port.close()
    if b">" in received:
        return None
    speed = f"OBD_BAUDRATE={baudrate}" if baudrate else "OBD_BAUDRATE"
    if not received:
        return (
            f"it sent nothing back within {timeout:g} s: an adapter that is not plugged into "
            "the car's OBD socket has no power, a hung one needs unplugging; "
            f"also check that it is the adapter and {speed}"
        )
    return (
        f"it answered without an ELM327 prompt ({bytes(received[:40])!r}): check that it is "
        f"the OBD adapter and {speed}"
    )


@dataclass(frozen=True)
class _Asked:
    """A group's commands and requests: ``plain`` (the request without a count digit) and
    ``cut`` are None for a command that is not a mode 01 PID (python-OBD's query)."""

    cmds: tuple[Any, ...]
    key: frozenset[str]
    plain: bytes | None
    cut: Cut | None


@dataclass
class GroupRead:
    """What reading one group gave."""

    readings: dict[str, Reading]
    requests: int = 0
    lost: str | None = None  # why the adapter is gone or lost the car (the link restarts)
    split: bool = False  # from now on the group is read one name per request


@dataclass
class Fallbacks:
    """What the link remembers about groups across reconnections (the same car)."""

    single: set[frozenset[str]] = field(default_factory=set)
    strikes: dict[frozenset[str], int] = field(default_factory=dict)
    checks: dict[frozenset[str], int] = field(default_factory=dict)
    whole: set[frozenset[str]] = field(default_factory=set)  # answered whole at least once
    # Names of a group the car does not answer, accepted after the checks: an answer
    # without only these is as whole as it gets (and teaches the response-count digit).
    gaps: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)
    glitches: dict[frozenset[str], int] = field(default_factory=dict)
    # PIDs read alone that the car leaves unanswered: misses in a row, when to ask again,
    # and the names already logged (once per run).
    misses: dict[str, int] = field(default_factory=dict)
    resting: dict[str, float] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)


class PidReader:
    """Reads groups of names from the car for the link (see the module docstring)."""

    def __init__(
        self,
        conn: Any,
        supported: Mapping[str, Any],
        clock: Clock,
        *,
        fallbacks: Fallbacks | None = None,
        counts: ResponseCounts | None = None,
        undecodable: set[str] | None = None,
    ) -> None:
        self._conn = conn
        self._supported = supported
        self._clock = clock
        self.fallbacks = fallbacks if fallbacks is not None else Fallbacks()
        self.counts = counts if counts is not None else ResponseCounts()
        self._undecodable = undecodable if undecodable is not None else set()
        self._cache = ReadingCache()
        self._raw: dict[bytes, Any] = {}
        self._plans: dict[Group, _Asked] = {}
        self._unresponsive: str | None = None
        self._gone: str | None = None  # the port failed under the wire
        self._wire = Wire.attach(conn)

    def shareable(self, name: str) -> bool:
        """May share a request with other names (a mode 01 PID)."""
        cmd = self._supported.get(name)
        return cmd is not None and is_pid_value(cmd)

    def is_single(self, group: Sequence[str]) -> bool:
        """The ECU refused this group as one request: read it one name at a time."""
        return frozenset(group) in self.fallbacks.single

    def read(self, group: Group, *, lately: bool = True, now: bool = False) -> GroupRead:
        """Read the names of ``group``: one request, more only to find out a refusal.

        ``lately``: the car answered the previous row; ``now``: it answered another
        group of this row. An incomplete answer to several PIDs is looked into (the
        missing names asked one by one) only when the car may be up: a car that went
        silent is not an ECU refusing several PIDs.
        """
        asked = self._asked(group)
        cmds = asked.cmds
        if asked.plain is None:
            started = self._clock.monotonic()
            reading = query_reading(self._conn, cmds[0], self._clock, self._undecodable)
            if reading.value is None:
                self._check_silence(started)
            return GroupRead({cmds[0].name: reading}, 1, self._lost(None))
        if len(cmds) == 1:
            name = cmds[0].name
            at = self._clock.monotonic()
            if at < self.fallbacks.resting.get(name, at):
                return GroupRead({name: Reading(None, None, at)})
        answer, requests = self._ask(asked)
        result = GroupRead(self._readings(answer, cmds), requests, self._lost(answer))
        if result.lost is not None:
            return result
        if len(cmds) == 1:
            self._note_alone(cmds[0].name, answer, car_up=lately or now)
            return result
        key = asked.key
        memory = self.fallbacks
        if answer.complete:
            memory.strikes.pop(key, None)
            memory.glitches.pop(key, None)
            memory.whole.add(key)
            return result
        if memory.checks.get(key, 0) >= CHECKS_TO_ACCEPT:
            return result
        if not (lately or now or answer.answered):
            return result
        if key in memory.whole:
            memory.glitches[key] = memory.glitches.get(key, 0) + 1
            if memory.glitches[key] < GLITCHES_TO_CHECK:
                return result
        self._check(group, cmds, answer, result, car_up=now or answer.answered)
        return result

    def _note_alone(self, name: str, answer: Answer, car_up: bool) -> None:
        """Count a PID read alone that the car leaves unanswered (see SILENT_STRIKES)."""
        memory = self.fallbacks
        if answer.answered:
            memory.misses.pop(name, None)
            memory.resting.pop(name, None)
            return
        if not car_up:
            return  # a silent car says nothing about this PID
        misses = memory.misses.get(name, 0) + 1
        memory.misses[name] = misses
        if misses < SILENT_STRIKES:
            return
        memory.resting[name] = self._clock.monotonic() + SILENT_RETRY
        if name not in memory.told:
            memory.told.add(name)
            log.warning(
                "the car lists %s as supported but does not answer it (%s) while it answers "
                "other values: asking it again every %g s only, not in every row (logged once)",
                name,
                answer.problem(),
                SILENT_RETRY,
            )

    def _asked(self, group: Group) -> _Asked:
        """What a request for ``group`` needs, made once per group and connection."""
        asked = self._plans.get(group)
        if asked is None:
            cmds = tuple(self._supported[name] for name in group)
            shared = len(cmds) > 1 or is_pid_value(cmds[0])
            plain = pid_request(cmds) if shared else None
            asked = _Asked(cmds, frozenset(group), plain, cut_for(cmds) if shared else None)
            self._plans[group] = asked
        return asked

    def _check(
        self,
        group: Group,
        cmds: Sequence[Any],
        answer: Answer,
        result: GroupRead,
        car_up: bool,
    ) -> None:
        """Ask the missing names one by one: does the ECU answer them alone?"""
        key = frozenset(group)
        recovered: list[str] = []
        for cmd in cmds:
            if cmd.name not in answer.missing:
                continue
            single, requests = self._ask(self._asked((cmd.name,)))
            result.requests += requests
            result.lost = self._lost(single)
            result.readings.update(self._readings(single, [cmd]))
            if single.answered:
                recovered.append(cmd.name)
            if result.lost is not None:
                return
        if recovered:
            strikes = self.fallbacks.strikes.get(key, 0) + 1
            self.fallbacks.strikes[key] = strikes
            if strikes >= STRIKES_TO_SPLIT:
                self.fallbacks.single.add(key)
                self.fallbacks.strikes.pop(key, None)
                result.split = True
                log.warning(
                    "the car does not answer %s in one request (%s) but answers %s alone: "
                    "reading these values one per request from now on (logged once)",
                    ", ".join(group),
                    answer.problem(),
                    ", ".join(recovered),
                )
        elif car_up:
            # The car is there but these PIDs do not answer alone either: the group is
            # as good as it gets. (With the car silent nothing is learnt.)
            checks = self.fallbacks.checks[key] = self.fallbacks.checks.get(key, 0) + 1
            if checks >= CHECKS_TO_ACCEPT and answer.answered:
                self.fallbacks.gaps[key] = frozenset(answer.missing)
            silent = [n for n in answer.missing if n not in self.fallbacks.told]
            if checks >= CHECKS_TO_ACCEPT and silent:
                self.fallbacks.told.update(silent)
                log.warning(
                    "the car lists %s as supported but does not answer %s, with other "
                    "values or alone (%s): their cells stay empty (logged once)",
                    ", ".join(silent),
                    "them" if len(silent) > 1 else "it",
                    answer.problem(),
                )

    def _ask(self, asked: _Asked) -> tuple[Answer, int]:
        """One request (two when the counted form fails where the plain one works)."""
        cmds, plain = asked.cmds, asked.plain
        assert plain is not None and asked.cut is not None  # mode 01 PIDs (see _asked)
        gap = self.fallbacks.gaps.get(asked.key)

        def whole(answer: Answer) -> bool:
            # Complete, or lacking only the names the car never answers in this group.
            return answer.complete or (
                gap is not None and answer.answered and gap.issuperset(answer.missing)
            )

        digit = self.counts.digit(plain)
        answer = self._send(asked.cut, plain if digit is None else pid_request(cmds, digit))
        if digit is None:
            if whole(answer):
                self.counts.learn(plain, answer.frames)
            return answer, 1
        if whole(answer) or self._lost(answer) is not None:
            return answer, 1
        retry = self._send(asked.cut, plain)
        if whole(retry):
            if answer.refused and len(cmds) > 1:
                if self.counts.several_pids:
                    self.counts.several_pids = False
                    log.info(
                        "the adapter does not take a response count after several PIDs "
                        "(it answered %s to %s%X): sending those requests without one",
                        answer.problem(),
                        plain.decode(),
                        digit,
                    )
            elif answer.refused:
                # "?" to one PID and its digit: the adapter (a clone, or one older than
                # v1.3) does not know the digit at all. Asking each request once more would
                # cost a request and a log line per PID (dozens on a one-PID-per-request car).
                if self.counts.enabled:
                    self.counts.enabled = False
                    log.info(
                        "the adapter does not take the ELM327 response-count digit (it "
                        "answered %s to %s%X): sending every request without one",
                        answer.problem(),
                        plain.decode(),
                        digit,
                    )
            elif self.counts.refuse(plain):
                log.info(
                    "the adapter answered %s with a response count as %s: sending it without",
                    plain.decode(),
                    answer.problem(),
                )
        return retry, 2

    def _send(self, cut: Cut, request: bytes) -> Answer:
        raw = self._raw.get(request)
        if raw is None:
            # decoders.drop: the answer is cut and decoded per PID, not as a whole.
            raw = OBDCommand(
                "MULTI_PID", "several mode 01 PIDs", request, 0, decoders.drop, ECU.ALL, False
            )
            self._raw[request] = raw
        started = self._clock.monotonic()
        wire = self._wire
        if wire is not None and wire.usable(raw.header):
            reply = wire.exchange(request, READ_SILENCE)
            if reply.gone is not None:
                self._gone = reply.gone
            messages = wire.parser()(reply.lines)
        else:
            # python-OBD sets the header first (and logs what it does).
            messages = self._conn.query(raw, force=True).messages
        if not messages:
            self._check_silence(started)
        return split_answer(messages or [], cut)

    def _check_silence(self, started: float) -> None:
        # Nothing at all after the line stayed silent for READ_SILENCE: an adapter that
        # works says NO DATA long before. The link then reconnects, and the prompt probe
        # tells the user why it cannot.
        waited = self._clock.monotonic() - started
        if waited >= READ_SILENCE:
            self._unresponsive = f"the adapter stopped answering (nothing for {waited:.0f} s)"

    def _readings(self, answer: Answer, cmds: Sequence[Any]) -> dict[str, Reading]:
        at = self._clock.monotonic()
        parts = answer.parts
        out: dict[str, Reading] = {}
        for cmd in cmds:
            name = cmd.name
            got = parts.get(name)
            if got is None:
                out[name] = Reading(None, None, at)
                continue
            try:
                out[name] = self._cache.reading_of_parts(cmd, got, at)
            except Exception as exc:  # an odd answer the decoder cannot take: unknown
                out[name] = Reading(None, None, at)
                if name not in self._undecodable:
                    self._undecodable.add(name)
                    log.warning("cannot decode %s (logged once): %s", name, exc)
        return out

    def _lost(self, answer: Answer | None) -> str | None:
        if self._conn.status() == OBDStatus.NOT_CONNECTED:
            return "disconnected"
        if self._gone is not None:
            return self._gone
        if self._unresponsive is not None:
            return self._unresponsive
        if answer is not None:
            line = answer.adapter_lost
            if line is not None:
                return f"the adapter answered {line!r}"
        return None


def answers_mode01(supported: Mapping[str, Any]) -> bool:
    """The car listed at least one mode 01 value (an ECU answered 0100)."""
    return any(c.mode == 1 and c.pid for c in supported.values())
