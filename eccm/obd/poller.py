"""One connection's polling, in the link thread: learn what the car supports, then read
rounds of values and publish them as rows until stopped or the adapter is lost.

Only I/O: which groups to read, when, what a silent car means and the rows' bounds are the
plan's and the policy's (:mod:`eccm.obd.plan`, :class:`eccm.obd.policy.LinkPolicy`);
on-demand requests run between rounds through :class:`eccm.obd.ondemand.RequestQueue`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import obd

from eccm.clock import Clock
from eccm.hub import Hub
from eccm.obd.adapter import Fallbacks, PidReader, bound_reads, query_reading, save_time
from eccm.obd.connection import is_lost, loss_reason
from eccm.obd.multipid import MAX_PIDS, ResponseCounts, allows_multi_pid
from eccm.obd.ondemand import RequestQueue
from eccm.obd.plan import Group, PollPlan, request_groups, resolve
from eccm.obd.policy import LinkPolicy
from eccm.obd.publisher import Publisher
from eccm.obd.settings import ObdSettings
from eccm.obd.values import describe, plain
from eccm.sample import Layout, Reading

# The link's lines, under the name they always had (the log format shows it).
log = logging.getLogger("eccm.obd.link")


class Poller:
    """Polls the car over one connection at a time (:meth:`run`); what it learnt about the
    car (refused groups, undecodable values, request times) is kept across connections."""

    def __init__(
        self,
        settings: ObdSettings,
        hub: Hub,
        clock: Clock,
        requests: RequestQueue,
        publisher: Publisher,
        wake: threading.Event,
        stopping: threading.Event,
        battery: Callable[[Any, bool], None] | None = None,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._clock = clock
        self._requests = requests
        self._out = publisher
        self._wake = wake
        self._stopping = stopping
        # ``battery(conn, engine_running)``: reads the adapter's voltage when it is due.
        self._battery = battery or (lambda _conn, _running: None)
        self.policy = LinkPolicy(
            settings.sample_interval,
            settings.trip_end_timeout,
            settings.reconnect_max_interval,
            settings.slow_interval,
            clock.monotonic(),
        )
        self._lock = threading.Lock()  # supported, protocol, single groups
        self._supported: dict[str, Any] = {}
        self._protocol: str | None = None
        self._single_groups: tuple[frozenset[str], ...] = ()
        self._warned: set[str] = set()
        self._undecodable: set[str] = set()
        # Groups the car would not answer as one request: kept across reconnections.
        self._fallbacks = Fallbacks()
        # What the adapter makes of the response-count digit, and the lines each request
        # brings: kept too (learnt anew at every reconnection, an adapter that refuses the
        # digit cost a refused request and an INFO line each time the car came back).
        self._counts = ResponseCounts()

    @property
    def supported(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._supported)

    @property
    def protocol(self) -> str | None:
        with self._lock:
            return self._protocol

    @property
    def single_pid_groups(self) -> list[frozenset[str]]:
        with self._lock:
            return list(self._single_groups)

    def query(self, conn: Any, cmd: Any) -> Reading:
        """One command through python-OBD (an on-demand read, in the link thread)."""
        return query_reading(conn, cmd, self._clock, self._undecodable)

    def forget(self) -> None:
        """The connection is gone: no protocol until the next one."""
        with self._lock:
            self._protocol = None

    def run(self, conn: Any, on_connected: Callable[[], None]) -> str | None:
        """Poll until stopped (None) or until the adapter is lost (the reason).
        ``on_connected()`` is called once the car is known, before the first round."""
        reader, plan = self._setup(conn, on_connected)
        return self._poll(conn, reader, plan)

    def _setup(self, conn: Any, on_connected: Callable[[], None]) -> tuple[PidReader, PollPlan]:
        if not bound_reads(conn):
            log.debug("python-OBD's serial read timeout could not be shortened")
        supported = {c.name: c for c in conn.supported_commands}
        settings = self._settings
        resolution = resolve(settings.fast_commands, settings.slow_commands, supported)
        for warning in resolution.warnings:
            self._warn_once(warning)
        names = resolution.fast + resolution.slow
        layout = Layout(
            resolution.fast,
            resolution.slow,
            gps=settings.gps_columns,
            info={name: describe(supported[name]) for name in names},
        )
        self._hub.set_layout(layout)
        protocol = str(conn.protocol_name() or "") or None
        protocol_id = str(conn.protocol_id() or "")
        adapter = plain(conn.query(obd.commands.ELM_VERSION).value)
        self._battery(conn, self._out.engine_trip)
        vin = self.query(conn, supported["VIN"]).value if "VIN" in supported else None
        saved = save_time(conn)
        self._out.learnt(protocol, adapter, vin)
        with self._lock:
            self._supported = supported
            self._protocol = protocol
        reader = PidReader(
            conn,
            supported,
            self._clock,
            fallbacks=self._fallbacks,
            undecodable=self._undecodable,
            counts=self._counts,
        )
        multi = allows_multi_pid(protocol_id)
        if not multi:
            self._warn_once(
                f"{protocol or 'this protocol'} allows one PID per request: every value "
                "costs one answer time of the car (only CAN reads several at once)",
                level=logging.INFO,
            )
        size = MAX_PIDS if multi else 1
        plan = PollPlan(
            request_groups(resolution.fast, reader.shareable, reader.is_single, size),
            request_groups(resolution.slow, reader.shareable, reader.is_single, size),
            settings.slow_interval,
            self._clock.monotonic(),
        )
        on_connected()
        log.info(
            "OBD connected on %s: %s, adapter %s, VIN %s, %d commands supported; "
            "logging %d fast values in %d requests per row and %d slow ones in %d requests "
            "every %g s%s",
            conn.port_name() or settings.interface_shown,
            protocol,
            adapter,
            vin or "unknown",
            len(supported),
            len(resolution.fast),
            len(plan.fast),
            len(resolution.slow),
            len(plan.slow),
            settings.slow_interval,
            f" ({', '.join(saved)})" if saved else "",
        )
        return reader, plan

    def _warn_once(self, message: str, level: int = logging.WARNING) -> None:
        # Once per process, not per reconnection.
        if message not in self._warned:
            self._warned.add(message)
            log.log(level, message)

    def _poll(self, conn: Any, reader: PidReader, plan: PollPlan) -> str | None:
        """Rounds of reads, with the queued requests between them."""
        mono = self._clock.monotonic
        policy = self.policy
        policy.connected(mono())
        while True:
            # Cleared before the queue is looked at: a submit after this point wakes the wait.
            self._wake.clear()
            if self._stopping.is_set():
                return None
            jobs_at = self._requests.run(
                conn, policy.next_row, policy.query_time, lambda: is_lost(conn)
            )
            if is_lost(conn):
                return loss_reason()
            now = mono()
            if policy.facts_due(now):
                self._out.rates()
            wait = policy.wait(now, jobs_at)
            if wait is not None:
                self._wake.wait(wait)
                continue
            lost = self._round(reader, plan, now)
            if lost is not None:
                return lost
            self._battery(conn, self._out.engine_trip)

    def _round(self, reader: PidReader, plan: PollPlan, row_start: float) -> str | None:
        """One round of reads begun at ``row_start``: the loss reason, or None."""
        mono = self._clock.monotonic
        policy = self.policy
        self._requests.row()  # a round of reads comes between two charged requests
        lately = policy.lately
        readings, answered, lost = self._read_groups(reader, plan, plan.fast, lately, False)
        if lost is not None:
            return lost
        limit = policy.slow_limit(
            row_start, mono(), has_fast=bool(plan.fast), fast_answered=answered
        )
        batch = plan.next_batch(mono(), limit)
        slow_answered = False
        if batch:
            slow, slow_answered, lost = self._read_groups(reader, plan, batch, lately, answered)
            if lost is not None:
                return lost
            self._out.slow_read(sum(len(g) for g in batch) / max(1, len(plan.slow_names)))
            readings.update(slow)
        answered = answered or slow_answered
        end = policy.round_end(
            row_start,
            mono(),
            plan.cycle,
            asked=bool(readings),
            answered=answered,
            # Only a round that asked nothing needs it (see LinkPolicy.unasked).
            slow_due=None if answered else plan.next_due(),
        )
        if end.row is not None:
            self._out.row(readings, end.row)
        elif end.trip_ends and self._out.engine_trip:
            log.info(
                "the car has not answered for %g s (TRIP_END_TIMEOUT): trip ended; "
                "asking it again at most %g s apart",
                self._settings.trip_end_timeout,
                policy.probe_cap,
            )
            self._out.end_trip()
        return None

    def _read_groups(
        self,
        reader: PidReader,
        plan: PollPlan,
        groups: Sequence[Group],
        lately: bool,
        answered: bool,
    ) -> tuple[dict[str, Reading], bool, str | None]:
        """Read groups in turn: (readings, whether the car answered, loss reason or None)."""
        mono = self._clock.monotonic
        out: dict[str, Reading] = {}
        got = False
        for group in groups:
            started = mono()
            result = reader.read(group, lately=lately, now=answered or got)
            elapsed = mono() - started
            if result.requests:
                self.policy.request_took(elapsed / result.requests)
            out.update(result.readings)
            got = got or any(r.value is not None for r in result.readings.values())
            if result.split:
                plan.split(group)
                with self._lock:
                    self._single_groups = tuple(self._fallbacks.single)
            if result.lost is not None:
                lost = loss_reason() if result.lost == "disconnected" else result.lost
                return out, got, lost
        return out, got, None
