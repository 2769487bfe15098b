"""S3 sync behind a hotspot's login page (a captive portal), as a car's cellular link meets
when its data plan runs out or a Wi-Fi hotspot wants a click first.

The portal is a real HTTP server on a local port that answers every request, whatever the
method or path, with a redirect to its login page. Nothing must be deleted, the run must
end quickly (not after hundreds of requests), and the message must say what happened.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import make_closed_file, make_config

QUICK = S3Timeouts(connect=2.0, read=5.0, attempts=1)
LOGIN = "http://hotspot.example/login?from=car"


class Portal(http.server.ThreadingHTTPServer):
    """Redirects every request to LOGIN with ``status``; counts the requests."""

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
        self.send_header("Location", LOGIN)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _redirect

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(params=[302, 307])
def portal(request: pytest.FixtureRequest) -> Iterator[Portal]:
    server = Portal(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_hotspot_login_page_keeps_the_files_and_says_so(portal: Portal, tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        None,
        S3_SERVER_ENDPOINT=portal.endpoint,
        S3_SERVER_BUCKET="b",
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
    )
    data = make_closed_file(tmp_path)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
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
