"""The audit record of a trouble-code clear (issue 15, SPEC §3 and §5): a daemon on the
ELM327 emulator, with its control socket and a real local S3 server.

Before a clear the codes, the freeze frame (mode 02) and the readiness monitors (01 01) are
read; after the clear, and after a refusal, ``{CAR}_{time}_dtc-clear.json`` is written and
uploaded like a trip summary.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eccm.config import parse
from eccm.sim.s3 import LocalS3
from eccm.store.audit import AuditWriter
from eccm.store.names import parse_audit_name, parse_single_name, trim_ledger
from eccm.upload.keys import plan
from tests.control_fakes import SECRET, Client
from tests.s3server import CAR, config_values, get_object, list_objects
from tests.speed import set_speed
from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_audit_names_travel_alone_like_summaries(tmp_path: Path) -> None:
    path = AuditWriter(tmp_path, CAR)({"time": 1_795_000_000.4, "outcome": "refused"})
    again = AuditWriter(tmp_path, CAR)({"time": 1_795_000_000.9, "outcome": "cleared"})
    assert path.name == f"{CAR}_20261118T110640Z_dtc-clear.json"
    assert again.name == f"{CAR}_20261118T110641Z_dtc-clear.json"  # the same second: next
    sn = parse_audit_name(path.name)
    assert sn is not None and sn.trip_date == "2026-11-18"
    assert parse_single_name(path.name) == sn
    assert parse_audit_name(path.name + ".tmp") is None
    assert [j.name for j in plan([path.name, path.name + ".tmp"]).jobs()] == [sn]
    doc = json.loads(path.read_text())
    assert doc["car"] == CAR and doc["time"] == "2026-11-18T11:06:40.400Z"


@pytest.fixture
def daemon(s3_http: LocalS3, tmp_path: Path) -> Iterator[tuple[Any, Any, Path]]:
    from eccm.app import Daemon
    from tests.emulator import emulated_car

    with emulated_car() as emu:
        values = config_values(
            tmp_path / "records",
            s3_http,
            OBD_INTERFACE=emu.get_pty(),
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            SAMPLE_INTERVAL="0.05",
            ENABLE_SOCKET_SERVER="yes",
            SOCKET_SERVER_PORT=str(_free_port()),
            SOCKET_SERVER_SECRET=SECRET,
        )
        cfg = parse(values)
        d = Daemon(cfg)
        d.start()
        try:
            wait_until(lambda: d.link.state == "connected", timeout=WAIT, what="the link")
            yield d, emu, cfg.record_dir
        finally:
            emu.answer.pop("SPEED", None)
            emu.counters.pop("cmd_dtc_cleared", None)
            d.stop()


def _speed(d: Any, emu: Any, kmh: int) -> None:
    set_speed(emu, d.hub, kmh)


def test_a_socket_clear_and_a_refusal_leave_audit_records_in_the_bucket(
    daemon: tuple[Any, Any, Path], s3_http: LocalS3
) -> None:
    from tests.emulator import stored_dtcs

    d, emu, _records = daemon
    c = Client(("127.0.0.1", d.cfg.socket_server_port), timeout=WAIT).auth()
    port = c.sock.getsockname()[1]
    with stored_dtcs(["0143"], pending=["0300"]):
        reply = c.ask("DTC")
        assert reply["freeze_frame"]["DTC_RPM"]["unit"] == "revolutions_per_minute"
        _speed(d, emu, 0x32)
        assert c.ask("DTC CLEAR")["code"] == "vehicle_moving"
        _speed(d, emu, 0)
        token = c.ask("DTC CLEAR")["token"]
        assert c.ask(f"DTC CLEAR CONFIRM {token}")["ok"] is True
    assert c.ask("UPLOAD")["class"] == "UPLOAD"
    prefix = d.cfg.s3_key_prefix

    def audits() -> dict[str, int] | None:
        objs = list_objects(s3_http, prefix)
        found = {k: v for k, v in objs.items() if k.endswith("_dtc-clear.json")}
        return found if len(found) == 2 else None

    keys = sorted(wait_until(audits, timeout=WAIT, what="two audit records in the bucket"))
    assert all(f"/car={CAR}/date=" in k for k in keys)
    refused, cleared = (json.loads(get_object(s3_http, k)) for k in keys)
    assert refused["outcome"] == "refused" and refused["refused"]["code"] == "vehicle_moving"
    assert refused["front_end"] == "socket" and refused["client"] == f"127.0.0.1:{port}"
    assert cleared["outcome"] == "cleared" and cleared["ecu_answer"] == "44"
    assert cleared["front_end"] == "socket" and cleared["client"] == f"127.0.0.1:{port}"
    assert "diagnose" in cleared["scopes"]
    before = cleared["before"]
    assert before["mil"] is True
    assert [x["code"] for x in before["stored"]] == ["P0143"]
    assert [x["code"] for x in before["pending"]] == ["P0300"]
    assert before["freeze_frame"]["DTC_RPM"]["value"] == reply["freeze_frame"]["DTC_RPM"]["value"]
    assert before["readiness"]["MISFIRE_MONITORING"] == {"available": True, "complete": True}
    assert cleared["time"].endswith("Z")


def test_a_clear_cut_short_by_a_power_cut_keeps_its_evidence(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, CAR)
    sending = {"id": "a1", "time": 1_795_000_000.0, "outcome": "sending", "before": {"x": 1}}
    part = writer(sending)
    assert part.name.endswith("_dtc-clear.json.part")
    assert plan([part.name]).jobs() == []  # never uploaded half-way
    final = writer({**sending, "outcome": "cleared", "time": 1_795_000_002.0})
    assert final.name == part.name.removesuffix(".part") and not part.exists()
    assert json.loads(final.read_text())["outcome"] == "cleared"
    # A power cut between the two: the next start keeps the "sending" record.
    cut = AuditWriter(tmp_path, CAR)({**sending, "id": "b2", "time": 1_795_000_100.0})
    assert AuditWriter(tmp_path, CAR).recover() == [cut.with_name(cut.name.removesuffix(".part"))]
    kept = json.loads(cut.with_name(cut.name.removesuffix(".part")).read_text())
    assert kept["outcome"] == "sending" and kept["before"] == {"x": 1}
    assert not list(tmp_path.glob("*.part"))


class BootClock:
    """The real monotonic clock and a wall clock that :meth:`boot` sets to one time (a Pi
    without a real-time clock: fake-hwclock restores the same saved time at every boot
    after a power cut), from where it runs on."""

    def __init__(self, at: float) -> None:
        self._at = at
        self._since = time.monotonic()

    def boot(self) -> None:
        self._since = time.monotonic()

    def time(self) -> float:
        return self._at + time.monotonic() - self._since

    def monotonic(self) -> float:
        return time.monotonic()


def test_a_record_of_a_clock_that_repeats_itself_never_takes_an_uploaded_records_name(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    """Two runs refuse a clear at the same time by the Pi's clock; the first record was
    uploaded and deleted (S3_DELETE_AFTER_UPLOAD=yes) in between. The second must go up
    under a name of its own, not stay behind as a conflict with the first one's object."""
    from eccm.app import Daemon
    from tests.emulator import emulated_car

    records = tmp_path / "records"
    clock = BootClock(float(int(time.time())))
    with emulated_car() as emu:
        values = config_values(
            records,
            s3_http,
            OBD_INTERFACE=emu.get_pty(),
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            ENABLE_SOCKET_SERVER="yes",
            SOCKET_SERVER_PORT=str(_free_port()),
            SOCKET_SERVER_SECRET=SECRET,
        )
        cfg = parse(values)
        prefix = cfg.s3_key_prefix

        def audits() -> dict[str, int]:
            objs = list_objects(s3_http, prefix)
            return {k: v for k, v in objs.items() if k.endswith("_dtc-clear.json")}

        def run(n: int) -> None:
            d = Daemon(cfg, clock)
            d.start()
            try:
                wait_until(lambda: d.link.state == "connected", timeout=WAIT, what="the link")
                _speed(d, emu, 0x32)
                c = Client(("127.0.0.1", cfg.socket_server_port), timeout=WAIT).auth()
                clock.boot()  # the clear comes at the same time by the Pi's clock
                assert c.ask("DTC CLEAR")["code"] == "vehicle_moving"
                assert c.ask("UPLOAD")["class"] == "UPLOAD"
                c.close()
                wait_until(
                    lambda: len(audits()) == n and not list(records.glob("*_dtc-clear*")),
                    timeout=WAIT,
                    what=f"audit record {n} uploaded and deleted here",
                )
            finally:
                d.stop()

        try:
            run(1)
            run(2)
        finally:
            emu.answer.pop("SPEED", None)
    first, second = sorted(audits())
    assert first.rsplit("/", 1)[1] != second.rsplit("/", 1)[1]


def test_the_ledger_keeps_the_names_of_audit_records_when_it_is_trimmed() -> None:
    audit = f"{CAR}_20261204T100000Z_dtc-clear.json"
    data = [f"{CAR}_20261204T1100{i:02d}Z_0001.tsv" for i in range(10)]
    kept = trim_ledger(["junk", audit, *data], keep=3, trips_keep=100)
    assert audit in kept and "junk" not in kept
