"""The uploader against a real S3 server (SeaweedFS with access keys enforced)."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from eccm.cli import upload_backlog
from eccm.clock import SystemClock
from eccm.config import Config
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import car_prefix, probe_key
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import CAR, get_object, list_objects, make_closed_file, make_config

QUICK = S3Timeouts(connect=2.0, read=2.0, attempts=2)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def data_keys(server: LocalS3, cfg: Config) -> dict[str, int]:
    objs = list_objects(server, car_prefix(cfg.s3_key_prefix, CAR))
    objs.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    return objs


def key_of(cfg: Config, date: str, name: str) -> str:
    return f"{cfg.s3_key_prefix}/car={CAR}/date={date}/{name}"


def test_the_server_rejects_a_wrong_secret(s3_http: LocalS3) -> None:
    with pytest.raises(ClientError) as err:
        s3_http.client(secret_key="not-the-secret").put_object(
            Bucket=s3_http.bucket, Key="x", Body=b"x"
        )
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_normal_flow_uploads_verifies_and_deletes(s3_any: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_any)
    a = make_closed_file(tmp_path, seq=1)
    # The first row is after midnight UTC while the trip began the day before.
    b = make_closed_file(
        tmp_path, trip="20261121T235000Z", seq=2, gz=False, first_time="2026-11-22T00:00:01.200Z"
    )
    c = make_closed_file(
        tmp_path, trip="20261121T235000Z", seq=3, ext=".csv", first_time="2026-11-21T23:59:59.999Z"
    )
    local = {p.name: p.read_bytes() for p in (a, b, c)}
    sidecars = {p.name: (tmp_path / (p.name + ".json")).read_bytes() for p in (a, b, c)}
    open_file = tmp_path / f"{CAR}_20261122T030000Z_0001.tsv.part"
    open_file.write_bytes(b"TIME_UTC\n")
    unready = make_closed_file(tmp_path, trip="20261122T030000Z", seq=9, sidecar=False)

    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    assert up.queue_length() == 3
    report = up.run_once()

    assert report.error is None and report.kept == []
    assert (report.uploaded, report.remaining, up.objects_uploaded) == (3, 0, 3)
    assert up.last_error is None and up.last_upload is not None
    assert up.queue_length() == 0
    expected = {
        key_of(cfg, "2026-11-22", a.name),
        key_of(cfg, "2026-11-22", b.name),
        key_of(cfg, "2026-11-21", c.name),
    }
    expected |= {k + ".json" for k in expected}
    # Exactly these objects: no probe left behind (this key may delete), nothing else.
    assert set(list_objects(s3_any, car_prefix(cfg.s3_key_prefix, CAR))) == expected
    client = s3_any.client()
    for key in expected:
        name = key.rsplit("/", 1)[1]
        want = sidecars[name[:-5]] if name.endswith(".json") else local[name]
        assert get_object(s3_any, key) == want
        head = client.head_object(Bucket=s3_any.bucket, Key=key)
        assert head["Metadata"]["sha256"] == hashlib.sha256(want).hexdigest()
    # Uploaded files are gone; the open file and the one without a sidecar are untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([open_file.name, unready.name])


def test_keep_mode_moves_files_to_uploaded(s3_http: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_http, S3_DELETE_AFTER_UPLOAD="no")
    f = make_closed_file(tmp_path)
    content = f.read_bytes()
    report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert report.uploaded == 1
    moved = tmp_path / "uploaded" / f.name
    assert moved.read_bytes() == content
    assert (tmp_path / "uploaded" / (f.name + ".json")).is_file()
    assert not f.exists()


def test_the_same_file_twice_makes_one_object(s3_http: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_http)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    make_closed_file(tmp_path, seq=4)
    assert up.run_once().uploaded == 1
    before = data_keys(s3_http, cfg)

    make_closed_file(tmp_path, seq=4)  # the very same file again (a retry after a crash)
    report = up.run_once()
    assert (report.uploaded, report.already_present, report.bytes_sent) == (1, 1, 0)
    assert data_keys(s3_http, cfg) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-match", "head-first"])
def test_different_content_under_the_same_name_is_kept_not_overwritten(
    s3_http: LocalS3, tmp_path: Path, conditional: bool
) -> None:
    cfg = make_config(tmp_path, s3_http)
    first = make_closed_file(tmp_path, seq=5, rows=10)
    original = first.read_bytes()
    assert Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once().uploaded == 1
    # A server without conditional create gets a HEAD before each PUT instead.
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK, conditional=conditional)

    other = make_closed_file(tmp_path, seq=5, rows=11)
    report = up.run_once()
    assert report.uploaded == 0 and report.remaining == 1
    assert "already exists with different content" in (up.last_error or "")
    assert other.is_file() and (tmp_path / (other.name + ".json")).is_file()
    key = key_of(cfg, "2026-11-22", first.name)
    assert get_object(s3_http, key) == original


def test_a_file_that_does_not_match_its_sidecar_is_kept(s3_http: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_http)
    f = make_closed_file(tmp_path, gz=False)
    f.write_bytes(f.read_bytes() + b"bit rot\n")
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    report = up.run_once()
    assert report.uploaded == 0 and len(report.kept) == 1
    assert "does not match its sidecar" in (up.last_error or "")
    assert f.is_file()
    assert data_keys(s3_http, cfg) == {}


def _uploader_failure(
    tmp_path: Path, cfg: Config, caplog: pytest.LogCaptureFixture
) -> tuple[Uploader, list[Path]]:
    files = [make_closed_file(tmp_path, seq=i) for i in (1, 2, 3)]
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    with caplog.at_level(logging.DEBUG, logger="eccm.upload.uploader"):
        for _ in range(3):
            report = up.run_once()
            assert report.uploaded == 0 and report.remaining == 3
            assert report.error is not None and report.error == up.last_error
    assert all(f.is_file() and (tmp_path / (f.name + ".json")).is_file() for f in files)
    # One clear message for the failing runs, not one per file or per run.
    loud = [
        r
        for r in caplog.records
        if r.name == "eccm.upload.uploader"
        and r.levelno >= logging.WARNING
        and "upload:" in r.message
    ]
    assert len(loud) == 1, [r.message for r in loud]
    return up, files


def test_a_wrong_secret_keeps_the_files_with_one_clear_message(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, s3_http, S3_SERVER_SK="wrong-secret")
    up, _ = _uploader_failure(tmp_path, cfg, caplog)
    assert "rejected the credentials" in (up.last_error or "")
    assert "S3_SERVER_SK" in (up.last_error or "")


def test_a_missing_bucket_keeps_the_files_with_one_clear_message(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, s3_http, S3_SERVER_BUCKET="no-such-bucket")
    up, _ = _uploader_failure(tmp_path, cfg, caplog)
    assert "'no-such-bucket' does not exist" in (up.last_error or "")
    assert "S3_SERVER_BUCKET" in (up.last_error or "")


def test_an_untrusted_certificate_names_s3_verify_tls(
    s3_https: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, s3_https, S3_VERIFY_TLS="yes")
    up, _ = _uploader_failure(tmp_path, cfg, caplog)
    assert "S3_VERIFY_TLS" in (up.last_error or "")


def test_an_unreachable_server_is_retried_later(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = make_config(
        tmp_path,
        None,
        S3_SERVER_ENDPOINT=f"http://127.0.0.1:{port}",
        S3_SERVER_BUCKET="b",
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
    )
    make_closed_file(tmp_path)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    report = up.run_once()
    assert "cannot reach" in (report.error or "") and "retried" in (report.error or "")
    assert up.queue_length() == 1


class HungServer:
    """A TCP listener that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def _hung_config(tmp_path: Path, port: int) -> Config:
    return make_config(
        tmp_path,
        None,
        S3_SERVER_ENDPOINT=f"http://127.0.0.1:{port}",
        S3_SERVER_BUCKET="b",
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
        S3_SYNC_INTERVAL="1",
    )


def test_run_once_returns_within_its_timeouts_when_the_server_hangs(
    tmp_path: Path, hung_server: HungServer
) -> None:
    cfg = _hung_config(tmp_path, hung_server.port)
    make_closed_file(tmp_path)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(up.run_once()), daemon=True)
    t.start()
    # Generous: 2 attempts x 2 s read timeout; the point is that it returns at all.
    t.join(60)
    assert not t.is_alive(), "run_once hung with the server"
    assert hung_server.accepted.is_set()
    assert f"did not answer within 2 s ({QUICK.attempts} tries)" in (up.last_error or "")
    assert up.queue_length() == 1


def test_a_hung_server_does_not_block_the_caller(tmp_path: Path, hung_server: HungServer) -> None:
    cfg = _hung_config(tmp_path, hung_server.port)
    make_closed_file(tmp_path)
    up = Uploader.from_config(
        cfg, SystemClock(), timeouts=S3Timeouts(connect=2.0, read=30.0, attempts=1)
    )
    up.start()
    try:
        # The upload thread is now stuck waiting for an answer...
        assert hung_server.accepted.wait(30)
        assert up._thread is not None and up._thread is not threading.current_thread()
        # ...while the recorder's calls return at once (in a helper thread, so that a
        # regression fails the test instead of hanging it).
        done = threading.Event()

        def recorder_side() -> None:
            up.wake()
            up.wake()
            assert up.queue_length() == 1
            make_closed_file(tmp_path, seq=2)
            done.set()

        helper = threading.Thread(target=recorder_side, daemon=True)
        helper.start()
        assert done.wait(30), "wake()/queue_length() blocked behind a hung upload"
    finally:
        stopper = threading.Thread(target=lambda: up.stop(timeout=1.0), daemon=True)
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive(), "stop() did not return within its bound"


def test_server_stopped_mid_run_and_restarted_everything_arrives_once(tmp_path: Path) -> None:
    server = LocalS3(tmp_path / "s3", bucket="outage")
    server.start()
    try:
        record = tmp_path / "rec"
        cfg = make_config(record, server, S3_SYNC_INTERVAL="1", S3_SYNC_JITTER="0")
        files = {
            p.name: p.read_bytes() for p in (make_closed_file(record, seq=i) for i in range(1, 7))
        }
        up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
        done: list[str] = []

        def on_file(name: str) -> None:
            done.append(name)
            if len(done) == 2:
                server.stop(grace=0)  # the server dies in the middle of the run

        report = up.run_once(on_file=on_file)
        # Files in flight when the server died may or may not have made it.
        assert 2 <= report.uploaded < 6 and report.remaining == 6 - report.uploaded
        assert report.error is not None and "retried" in report.error

        assert up.consecutive_failures == 1
        # The scheduled thread keeps retrying with backoff while the server is down...
        up.start()
        wait_for(lambda: up.consecutive_failures >= 2, what="a failing scheduled run")
        server.start()
        # ...and catches up by itself once it is back.
        wait_for(lambda: up.queue_length() == 0, timeout=90, what="the backlog to drain")
        up.stop()
        objs = data_keys(server, cfg)
        expected = {key_of(cfg, "2026-11-22", n) for n in files}
        assert set(objs) == expected | {k + ".json" for k in expected}
        for name, content in files.items():
            assert get_object(server, key_of(cfg, "2026-11-22", name)) == content
        assert up.objects_uploaded == 6
        assert up.last_error is None and up.consecutive_failures == 0
    finally:
        server.stop(grace=0)


def test_large_files_go_multipart_and_stale_uploads_are_aborted(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, s3_http)
    client = s3_http.client()
    prefix = car_prefix(cfg.s3_key_prefix, CAR)
    stale = client.create_multipart_upload(Bucket=s3_http.bucket, Key=prefix + "date=x/crashed")
    payload = hashlib.sha256(b"seed").digest() * (11 * 1024 * 1024 // 32 + 7)
    big = make_closed_file(tmp_path, gz=False, payload=payload)
    up = Uploader.from_config(
        cfg,
        SystemClock(),
        timeouts=S3Timeouts(connect=5, read=30, attempts=2),
        multipart_threshold=5 * 1024 * 1024,
        part_size=5 * 1024 * 1024,
    )
    up.start()
    try:
        wait_for(lambda: up.objects_uploaded == 1, timeout=90, what="the multipart upload")
    finally:
        up.stop()
    key = key_of(cfg, "2026-11-22", big.name)
    head = client.head_object(Bucket=s3_http.bucket, Key=key)
    assert "-" in head["ETag"]  # a multipart object
    assert get_object(s3_http, key) == payload
    uploads = client.list_multipart_uploads(Bucket=s3_http.bucket, Prefix=prefix).get("Uploads", [])
    assert stale["UploadId"] not in [u["UploadId"] for u in uploads]


def test_a_sweep_that_found_stale_uploads_sweeps_again_at_the_next_run(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    # S3 says an abort may have to be repeated: a part still being stored when its upload
    # is aborted can store itself after the abort, and the upload is listed again (seen
    # with SeaweedFS under load, after a link broke a multipart upload mid-part).
    cfg = make_config(tmp_path, s3_http)
    client = s3_http.client()
    prefix = car_prefix(cfg.s3_key_prefix, CAR)

    def listed() -> set[str]:
        page = client.list_multipart_uploads(Bucket=s3_http.bucket, Prefix=prefix)
        return {u["UploadId"] for u in page.get("Uploads", [])}

    def stale(name: str) -> str:
        made = client.create_multipart_upload(Bucket=s3_http.bucket, Key=prefix + name)
        return str(made["UploadId"])

    # A run talks to the server (and sweeps) only when it has a file to send.
    seq = iter(range(1, 10))
    crashed = stale("date=x/crashed")
    make_closed_file(tmp_path, seq=next(seq))
    up = Uploader.from_config(cfg, SystemClock(), timeouts=S3Timeouts(connect=5, read=30))
    up.start()  # the daemon's start: the sweep finds the crash's upload
    try:
        wait_for(lambda: up.objects_uploaded == 1, timeout=60, what="the first run")
        wait_for(lambda: crashed not in listed(), timeout=60, what="the sweep at start")
    finally:
        up.stop()
    again = stale("date=x/listed-again")  # as a part stored after its abort
    make_closed_file(tmp_path, seq=next(seq))
    up.run_once()
    wait_for(lambda: again not in listed(), timeout=60, what="the next run's sweep")
    wait_for(lambda: not listed(), timeout=60, what="the aborted uploads unlisted")
    make_closed_file(tmp_path, seq=next(seq))
    up.run_once()  # its sweep finds none: the sweeps end
    fresh = stale("date=x/after-the-sweeps")
    make_closed_file(tmp_path, seq=next(seq))
    up.run_once()
    try:
        assert fresh in listed(), "a run after a sweep that found none must not list again"
    finally:
        client.abort_multipart_upload(
            Bucket=s3_http.bucket, Key=prefix + "date=x/after-the-sweeps", UploadId=fresh
        )


def test_upload_backlog_is_the_cli_body(
    s3_http: LocalS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config(tmp_path, s3_http)
    for i in (1, 2):
        make_closed_file(tmp_path, seq=i)
    assert upload_backlog(cfg, progress=False) == 0
    assert "uploaded 2 file(s)" in capsys.readouterr().out
    assert len(data_keys(s3_http, cfg)) == 4

    make_closed_file(tmp_path, seq=3)
    bad = make_config(tmp_path, s3_http, S3_SERVER_SK="wrong-secret")
    assert upload_backlog(bad, progress=False) == 1
    assert "S3_SERVER_SK" in capsys.readouterr().err

    off = make_config(tmp_path, None)
    assert upload_backlog(off, progress=False) == 2
    assert "S3_SERVER_ENDPOINT" in capsys.readouterr().err


def test_wake_uploads_now_and_stop_makes_one_last_attempt(s3_http: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_http, S3_SYNC_INTERVAL="3600", S3_SYNC_JITTER="0")
    make_closed_file(tmp_path, seq=1)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    up.start()
    try:
        wait_for(lambda: up.objects_uploaded == 1, what="the run at start")
        # The next scheduled run is an hour away: only wake() can explain this upload.
        make_closed_file(tmp_path, seq=2)
        up.wake()
        wait_for(lambda: up.objects_uploaded == 2, what="the upload on wake()")
        # A file closed at shutdown goes up in stop()'s last attempt.
        make_closed_file(tmp_path, seq=3)
    finally:
        up.stop(timeout=10.0)
    assert up.objects_uploaded == 3
    assert up.queue_length() == 0
    assert len(data_keys(s3_http, cfg)) == 6


def test_empty_keys_use_boto3s_default_credential_chain(
    s3_http: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_http.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_http.secret_key)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    cfg = make_config(tmp_path, s3_http, S3_SERVER_AK="", S3_SERVER_SK="")
    make_closed_file(tmp_path)
    assert Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once().uploaded == 1
