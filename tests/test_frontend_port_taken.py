"""A front end that cannot listen does not stop the recording.

Found: with the web page's port taken by another program (8080 often is) or the socket's
address not up yet at boot, the daemon refused to start: no row was recorded, systemd
restarted it every 5 s for nothing, and a cron @reboot start never came back.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

import eccm.app
from eccm.app import Daemon
from eccm.config import parse
from eccm.sim.gnss import NmeaPty, Route
from tests.waiting import wait_until


def taken_port() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1: the port is taken while it lives."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder


def answers(port: int) -> bool:
    """The control socket greets a client with its HELLO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            return b'"class":"HELLO"' in conn.recv(1000)
    except OSError:
        return False


def test_taken_ports_leave_the_recording_on_and_the_front_ends_listen_once_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eccm.app, "LISTEN_RETRY_SECONDS", 0.2)
    caplog.set_level(logging.INFO, logger="eccm")
    records = tmp_path / "records"
    control, page = taken_port(), taken_port()
    control_port, page_port = control.getsockname()[1], page.getsockname()[1]
    with NmeaPty(Route(latitude=45.0, longitude=7.0), rate_hz=4.0) as gnss:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "busy-car",
                "OBD_INTERFACE": str(tmp_path / "no-adapter"),
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
                "ENABLE_SOCKET_SERVER": "yes",
                "SOCKET_SERVER_PORT": str(control_port),
                "SOCKET_SERVER_SECRET": "s" * 32,
                "ENABLE_WEB_SERVER": "yes",
                "WEB_SERVER_PORT": str(page_port),
            }
        )
        daemon = Daemon(cfg)
        daemon.start()
        try:
            recorder = daemon.recorder
            assert recorder is not None
            wait_until(lambda: recorder.rows_in_file >= 4, 60, "rows while the ports are taken")
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 2, errors
            assert any(
                f"control socket cannot listen on 127.0.0.1:{control_port}" in e for e in errors
            )
            assert any(f"web page cannot listen on 127.0.0.1:{page_port}" in e for e in errors)
            assert all("ECCM records without it and tries again every" in e for e in errors)
            start_line = next(m for m in caplog.messages if m.startswith("ECCM running"))
            assert f"socket 127.0.0.1:{control_port} (not listening yet)" in start_line
            # The other program goes: both listen without a restart.
            control.close()
            page.close()
            wait_until(lambda: answers(control_port), 60, "the control socket listening")
            wait_until(
                lambda: any(m.startswith("web page on http://127.0.0.1:") for m in caplog.messages),
                60,
                "the web page listening",
            )
            with socket.create_connection(("127.0.0.1", page_port), timeout=5):
                pass
        finally:
            daemon.stop()
            control.close()
            page.close()
    assert not answers(control_port)  # stopped with the daemon
