"""The service API (eccm/service.py) on its own: scopes, typed errors, the DTC-clear policy.
No session, no socket, no thread: an in-memory backend and a fake clock."""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.control.protocol import ERROR_CODES
from eccm.errors import DeviceError
from eccm.obd.share import AdapterBusy
from eccm.sample import Reading
from eccm.service import (
    ALL_SCOPES,
    READ_ONLY,
    SERVICE_CODES,
    BadRequest,
    Busy,
    Caller,
    ClearConfirm,
    ConfirmInvalid,
    Credentials,
    Dtc,
    DtcReport,
    Forbidden,
    NotConnected,
    ObdTimeout,
    Scope,
    ServerError,
    Service,
    ServiceError,
    UnknownValue,
    VehicleMoving,
    error_for,
    from_link_error,
    scope_names,
    scope_of,
)
from tests.control_fakes import FakeBackend

FULL = "correct horse battery staple, a secret of 40+ chars"
READER = "a read-only secret for the dashboard, 40+ characters"


def world(**kw: object) -> tuple[FakeClock, FakeBackend, Service]:
    clock = FakeClock()
    backend = FakeBackend(clock)
    return clock, backend, Service(backend, clock, **kw)  # type: ignore[arg-type]


def full() -> Caller:
    return Caller("192.0.2.7:50000", ALL_SCOPES)


def reader() -> Caller:
    return Caller("192.0.2.8:50000", READ_ONLY)


# -- scopes ----------------------------------------------------------------------------------
EXPECTED_SCOPES = {
    "supported": Scope.READ,
    "values": Scope.READ,
    "reads_car": Scope.READ,
    "check_watch": Scope.READ,
    "position": Scope.READ,
    "status": Scope.READ,
    "trip": Scope.READ,
    "track": Scope.READ,
    "dtc_report": Scope.READ,
    "files": Scope.READ,
    "file": Scope.READ,
    "upload": Scope.CONTROL,
    "request_clear": Scope.DIAGNOSE,
    "confirm_clear": Scope.DIAGNOSE,
}


def test_every_public_call_but_now_names_its_scope() -> None:
    # now and subscribe ("a row is out") tell nothing a scope guards.
    calls = {
        name: fn
        for name, fn in inspect.getmembers(Service, inspect.isfunction)
        if not name.startswith("_") and name not in ("now", "subscribe")
    }
    assert {name: scope_of(fn) for name, fn in calls.items()} == EXPECTED_SCOPES


def test_a_reader_reads_everything() -> None:
    _, backend, service = world()
    caller = reader()
    assert [v.name for v in service.supported(caller)] == [v.name for v in backend.info]
    assert service.values(caller, ["RPM"]).values["RPM"].value == 850.0
    service.check_watch(caller, ["RPM"])
    assert service.position(caller) is None
    assert service.status(caller)["rows"] == 12
    assert service.dtc_report(caller).mil is True
    assert service.trip(caller)["active"] is False


@pytest.mark.parametrize(
    ("call", "scope"),
    [
        (lambda s, c: s.upload(c), "control"),
        (lambda s, c: s.request_clear(c), "diagnose"),
        (lambda s, c: s.confirm_clear(c, "00000000"), "diagnose"),
    ],
)
def test_a_reader_is_forbidden_to_upload_or_clear(call: object, scope: str) -> None:
    _, backend, service = world()
    with pytest.raises(Forbidden) as err:
        call(service, reader())  # type: ignore[operator]
    assert err.value.code == "forbidden"
    assert f"needs the {scope} scope" in err.value.message
    assert "SOCKET_SERVER_SECRET" in err.value.message and "has: read" in err.value.message
    assert backend.clears == 0


def test_the_scope_is_checked_before_the_policy() -> None:
    """A reader learns nothing from a refused clear: not that the car moves, not that
    the adapter is down, and a full caller's token is not its to spend."""
    _, backend, service = world()
    backend.set("SPEED", 50.0)
    with pytest.raises(Forbidden):
        service.request_clear(reader())
    backend.set("SPEED", 0.0)
    owner = full()
    token = service.request_clear(owner).token
    with pytest.raises(Forbidden):
        service.confirm_clear(reader(), token)
    assert service.confirm_clear(owner, token).ok


def test_a_caller_without_any_scope_is_forbidden_everything() -> None:
    _, _, service = world()
    nobody = Caller("x", ())
    with pytest.raises(Forbidden, match="has: none"):
        service.values(nobody, None)


def test_scope_names_are_in_a_fixed_order() -> None:
    assert scope_names(ALL_SCOPES) == ["read", "control", "diagnose"]
    assert scope_names(READ_ONLY) == ["read"]
    assert scope_names({Scope.DIAGNOSE, Scope.READ}) == ["read", "diagnose"]


# -- credentials -----------------------------------------------------------------------------
def test_credentials_grant_scopes_by_secret() -> None:
    import hashlib
    import hmac

    creds = Credentials(FULL, READER)
    nonce = "94bf7e5f46aa4a63c9c039fdb0802265"

    def mac(secret: str) -> str:
        return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()

    assert creds.by_hmac(nonce, mac(FULL)) == ALL_SCOPES
    assert creds.by_hmac(nonce, mac(READER).upper()) == READ_ONLY
    assert creds.by_hmac(nonce, mac("wrong")) is None
    assert creds.by_plain(FULL) == ALL_SCOPES
    assert creds.by_plain(READER) == READ_ONLY
    assert creds.by_plain("") is None
    only = Credentials(FULL)
    assert only.by_plain(READER) is None and only.by_plain("") is None
    assert only.by_hmac(nonce, mac("")) is None


def test_credentials_refuse_an_empty_or_a_shared_secret() -> None:
    with pytest.raises(ValueError):
        Credentials("")
    with pytest.raises(ValueError):
        Credentials(FULL, FULL)


# -- typed errors ----------------------------------------------------------------------------
def test_every_service_code_is_a_protocol_error_code() -> None:
    assert SERVICE_CODES.issubset(ERROR_CODES)


def test_errors_carry_their_code() -> None:
    assert NotConnected("x").code == "not_connected"
    assert VehicleMoving("x").code == "vehicle_moving"
    busy = Busy("later", 0.5)
    assert (busy.code, busy.message, busy.retry_after) == ("busy", "later", 0.5)
    assert isinstance(error_for("obd_timeout", "slow"), ObdTimeout)
    assert isinstance(error_for("confirm_invalid", "no"), ConfirmInvalid)
    odd = error_for("line_too_long", "long")
    assert type(odd) is ServiceError and odd.code == "line_too_long"


@pytest.mark.parametrize(
    ("exc", "cls", "message"),
    [
        (
            DeviceError("not_connected: the OBD adapter was disconnected"),
            NotConnected,
            "the OBD adapter was disconnected",
        ),
        (
            DeviceError("unknown_value: the car does not support MAF"),
            UnknownValue,
            "the car does not support MAF",
        ),
        (DeviceError("obd_timeout: the car did not answer"), ObdTimeout, "the car did not answer"),
        (TimeoutError(), ObdTimeout, "the car did not answer in time (reading MAF)"),
        (
            DeviceError("the adapter said something odd"),
            NotConnected,
            "the OBD adapter failed (reading MAF): the adapter said something odd",
        ),
        (concurrent.futures.CancelledError(), NotConnected, "the OBD link stopped (reading MAF)"),
        (AdapterBusy("busy: 8 requests wait (retry in 1 s)", 1.0), Busy, "8 requests wait"),
    ],
)
def test_link_errors_become_typed_once(
    exc: BaseException, cls: type[ServiceError], message: str
) -> None:
    err = from_link_error(exc, "reading MAF")
    assert type(err) is cls
    assert err.message.startswith(message)
    if cls is Busy:
        assert err.retry_after == 1.0


def test_values_unknown_and_on_demand() -> None:
    clock, backend, service = world()
    clock.advance(0.25)
    got = service.values(full(), ["RPM", "FUEL_LEVEL"])
    assert got.values["RPM"].age_ms == 250
    assert got.values["FUEL_LEVEL"].value == 42.5 and backend.reads == ["FUEL_LEVEL"]
    assert got.time == clock.time()
    live = service.values(full(), ["FUEL_LEVEL"], read_missing=False)
    assert live.values["FUEL_LEVEL"].value is None and backend.reads == ["FUEL_LEVEL"]
    with pytest.raises(UnknownValue, match="see SUPPORTED"):
        service.values(full(), ["NOPE"])
    with pytest.raises(BadRequest, match="not logged"):
        service.check_watch(full(), ["FUEL_LEVEL"])
    backend.set("RPM", float("nan"))
    assert service.values(full(), ["RPM"]).values["RPM"].value is None


def test_dtc_report_is_typed() -> None:
    _, backend, service = world()
    backend.dtcs = {"mil": "yes", "stored": [("P0300", None), "junk"], "pending": None}
    assert service.dtc_report(full()) == DtcReport(None, (Dtc("P0300", ""),), ())


# -- the DTC-clear policy --------------------------------------------------------------------
def test_clear_two_steps_and_the_audit_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eccm.service")
    _, backend, service = world()
    owner = full()
    confirm = service.request_clear(owner)
    assert isinstance(confirm, ClearConfirm) and confirm.expires_in == 30
    assert backend.clears == 0
    result = service.confirm_clear(owner, confirm.token.upper())
    assert result.ok and result.answer == "44" and backend.clears == 1
    lines = [r.getMessage() for r in caplog.records]
    assert "DTC clear requested by 192.0.2.7:50000: waiting for confirmation" in lines
    assert any(
        line.startswith("DTC clear confirmed by 192.0.2.7:50000 sent to the car") for line in lines
    )


def test_clear_token_expires_on_the_fake_clock_and_is_single_use() -> None:
    clock, backend, service = world(token_ttl=10.0)
    owner = full()
    token = service.request_clear(owner).token
    clock.advance(10.01)
    backend.set("SPEED", 0.0)
    with pytest.raises(ConfirmInvalid, match="for 10 s"):
        service.confirm_clear(owner, token)
    token = service.request_clear(owner).token
    clock.advance(10)
    backend.set("SPEED", 0.0)
    service.confirm_clear(owner, token)
    with pytest.raises(ConfirmInvalid):
        service.confirm_clear(owner, token)
    assert backend.clears == 1


@pytest.mark.parametrize(
    ("front", "again"),
    [("socket", "send DTC CLEAR again"), ("mqtt", "send dtc_clear again"), ("web", "again")],
)
def test_a_bad_token_names_the_first_step_as_its_front_end_does(front: str, again: str) -> None:
    _, _backend, service = world()
    caller = Caller("client", ALL_SCOPES, front=front)
    service.request_clear(caller)
    with pytest.raises(ConfirmInvalid) as refused:
        service.confirm_clear(caller, "0" * 32)
    assert str(refused.value).endswith(again), str(refused.value)
    if front != "socket":
        assert "DTC CLEAR" not in str(refused.value)


def test_no_clear_goes_to_the_car_without_its_audit_record(tmp_path: Path) -> None:
    """The record is durable before mode 04 goes out (README): one that cannot be written
    (a full or read-only card) was logged, and the codes cleared all the same, their
    freeze frame and readiness lost with no trace."""
    from eccm.store.audit import AuditWriter

    (tmp_path / "card").write_text("not a folder")  # every write under it fails, root too
    _, backend, service = world(audit=AuditWriter(tmp_path / "card" / "records", "car"))
    owner = full()
    token = service.request_clear(owner).token
    with pytest.raises(ServerError, match="nothing was sent to the car"):
        service.confirm_clear(owner, token)
    assert backend.clears == 0


def test_clear_token_is_bound_to_its_caller() -> None:
    _, backend, service = world()
    a, b = full(), full()
    token = service.request_clear(a).token
    with pytest.raises(ConfirmInvalid):
        service.confirm_clear(b, token)
    service.confirm_clear(a, token)
    assert backend.clears == 1
    token = service.request_clear(a).token
    a.forget()  # the session closed
    with pytest.raises(ConfirmInvalid):
        service.confirm_clear(a, token)


def test_clear_refusals() -> None:
    clock, backend, service = world()
    backend.set("SPEED", 12.0)
    with pytest.raises(VehicleMoving, match="12 km/h"):
        service.request_clear(full())
    backend.set("SPEED", None)
    with pytest.raises(VehicleMoving, match="unknown"):
        service.request_clear(full())
    clock.advance(5)  # the logged SPEED is stale: read again
    backend.on_demand["SPEED"] = Reading(7.0, "kph", 0.0)
    with pytest.raises(VehicleMoving, match="7 km/h"):
        service.request_clear(full())
    assert backend.reads == ["SPEED"]
    backend.state = "disconnected"
    with pytest.raises(NotConnected):
        service.request_clear(full())
    _, _, off = world(allow_dtc_clear=False)
    with pytest.raises(Forbidden, match="SOCKET_SERVER_ALLOW_DTC_CLEAR=no"):
        off.request_clear(full())
    assert backend.clears == 0


def test_a_refusal_repeated_in_a_loop_is_counted_not_written_each_time() -> None:
    """Found: an MQTT publisher sending dtc_clear in a loop while the car moved made an
    audit file (and an S3 object) per refusal."""
    records: list[dict[str, object]] = []
    clock, backend, service = world(audit=lambda r: records.append(dict(r)))
    backend.set("SPEED", 30.0)
    looping = Caller("mqtt", ALL_SCOPES, front="mqtt")
    for _ in range(50):
        with pytest.raises(VehicleMoving):
            service.request_clear(looping)
        clock.advance(0.5)
    assert len(records) == 1 and "repeated_refusals" not in records[0]
    # Another client, or another reason, is recorded at once.
    with pytest.raises(VehicleMoving):
        service.request_clear(Caller("web", ALL_SCOPES, front="web", address="192.0.2.9"))
    assert len(records) == 2
    # Past the gap the next refusal is written with the count of those left out.
    clock.advance(60)
    with pytest.raises(VehicleMoving):
        service.request_clear(looping)
    assert len(records) == 3 and records[2]["repeated_refusals"] == 49
    assert records[2]["outcome"] == "refused" and backend.clears == 0


def test_moving_between_the_steps_spends_the_token() -> None:
    _, backend, service = world()
    owner = full()
    token = service.request_clear(owner).token
    backend.set("SPEED", 3.0)
    with pytest.raises(VehicleMoving):
        service.confirm_clear(owner, token)
    backend.set("SPEED", 0.0)
    with pytest.raises(ConfirmInvalid):
        service.confirm_clear(owner, token)
    assert backend.clears == 0
