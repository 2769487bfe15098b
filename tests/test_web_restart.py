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
from tests.browser_helpers import attr, browser_missing, chromium, login, text, wait_for
from tests.web_helpers import SECRET, free_port, web_daemon

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
        # The ignition is off: the page says so, and keeps what it showed.
        wait_for(browser, lambda d: text(d, "#conn") == "offline", "the page offline")
        with web_daemon(records, WEB_SERVER_PORT=port):
            wait_for(browser, lambda d: text(d, "#conn") == "live", "the page live again")
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
