"""The web page across a restart of the daemon: in a car it restarts at every ignition, and
a phone left logged in must not be sent back to the login form (over plain HTTP a phone
logs in only with a one-time link made on the Pi). Real daemon on the ELM327 emulator,
real chromium; a changed secret still ends the sessions it had opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eccm.web.keep import FILE_NAME
from tests.browser_helpers import (
    attr,
    browser_missing,
    chromium,
    login,
    open_page,
    text,
    wait_for,
)
from tests.web_helpers import READ_SECRET, SECRET, free_port, web_daemon

pytestmark = pytest.mark.slow

GAUGE = '#gauges [data-name="RPM"]'


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
def test_an_open_page_stays_logged_in_across_a_daemon_restart(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    records = tmp_path / "records"
    port = str(free_port())
    with chromium() as browser:
        with web_daemon(records, WEB_SERVER_PORT=port) as car:
            url = car.daemon.web.url
            login(browser, url, SECRET)
            browser_cookie = browser.get_cookie("eccm_session")["value"]
            wait_for(browser, lambda d: attr(d, GAUGE, "data-state") == "fresh", "a fresh RPM")
            # The Status page, whose last reply says "connected" in green.
            open_page(browser, "status")
            wait_for(browser, lambda d: "connected" in text(d, '[data-key="obd"]'), "the link")
            assert not browser.find_element(By.ID, "offline-notice").is_displayed()
        # The ignition is off: the page says so, and keeps what it showed.
        wait_for(browser, lambda d: text(d, "#conn") == "offline", "the page offline")
        # Not only in the header's badge: on the page, over what is now out of date.
        notice = "#offline-notice"
        wait_for(browser, lambda d: "does not answer" in text(d, notice), "why nothing changes")
        with web_daemon(records, WEB_SERVER_PORT=port):
            wait_for(browser, lambda d: text(d, "#conn") == "live", "the page live again")
            wait_for(
                browser, lambda d: not d.find_element(By.ID, "offline-notice").is_displayed(), "ok"
            )
            open_page(browser, "live")
            wait_for(browser, lambda d: attr(d, GAUGE, "data-state") == "fresh", "RPM again")
            assert not browser.find_element(By.ID, "login").is_displayed()
            # A reload too: the cookie still opens the page, with its CSRF token.
            browser.get(url + "/")
            wait_for(browser, lambda d: d.find_element(By.ID, "app").is_displayed(), "the page")
            assert not browser.find_element(By.ID, "login").is_displayed()
    kept = records / FILE_NAME
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    # The file holds digests of the cookies, never a cookie.
    cookie = browser_cookie
    assert cookie and cookie not in kept.read_text()


def test_a_session_survives_a_restart_but_not_a_changed_secret(tmp_path: Path) -> None:
    records = tmp_path / "records"
    with web_daemon(records) as car:
        client = car.http()
        assert client.login().status == 200
        reader = car.http()
        assert reader.login("a read-only secret that is long enough, too").status == 200
    with web_daemon(records) as car:
        for who in (client, reader):
            who.port = car.port
        assert client.get("/api/session").status == 200
        # The CSRF token of the login still goes with the cookie: a POST is taken (a
        # CONFIRM at standstill, vehicle_moving else: the car's answer, not the session's).
        reply = client.post("/api/dtc/clear").json
        assert reply["class"] == "CONFIRM" or reply["code"] == "vehicle_moving", reply
        # The read-only session came back read-only.
        assert reader.get("/api/session").json["scopes"] == ["read"]
        assert reader.post("/api/dtc/clear").json["code"] == "forbidden"
        # Logging out ends it for the next run too.
        assert reader.post("/api/logout").status == 200
    other = "another secret, after a phone was lost: 40+ chars"
    with web_daemon(records, SOCKET_SERVER_SECRET=other) as car:
        for who in (client, reader):
            who.port = car.port
        assert client.get("/api/session").status == 401
        assert reader.get("/api/session").status == 401


def test_a_session_written_into_the_file_by_someone_without_the_secret_opens_nothing(
    tmp_path: Path,
) -> None:
    """Whoever may write the record folder (a share, a second user) but knows no secret
    copies the tag of a kept session onto a cookie of their own, or onto more scopes than
    the session had: after a restart neither opens the page."""
    import hashlib
    import json

    records = tmp_path / "records"
    with web_daemon(records) as car:
        reader = car.http()
        assert reader.login(READ_SECRET).status == 200
        owner = car.http()
        assert owner.login().status == 200
    kept = records / FILE_NAME
    body = json.loads(kept.read_text())
    full = next(s for s in body["sessions"] if "control" in s["scopes"])
    read = next(s for s in body["sessions"] if s["scopes"] == ["read"])
    mine = "a cookie the intruder chose"
    forged = dict(full, key=hashlib.sha256(mine.encode()).hexdigest(), csrf="x")
    # The reader's own session, claiming the owner's scopes with the owner's tag.
    raised = dict(read, scopes=full["scopes"], tag=full["tag"])
    body["sessions"] = [forged, raised]
    kept.write_text(json.dumps(body))
    with web_daemon(records) as car:
        intruder = car.http()
        intruder.cookies["eccm_session"] = mine
        assert intruder.get("/api/session").status == 401
        reader.port = car.port
        reply = reader.get("/api/session")
        assert reply.status == 401 or reply.json["scopes"] == ["read"], reply.json
