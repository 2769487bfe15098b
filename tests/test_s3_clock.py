"""A Pi without a real-time clock: requests signed with a wrong date.

SeaweedFS, like AWS, refuses a request signed more than 15 minutes away from its own clock:
a PUT gets ``RequestTimeTooSkewed``, a HEAD a bare 403 (a HEAD's answer has no body). The
uploader must say that the clock is wrong and what to do, delete nothing, and send
everything once the clock is right. Over TLS a clock years behind fails earlier, at the
certificate ("not yet valid"), which must not be blamed on S3_VERIFY_TLS.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eccm.clock import FakeClock, SystemClock
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import car_prefix
from eccm.upload.outcome import LOGGER_NAME
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import CAR, list_objects, make_closed_file, make_config
from tests.waiting import wait_until

QUICK = S3Timeouts(connect=2.0, read=5.0, attempts=1)
PI_EPOCH = datetime(2016, 1, 1, tzinfo=UTC)  # what a Pi without network time believes


@pytest.fixture
def pi_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore signs with a clock ten years behind (the system clock of such a Pi)."""
    from botocore import auth

    real = auth.get_current_datetime  # type: ignore[attr-defined]
    offset = PI_EPOCH - datetime.now(UTC)

    def behind(remove_tzinfo: bool = True) -> datetime:
        now: datetime = real(remove_tzinfo) + offset
        return now

    monkeypatch.setattr(auth, "get_current_datetime", behind)
    yield
    monkeypatch.setattr(auth, "get_current_datetime", real)


@pytest.mark.parametrize("conditional", [None, True, False], ids=["probe", "put-first", "head"])
def test_a_clock_years_behind_is_named_nothing_is_deleted_and_the_files_follow_later(
    s3_http: LocalS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pi_clock: None,
    conditional: bool | None,
) -> None:
    cfg = make_config(tmp_path, s3_http)
    files = [make_closed_file(tmp_path, seq=i) for i in (1, 2)]
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    # The first request is the probe, or (probe done before the clock went wrong) the
    # conditional PUT, or the HEAD that servers without conditional create get first.
    up = Uploader.from_config(
        cfg, FakeClock(start=PI_EPOCH.timestamp()), timeouts=QUICK, conditional=conditional
    )

    report = up.run_once()
    assert report.uploaded == 0 and report.remaining == 2
    message = report.error or ""
    assert message == up.last_error
    # Regression: a refused HEAD (a bare 403) was reported as "access denied".
    assert "clock is 11 years behind the server's" in message, message
    assert "device 2016-01-01T" in message and "set the system time" in message
    assert "timedatectl set-ntp true" in message and "files are kept" in message
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before

    # NTP sets the clock: the same uploader sends everything, without a restart.
    from botocore import auth

    monkeypatch.undo()
    assert list_objects(s3_http, car_prefix(cfg.s3_key_prefix, CAR)) == {}
    assert abs(auth.get_current_datetime().year - datetime.now(UTC).year) <= 1  # type: ignore[attr-defined]
    report = up.run_once()
    assert report.uploaded == 2 and report.error is None
    assert not any(f.exists() for f in files)


def test_a_clock_a_few_minutes_off_is_no_problem(
    s3_http: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore import auth

    real = auth.get_current_datetime  # type: ignore[attr-defined]
    monkeypatch.setattr(
        auth,
        "get_current_datetime",
        lambda remove_tzinfo=True: real(remove_tzinfo) - timedelta(minutes=5),
    )
    cfg = make_config(tmp_path, s3_http)
    make_closed_file(tmp_path)
    report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert report.uploaded == 1 and report.error is None


def _future_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate valid from 2030: to this machine, as 2026 is to a Pi that
    believes it is 2016 (OpenSSL checks against the real system clock)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir(exist_ok=True)
    (folder / "db" / "index.txt").write_text("")
    (folder / "db" / "serial").write_text("01\n")
    (folder / "ca.cnf").write_text(
        "[ca]\ndefault_ca = eccm\n"
        "[eccm]\ndatabase = db/index.txt\nnew_certs_dir = db\nserial = db/serial\n"
        "default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n"
        "[any]\ncommonName = supplied\n"
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n"
    )
    key, cert = folder / "key.pem", folder / "cert.pem"
    try:
        subprocess.run(
            [
                "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(key), "-out", "req.csr", "-config", "ca.cnf",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-addext", "basicConstraints=critical,CA:TRUE",
            ],
            cwd=folder, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [
                "openssl", "ca", "-batch", "-selfsign", "-config", "ca.cnf", "-keyfile",
                str(key), "-in", "req.csr", "-out", str(cert),
                "-startdate", "20300101000000Z", "-enddate", "20300201000000Z",
            ],
            cwd=folder, check=True, capture_output=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a certificate with the openssl command: {exc}")
    return cert, key


class TlsListener:
    """A TLS server that completes handshakes (when the client accepts its certificate)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._ctx.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_certificate_not_yet_valid_blames_the_clock_not_s3_verify_tls(tmp_path: Path) -> None:
    cert, key = _future_certificate(tmp_path / "tls")
    server = TlsListener(cert, key)
    try:
        cfg = make_config(
            tmp_path / "rec",
            None,
            S3_SERVER_ENDPOINT=f"https://127.0.0.1:{server.port}",
            S3_SERVER_BUCKET="b",
            S3_SERVER_AK="a",
            S3_SERVER_SK="s",
            S3_VERIFY_TLS=str(cert),
        )
        f = make_closed_file(tmp_path / "rec")
        up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
        report = up.run_once()
    finally:
        server.close()
    message = report.error or ""
    assert "is not yet valid by this device's clock" in message, message
    assert "set the system time" in message
    assert "S3_VERIFY_TLS" not in message
    assert f.is_file() and report.remaining == 1


def test_a_clock_years_behind_is_logged_once_not_at_every_run(
    s3_http: LocalS3, tmp_path: Path, pi_clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The message names the device's and the server's times, which move on between two
    runs: each run's message differed, so the repeat suppression never held and every
    run (each file closed wakes one) logged the same ERROR again until NTP set the clock."""
    make_closed_file(tmp_path)
    up = Uploader.from_config(make_config(tmp_path, s3_http), SystemClock(), timeouts=QUICK)
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        first = up.run_once()
        next_second = int(time.time()) + 1
        wait_until(lambda: time.time() >= next_second, what="the next second")
        second = up.run_once()
    assert first.error and second.error and first.error != second.error
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "clock is 11 years behind" in loud[0], loud
