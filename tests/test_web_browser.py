"""The web page in a real browser: Debian's chromium, headless, against the real daemon
(OBD link on the ELM327 emulator, GNSS from a simulated NMEA receiver, the web server on
a free port). Skipped with the reason when chromium, chromium-driver or selenium is
missing (``./test.sh`` installs them as root)."""

from __future__ import annotations

import http.server
import itertools
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser_helpers import (
    WAIT,
    attr,
    browser_missing,
    chromium,
    console,
    errors,
    login,
    open_page,
    text,
    wait_for,
)
from tests.web_helpers import SECRET, WebCar, web_daemon

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or ""),
]

# A distinctive place, so the map can only show it if it came from the NMEA feed.
CENTRE = (-33.8568, 151.2153)
RADIUS_M = 300.0


@dataclass
class Car:
    web: WebCar
    url: str

    @property
    def emu(self) -> Any:
        return self.web.emu

    @property
    def daemon(self) -> Any:
        return self.web.daemon

    def answer(self, name: str, pid: str, data: str) -> None:
        """The emulated car answers mode 01 ``pid`` with ``data`` (hex) from now on."""
        from elm.obd_message import DT, ECU_R_ADDR_E, HD, SZ

        size = 2 + len(data.split())
        self.emu.answer[name] = HD(ECU_R_ADDR_E) + SZ(f"{size:02X}") + DT(f"41 {pid} {data}")

    def speed(self, kmh: int) -> None:
        self.web.speed(kmh)


@pytest.fixture(scope="module")
def car(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Car]:
    from eccm.sim.gnss import NmeaPty, Route

    route = Route(latitude=CENTRE[0], longitude=CENTRE[1], radius=RADIUS_M)
    with (
        NmeaPty(route, rate_hz=2.0) as gnss,
        web_daemon(
            tmp_path_factory.mktemp("records"),
            OBD_FAST_COMMANDS="RPM,SPEED,ENGINE_LOAD,THROTTLE_POS,MAF",
            SAMPLE_INTERVAL="0.2",
            FILE_ROTATION_SECONDS="300",
            GPS_POSITION_MONITORING="yes",
            GPS_INTERFACE=gnss.path,
        ) as web,
    ):
        try:
            yield Car(web, web.daemon.web.url)
        finally:
            web.emu.answer.clear()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_login_and_wrong_secret_refused(car: Car, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(car.url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "secret").is_displayed(), "the login form")
    browser.find_element(By.ID, "secret").send_keys("not the secret, but long enough to try")
    browser.find_element(By.ID, "login-button").click()
    wait_for(browser, lambda d: text(d, "#login-error") == "Wrong secret.", "'Wrong secret.'")
    assert not browser.find_element(By.ID, "app").is_displayed()
    # The logger answered: no red "offline" badge over its login form.
    assert not browser.find_element(By.ID, "conn").is_displayed(), text(browser, "#conn")
    # The refused login left no session: a reload shows the form again.
    browser.get(car.url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "secret").is_displayed(), "the form again")
    # The right secret (the limiter lets a loopback address try again after its delay).
    browser.find_element(By.ID, "secret").send_keys(SECRET)
    browser.find_element(By.ID, "login-button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "app").is_displayed(), "the dashboard")
    assert text(browser, "#car-name") == "web-car"
    wait_for(browser, lambda d: text(d, "#conn") == "live", "the badge, live")
    cookie = browser.get_cookie("eccm_session")
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # script cannot read it
    # Logging out ends the session.
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "secret").is_displayed(), "the form")
    browser.get(car.url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "secret").is_displayed(), "no session")


def test_an_ended_session_closes_the_live_feed_behind_the_login_form(
    car: Car, browser: Any
) -> None:
    # A trial's find: the page showed "log in again" but kept its WebSocket open (and,
    # once closed, reconnected every few seconds, asking for a session that had ended).
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "const W = window.WebSocket; window.__sockets = [];"
            "window.WebSocket = class extends W { constructor(...a) { super(...a);"
            " window.__sockets.push(this); } };"
        },
    )
    login(browser, car.url, SECRET)
    wait_for(browser, lambda d: text(d, "#conn") == "live", "the live feed")
    browser.delete_cookie("eccm_session")  # the session is gone (expired, secret changed)
    wait_for(browser, lambda d: d.find_element(By.ID, "secret").is_displayed(), "the form")
    wait_for(
        browser,
        lambda d: d.execute_script(
            "return window.__sockets.every((s) => s.readyState === WebSocket.CLOSED)"
        ),
        "every live socket closed",
    )
    opened = browser.execute_script("return window.__sockets.length")
    assert attr(browser, "#conn", "data-state") == "off"
    assert not browser.find_element(By.ID, "conn").is_displayed()  # no badge over the form
    # No new one behind the form: its reconnection would have come within 0.5 s.
    browser.execute_script("return new Promise((done) => setTimeout(done, 1500))")
    assert browser.execute_script("return window.__sockets.length") == opened


def test_live_rpm_follows_the_car(car: Car, browser: Any) -> None:
    login(browser, car.url, SECRET)
    gauge = '#gauges [data-name="RPM"]'
    wait_for(browser, lambda d: attr(d, gauge, "data-state") == "fresh", "a fresh RPM")
    try:
        for rpm in (2000, 3250):  # 41 0C A B: RPM = (256 A + B) / 4
            raw = rpm * 4
            car.answer("RPM", "0C", f"{raw >> 8:02X} {raw & 0xFF:02X}")
            shown = wait_for(
                browser,
                lambda d, rpm=rpm: (
                    attr(d, gauge, "data-value") == f"{rpm}"
                    or attr(d, gauge, "data-value") == f"{rpm}.0"
                ),
                f"{rpm} rpm",
            )
            assert shown
            # The page shows it as a current reading: younger than its staleness bound.
            assert attr(browser, gauge, "data-state") == "fresh"
            assert text(browser, f"{gauge} .num").replace(",", "") == str(rpm)
        rate = browser.execute_script("return window.eccmLive.shown")
        assert rate > 0
    finally:
        car.emu.answer.pop("RPM", None)


def test_live_values_go_stale_when_the_adapter_stalls(car: Car, browser: Any) -> None:
    login(browser, car.url, SECRET)
    gauge = '#gauges [data-name="RPM"]'
    wait_for(browser, lambda d: attr(d, gauge, "data-state") == "fresh", "a fresh RPM")
    # A request that holds the adapter: no reading until it ends, the hub drops the old
    # RPM, the LIVE messages go on without it, and the page's last value ages.
    release = threading.Event()
    held = car.daemon.link.submit(lambda _conn: release.wait(WAIT), timeout=WAIT, priority=True)
    try:
        wait_for(browser, lambda d: attr(d, gauge, "data-state") == "stale", "a stale RPM")
        assert text(browser, f"{gauge} .num") == "—"  # never the last number
        assert text(browser, f"{gauge} .age").startswith("stale")
    finally:
        release.set()
    held.result(WAIT)
    wait_for(browser, lambda d: attr(d, gauge, "data-state") == "fresh", "a fresh RPM again")


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[0] + b[0]) / 2)
    dy = math.radians(a[0] - b[0]) * 6_371_000
    dx = math.radians(a[1] - b[1]) * 6_371_000 * math.cos(lat)
    return math.hypot(dx, dy)


def test_map_shows_the_position_from_the_nmea_feed(car: Car, browser: Any) -> None:
    login(browser, car.url, SECRET)
    open_page(browser, "map")
    pos = "#gnss-pos"
    wait_for(browser, lambda d: attr(d, pos, "data-lat") is not None, "a position")
    lat = float(attr(browser, pos, "data-lat") or "nan")
    lon = float(attr(browser, pos, "data-lon") or "nan")
    # On the simulated receiver's circle, around a place no default could give.
    assert abs(_metres((lat, lon), CENTRE) - RADIUS_M) < 30, (lat, lon)
    assert text(browser, "#gnss-sats") == "9" and text(browser, "#gnss-fix") == "yes"
    # The track grows as the receiver moves, and the canvas draws it, with a scale bar.
    wait_for(browser, lambda d: int(text(d, "#gnss-points") or 0) >= 3, "three track points")
    assert attr(browser, "#map", "data-scale")
    colours = browser.execute_script(
        """
        const c = document.getElementById('map');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let track = 0, here = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (px[i] === 0x4c && px[i + 1] === 0xc2 && px[i + 2] === 0xff) track++;
          if (px[i] === 0xff && px[i + 1] === 0xb0 && px[i + 2] === 0x20) here++;
        }
        return [track, here];
        """
    )
    assert colours[0] > 20 and colours[1] > 20, colours  # track line and position marker
    # A page opened mid-drive (here: reloaded with nothing remembered) gets the trip's track
    # from the logger at once, not only the points it sees from then on.
    browser.execute_script("sessionStorage.clear(); window.eccmOld = true; location.reload();")
    wait_for(
        browser,
        lambda d: d.execute_script(
            "return window.eccmOld === undefined && document.readyState === 'complete'"
        ),
        "the reload",
    )
    open_page(browser, "map")
    loaded = wait_for(browser, lambda d: attr(d, "#map", "data-track-loaded"), "the track")
    assert int(loaded) >= 3


def test_dtc_clear_at_standstill_reaches_the_car_and_is_refused_while_moving(
    car: Car, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    from tests.emulator import stored_dtcs

    car.emu.counters.pop("cmd_dtc_cleared", None)
    login(browser, car.url, SECRET)
    try:
        with stored_dtcs(["0143"]):
            car.speed(0x32)
            open_page(browser, "diagnostics")
            wait_for(
                browser, lambda d: attr(d, '#dtc-stored [data-code="P0143"]', "data-code"), "P0143"
            )
            assert "O2 Sensor Circuit Low Voltage" in text(browser, "#dtc-stored")
            assert attr(browser, "#mil", "data-state") == "on"
            # Moving: refused before any dialog, and nothing reaches the car.
            browser.find_element(By.ID, "dtc-clear").click()
            wait_for(browser, lambda d: "moving" in text(d, "#dtc-message"), "the refusal")
            assert not browser.execute_script("return document.getElementById('clear-dialog').open")
            assert not car.emu.counters.get("cmd_dtc_cleared")
            # At standstill: the dialog; Cancel clears nothing.
            car.speed(0)
            wait_for(browser, lambda d: d.find_element(By.ID, "dtc-clear").is_enabled(), "button")
            browser.find_element(By.ID, "dtc-clear").click()
            wait_for(
                browser, lambda d: d.find_element(By.ID, "clear-dialog").is_displayed(), "dialog"
            )
            assert "readiness" in text(browser, "#clear-warning")
            browser.find_element(By.ID, "clear-cancel").click()
            wait_for(browser, lambda d: "Nothing was cleared" in text(d, "#dtc-message"), "cancel")
            assert not car.emu.counters.get("cmd_dtc_cleared")
            # The explicit confirmation clears the codes in the car.
            wait_for(browser, lambda d: d.find_element(By.ID, "dtc-clear").is_enabled(), "button")
            browser.find_element(By.ID, "dtc-clear").click()
            wait_for(
                browser, lambda d: d.find_element(By.ID, "clear-dialog").is_displayed(), "dialog"
            )
            browser.find_element(By.ID, "clear-confirm").click()
            wait_for(browser, lambda d: text(d, "#dtc-message") == "Trouble codes cleared.", "done")
            assert car.emu.counters.get("cmd_dtc_cleared") is True
            wait_for(browser, lambda d: "No stored code." in text(d, "#dtc-stored"), "no codes")
    finally:
        car.emu.answer.pop("SPEED", None)
        car.emu.counters.pop("cmd_dtc_cleared", None)


class _Other(http.server.BaseHTTPRequestHandler):
    """Another site: a page whose form posts to the logger (a classic CSRF attempt)."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>elsewhere</title>"
            f'<form method="post" action="{self.target}/api/upload" enctype="text/plain">'
            '<input name="{&quot;x&quot;:&quot;" value="&quot;}">'
            '<button id="go" type="submit">win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_cross_site_post_refused(car: Car, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, car.url, SECRET)
    handler = type("Handler", (_Other,), {"target": car.url})
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    closed_before = car.daemon.recorder.files_closed
    try:
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/")
        wait_for(browser, lambda d: d.find_element(By.ID, "go").click() or True, "the form")
        # Read in the poll that found it: the body is replaced as the POST navigates, and a
        # read after the wait could meet the node of the page before (stale on a busy machine).
        body = wait_for(
            browser,
            lambda d: (t := d.find_element(By.TAG_NAME, "body").text) and "ERROR" in t and t,
            "a reply",
        )
        reply = json.loads(body)
    finally:
        other.shutdown()
        other.server_close()
    assert reply["class"] == "ERROR" and reply["code"] in ("forbidden", "noauth"), reply
    assert car.daemon.recorder.files_closed == closed_before  # UPLOAD would close the file
    # The session itself is untouched: the dashboard still works.
    browser.get(car.url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "app").is_displayed(), "the dashboard")


def _png() -> bytes:
    """A 256 x 256 grey PNG: what a tile server sends."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x50" * 256 for _ in range(256))
    header = struct.pack(">IIBBBBB", 256, 256, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class _Tiles(http.server.BaseHTTPRequestHandler):
    asked: list[str]
    png = b""

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_map_tiles_only_from_the_configured_server(tmp_path: Path, car: Car, browser: Any) -> None:
    from eccm.sim.gnss import NmeaPty, Route

    # Without WEB_MAP_TILES (the module's daemon) the map asks no server for anything.
    login(browser, car.url, SECRET)
    open_page(browser, "map")
    wait_for(browser, lambda d: attr(d, "#map", "data-scale"), "the map")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(name.startswith(car.url) for name in loaded), loaded
    assert not browser.find_element("id", "map-attribution").is_displayed()
    # With it, tiles come from that server, around the position.
    asked: list[str] = []
    handler = type("Handler", (_Tiles,), {"asked": asked, "png": _png()})
    tiles = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=tiles.serve_forever, daemon=True)
    thread.start()
    route = Route(latitude=CENTRE[0], longitude=CENTRE[1], radius=RADIUS_M)
    template = f"http://127.0.0.1:{tiles.server_address[1]}/tiles/{{z}}/{{x}}/{{y}}.png"
    try:
        with (
            NmeaPty(route, rate_hz=2.0) as gnss,
            web_daemon(
                tmp_path,
                GPS_POSITION_MONITORING="yes",
                GPS_INTERFACE=gnss.path,
                WEB_MAP_TILES=template,
            ) as web,
        ):
            login(browser, web.daemon.web.url, SECRET)
            open_page(browser, "map")
            wait_for(browser, lambda d: len(asked) >= 2, "tile requests")
            wait_for(browser, lambda d: attr(d, "#gnss-pos", "data-lat"), "a position")
            lat = float(attr(browser, "#gnss-pos", "data-lat") or "nan")
            lon = float(attr(browser, "#gnss-pos", "data-lon") or "nan")
            assert "127.0.0.1" in text(browser, "#map-attribution")
    finally:
        tiles.shutdown()
        tiles.server_close()
    z = int(asked[-1].split("/")[-3])
    n = 2**z
    here_x = int((lon + 180) / 360 * n)
    s = math.sin(math.radians(lat))
    here_y = int((0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n)
    assert 12 <= z <= 19  # a street-level view of a 600 m circle
    assert any(p.endswith(f"/{z}/{here_x}/{here_y}.png") for p in asked), (asked, here_x, here_y)


def test_no_error_in_the_browser_console(car: Car, browser: Any) -> None:
    login(browser, car.url, SECRET)
    # Before login the page asked /api/session and got its 401: expected, and read away.
    before = [e for e in errors(console(browser)) if "/api/session" not in e]
    assert before == []
    for page in ("live", "map", "trip", "diagnostics", "status", "files", "live"):
        open_page(browser, page)
        if page == "diagnostics":
            wait_for(
                browser, lambda d: text(d, "#dtc-stored") not in ("", "Not read yet."), "codes"
            )
        if page == "files":
            wait_for(
                browser, lambda d: text(d, "#files-table tbody") or text(d, "#files-empty"), "files"
            )
    wait_for(browser, lambda d: d.execute_script("return window.eccmLive.shown") > 20, "updates")
    assert errors(console(browser)) == []


def test_page_assets_are_in_the_package() -> None:
    """Works offline: nothing the page loads comes from another origin."""
    static = Path(__file__).resolve().parents[1] / "eccm" / "web" / "static"
    for path in static.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            body = path.read_text(encoding="utf-8")
            assert "http://" not in body.replace("http://www.w3.org", "") and "//cdn" not in body, (
                path
            )
            assert "<script>" not in body and "style=" not in body, path  # nothing inline


def test_live_page_says_when_the_adapter_is_not_connected(tmp_path: Path, browser: Any) -> None:
    """An unplugged adapter showed "live" and seven dashes, and nothing to say why."""
    from eccm.app import Daemon
    from tests.web_helpers import web_config

    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), tmp_path / "records"))
    daemon.start()
    try:
        assert daemon.web is not None
        login(browser, daemon.web.url, SECRET)
        notice = "#live-notice"
        wait_for(browser, lambda d: "not connected" in text(d, notice), "why no value shows")
        assert "plugged in" in text(browser, notice)
    finally:
        daemon.stop()


def test_live_page_has_no_notice_with_the_adapter_connected(car: Car, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, car.url, SECRET)
    gauge = '#gauges [data-name="RPM"]'
    wait_for(browser, lambda d: attr(d, gauge, "data-state") == "fresh", "a fresh RPM")
    wait_for(browser, lambda d: not d.find_element(By.ID, "live-notice").is_displayed(), "none")


def test_status_and_trip_numbers_carry_their_units(car: Car, browser: Any) -> None:
    """The adapter's voltage showed as a bare "13.3" and the trip's top RPM as "4,209"."""
    login(browser, car.url, SECRET)
    open_page(browser, "status")
    volts = '[data-key="elm_voltage"] .v'
    wait_for(browser, lambda d: text(d, volts), "the adapter's voltage")
    assert text(browser, volts).endswith(" V"), text(browser, volts)
    assert "adapter voltage" in text(browser, '[data-key="elm_voltage"]').lower()
    open_page(browser, "trip")
    rpm = '[data-key="max-rpm"] .v'
    wait_for(browser, lambda d: any(c.isdigit() for c in text(d, rpm)), "the trip's top RPM")
    assert text(browser, rpm).endswith(" rpm"), text(browser, rpm)


def test_previous_trips_fit_a_phone_without_sideways_scrolling(tmp_path: Path) -> None:
    """Six columns of the previous trips were 570 px wide on a 360 px phone: fuel, L/100 km
    and cost were off the screen, behind a sideways scroll."""
    from eccm.app import Daemon
    from tests.web_helpers import web_config

    records = tmp_path / "records"
    records.mkdir()
    summary = {
        "first_time": "2026-11-30T07:41:09.250Z",
        "totals": {
            "distance_km": 123.4,
            "duration_s": 3900,
            "fuel_l": 12.34,
            "l_per_100km": 10.0,
            "fuel_cost": 23.45,
        },
    }
    (records / "web-car_20261130T074109Z_summary.json").write_text(json.dumps(summary))
    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), records))
    daemon.start()
    try:
        assert daemon.web is not None
        with chromium((360, 740)) as phone:
            login(phone, daemon.web.url, SECRET)
            open_page(phone, "trip")
            row = "#trips-table tbody tr"
            wait_for(phone, lambda d: "123.4 km" in text(d, row), "the previous trip")
            wrap = phone.execute_script(
                "const w = document.querySelector('.table-wrap');"
                "return [w.scrollWidth, w.clientWidth, document.documentElement.scrollWidth];"
            )
            assert wrap[0] <= wrap[1] and wrap[2] <= 360, wrap
            # Each value still says what it is, the header being gone.
            for label, value in (("Fuel", "12.34 L"), ("Cost", "23.45"), ("L/100 km", "10.0")):
                cell = f'{row} td[data-label="{label}"]'
                assert text(phone, cell).split()[-1] == value.split()[-1], text(phone, cell)
                shown = phone.execute_script(
                    "return getComputedStyle(document.querySelector(arguments[0]), '::before')"
                    ".content;",
                    cell,
                )
                assert shown == json.dumps(label), shown
    finally:
        daemon.stop()


def test_dtc_page_drops_not_connected_once_the_adapter_answers(tmp_path: Path) -> None:
    """Opened before the adapter was plugged in, the DTC page went on saying "The OBD
    adapter is not connected." under the codes it had read since."""
    from selenium.webdriver.common.by import By

    from eccm.app import Daemon
    from eccm.sim.car import emulated_car
    from tests.web_helpers import web_config

    adapter = tmp_path / "adapter"
    with emulated_car("car") as emu:
        cfg = web_config(str(adapter), tmp_path / "records", OBD_RECONNECT_MAX_INTERVAL="1")
        daemon = Daemon(cfg)
        daemon.start()
        try:
            assert daemon.web is not None
            with chromium() as phone:
                login(phone, daemon.web.url, SECRET)
                open_page(phone, "diagnostics")
                wait_for(phone, lambda d: "not connected" in text(d, "#dtc-message"), "why")
                # Nothing read: the lists say so, not an empty list under each heading.
                assert text(phone, "#dtc-stored") == text(phone, "#dtc-pending") == "Not read yet."
                adapter.symlink_to(emu.get_pty())  # plugged in
                wait_for(phone, lambda d: "No stored code" in text(d, "#dtc-stored"), "the codes")
                wait_for(
                    phone, lambda d: not d.find_element(By.ID, "dtc-message").is_displayed(), "ok"
                )
        finally:
            daemon.stop()


def test_map_says_gnss_is_off_rather_than_waiting_for_a_fix(tmp_path: Path) -> None:
    """With GPS_POSITION_MONITORING=no the Map page said "Waiting for a GNSS fix…" and
    "no fix" in red, for ever."""
    from eccm.app import Daemon
    from tests.web_helpers import web_config

    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), tmp_path / "records"))
    daemon.start()
    try:
        assert daemon.web is not None
        with chromium() as phone:
            login(phone, daemon.web.url, SECRET)
            open_page(phone, "map")
            wait_for(phone, lambda d: text(d, "#gnss-fix") == "GNSS off", "GNSS off")
            message = wait_for(phone, lambda d: attr(d, "#map", "data-message"), "the map's")
            assert "off" in message, message
            assert attr(phone, "#gnss-facts .fact", "data-level") == ""
    finally:
        daemon.stop()


def test_update_rate_is_empty_without_values(tmp_path: Path, browser: Any) -> None:
    """With the adapter unplugged no value arrives, yet the page counted the trip
    computer's poll and the stream's empty messages as updates ("3.8 updates/s"; a stream
    of 5 a second read as 6)."""
    from eccm.app import Daemon
    from tests.web_helpers import web_config

    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), tmp_path / "records"))
    daemon.start()
    try:
        assert daemon.web is not None
        login(browser, daemon.web.url, SECRET)
        wait_for(browser, lambda d: "not connected" in text(d, "#live-notice"), "no adapter")
        # The trip computer's gauges got their (empty) poll: it counts for nothing.
        script = "return document.querySelector(arguments[0]).dataset.state"
        gauge = '#gauges [data-name="L_PER_100KM"]'
        wait_for(browser, lambda d: d.execute_script(script, gauge) == "none", "the poll")
        assert text(browser, "#live-delay") == ""
    finally:
        daemon.stop()


def test_upload_refusal_says_why(tmp_path: Path, browser: Any) -> None:
    """With no S3 server configured "Upload now" said only "Not allowed with this secret or
    by the logger's configuration.", not which setting."""
    from selenium.webdriver.common.by import By

    from eccm.app import Daemon
    from tests.web_helpers import web_config

    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), tmp_path / "records"))
    daemon.start()
    try:
        assert daemon.web is not None
        login(browser, daemon.web.url, SECRET)
        open_page(browser, "files")
        browser.find_element(By.ID, "upload-now").click()
        wait_for(browser, lambda d: "S3_SERVER_ENDPOINT" in text(d, "#upload-message"), "why")
        assert text(browser, "#upload-message").startswith("Not allowed: uploads are off")
    finally:
        daemon.stop()


def test_fuel_economy_unit_stays_on_one_line_on_a_phone(car: Car) -> None:
    """On a phone the Trip page's "12.8 L/100 km" broke between "L/100" and "km"."""
    script = """
        const node = document.querySelector(arguments[0]).firstChild;
        const at = (part) => {
            const r = document.createRange();
            const i = node.textContent.indexOf(part);
            r.setStart(node, i);
            r.setEnd(node, i + part.length);
            return r.getBoundingClientRect().top;
        };
        return [at("L/100"), at("km")];
    """
    with chromium((360, 740)) as phone:
        login(phone, car.url, SECRET)
        try:
            car.speed(0x32)
            open_page(phone, "trip")
            average = '[data-key="economy"] .v'
            wait_for(phone, lambda d: text(d, average)[:1].isdigit(), "the average economy")
            unit, km = phone.execute_script(script, average)
            assert unit == km, (text(phone, average), unit, km)
        finally:
            car.speed(0)


def test_a_swipe_on_the_map_scrolls_the_page_on_a_phone(tmp_path: Path) -> None:
    """The map (62 % of a phone's height) took every touch for itself, with no pan or zoom
    to use it for: a swipe on it did not scroll, so the facts below were hard to reach."""
    from eccm.app import Daemon
    from tests.web_helpers import web_config

    daemon = Daemon(web_config(str(tmp_path / "no-adapter"), tmp_path / "records"))
    daemon.start()
    try:
        assert daemon.web is not None
        with chromium((360, 740)) as phone:
            phone.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True})
            login(phone, daemon.web.url, SECRET)
            open_page(phone, "map")
            box = phone.execute_script(
                "const r = document.getElementById('map').getBoundingClientRect();"
                "return [r.left + r.width / 2, r.top + r.height / 2];"
            )
            x, y = box
            touch = "Input.dispatchTouchEvent"
            phone.execute_cdp_cmd(touch, {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
            for step in range(1, 11):
                point = {"x": x, "y": y - 20 * step}  # a finger moving up: the page goes down
                phone.execute_cdp_cmd(touch, {"type": "touchMove", "touchPoints": [point]})
            phone.execute_cdp_cmd(touch, {"type": "touchEnd", "touchPoints": []})
            wait_for(phone, lambda d: d.execute_script("return window.scrollY") > 50, "a scroll")
    finally:
        daemon.stop()


def test_chart_time_labels_do_not_run_together_on_a_phone(car: Car) -> None:
    """On a 360 px phone the chart's minute labels touched: "-5 min-4 min"."""
    with chromium((360, 740)) as phone:
        login(phone, car.url, SECRET)
        ticks = json.loads(wait_for(phone, lambda d: attr(d, "#chart", "data-ticks"), "labels"))
        labels = [label for label, _, _ in ticks]
        assert labels[0] == "-5 min" and labels[-1] == "now", ticks
        for (_, _, before), (_, after, _) in itertools.pairwise(ticks):
            assert after >= before + 8, ticks


def test_a_spent_login_link_page_is_in_the_dashboards_style(car: Car) -> None:
    """A spent or mistyped login link gave a bright white page in a serif font (its own
    unstyled HTML): at night in the car, a flash of white."""
    with chromium((360, 740)) as phone:
        phone.get(car.url + "/login/AQAAAaJDfbB5NtuwvM3qV1r1lwhqT5xypO0bKjAYoGgAc9_A5w")
        wait_for(phone, lambda d: "not valid" in text(d, "h1"), "the page")
        look = "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];"
        wait_for(
            phone,
            lambda d: d.execute_script(look, "body", "backgroundColor") == "rgb(11, 15, 20)",
            "the dark background",
        )
        assert phone.execute_script(look, "a", "color") == "rgb(76, 194, 255)"
        assert not [e for e in errors(console(phone)) if "/login/" not in e]  # CSP let it in
