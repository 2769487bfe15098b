"""S3 sync behind a hotspot's login page (a captive portal), as a car's cellular link meets
when its data plan runs out or a Wi-Fi hotspot wants a click first.

The portal is a real HTTP server on a local port that answers every request, whatever the
method or path, with a redirect to its login page, or with the page itself (200). Nothing
must be deleted, the run must end quickly (not after hundreds of requests), and the
message must say what happened.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.config import Config
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import make_closed_file, make_config

QUICK = S3Timeouts(connect=2.0, read=5.0, attempts=1)
LOGIN = "http://hotspot.example/login?from=car"


class Portal(http.server.ThreadingHTTPServer):
    """Answers every request with ``status`` and a web page (a redirect to LOGIN when
    ``status`` is a 3xx); counts the requests."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _PortalHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self) -> None:
        with self._lock:
            self.requests += 1


class _PortalHandler(http.server.BaseHTTPRequestHandler):
    server: Portal

    def _redirect(self) -> None:
        self.server.count()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<html><body>Log in to continue</body></html>"
        self.send_response(self.server.status)
        if 300 <= self.server.status < 400:
            self.send_header("Location", LOGIN)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _redirect

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def serving(status: int) -> Iterator[Portal]:
    server = Portal(status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=[302, 307])
def portal(request: pytest.FixtureRequest) -> Iterator[Portal]:
    with serving(request.param) as server:
        yield server


def portal_config(tmp_path: Path, portal: Portal) -> Config:
    return make_config(
        tmp_path,
        None,
        S3_SERVER_ENDPOINT=portal.endpoint,
        S3_SERVER_BUCKET="b",
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
    )


def test_a_hotspot_login_page_keeps_the_files_and_says_so(portal: Portal, tmp_path: Path) -> None:
    data = make_closed_file(tmp_path)
    up = Uploader.from_config(portal_config(tmp_path, portal), SystemClock(), timeouts=QUICK)
    report = up.run_once()
    error = report.error or ""
    # botocore took any redirect for S3's "wrong region" answer and asked the portal for
    # the bucket's region, which redirected again: thousands of requests, then a
    # RecursionError reported as an "unexpected error".
    assert "Recursion" not in error, error
    assert portal.requests < 20, portal.requests
    assert f"redirect ({portal.status})" in error and LOGIN in error, error
    assert "retried" in error, error
    assert data.exists() and data.with_name(data.name + ".json").exists()
    assert up.queue_length() == 1


def test_a_hotspot_that_answers_every_request_with_its_page_is_not_taken_for_s3(
    tmp_path: Path,
) -> None:
    """Some portals answer 200 and their login page to any request: a PUT "succeeds" and
    a HEAD finds an object without the file's size or sha256. That is no bucket holding
    other content (the message blamed two cars with the same CAR_IDENTIFIER), and the
    answer to the conditional-create probe says nothing about the real server."""
    data = make_closed_file(tmp_path)
    with serving(200) as portal:
        up = Uploader.from_config(portal_config(tmp_path, portal), SystemClock(), timeouts=QUICK)
        report = up.run_once()
    error = report.error or ""
    assert "not an S3 server" in error and "login page" in error, error
    assert "retried" in error, error
    assert not any("CAR_IDENTIFIER" in k for k in report.kept), report.kept
    assert data.exists() and data.with_name(data.name + ".json").exists()
    assert up.queue_length() == 1


@pytest.mark.parametrize("status", [502, 503])
def test_a_proxy_error_page_is_a_server_failure_said_once(status: int, tmp_path: Path) -> None:
    """A proxy or a hotspot gateway answering 502/503 with an HTML page: botocore has no
    error code for it but the status, which the message used to repeat ("answered 503
    503")."""
    data = make_closed_file(tmp_path)
    with serving(status) as portal:
        up = Uploader.from_config(portal_config(tmp_path, portal), SystemClock(), timeouts=QUICK)
        report = up.run_once()
    error = report.error or ""
    assert f"answered {status} " in error and f"{status} {status}" not in error, error
    assert "retried" in error, error
    assert data.exists() and up.queue_length() == 1
