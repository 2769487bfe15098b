"""Debian's chromium, headless, driven through selenium and Debian's chromium-driver.

Nothing here downloads a browser or a driver: both come from apt (``./test.sh`` installs
them when it runs as root), and the tests that need them skip with the reason when they
are missing. Every wait is bounded (selenium's timeouts and :data:`WAIT`), so a page that
never shows something fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (412, 915)  # CSS pixels of a common phone held upright
WAIT = 30.0  # seconds any one thing may take to show on the page
T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install {package} (./test.sh does as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def chromium(size: tuple[int, int] = PHONE, scale: float = 1.0) -> Iterator[Any]:
    """A headless chromium at ``size`` CSS pixels, its console kept for :func:`console`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--password-store=basic",
        f"--window-size={size[0]},{size[1]}",
        f"--force-device-scale-factor={scale}",
    ):
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="eccm-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is named: selenium then never looks one up (Selenium Manager downloads).
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        # The window size excludes nothing in headless mode; the viewport is the size asked.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": scale, "mobile": True},
        )
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console(driver: Any) -> list[dict[str, Any]]:
    """The browser console's entries since the last call (chromium clears them on read)."""
    return list(driver.get_log("browser"))


def errors(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]


def wait_for(driver: Any, check: Callable[[Any], T | None], what: str, timeout: float = WAIT) -> T:
    """The first true answer of ``check(driver)``; fails naming ``what`` after ``timeout``."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    # A check finds its elements anew at every poll, so an element replaced between
    # the find and the read (a form's POST navigating the page) is only a poll too early.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        result: T = WebDriverWait(
            driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored
        ).until(lambda d: check(d) or None)
    except TimeoutException:
        pytest.fail(f"the page did not show {what} within {timeout:g} s")
    return result


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return str(found[0].text) if found else ""


def attr(driver: Any, css: str, name: str) -> str | None:
    """An attribute of the first element matching ``css`` (None when there is none)."""
    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        css,
        name,
    )
    return None if value is None else str(value)


def login(driver: Any, base: str, secret: str) -> None:
    """Open the page, type ``secret`` into the login form, wait for the Live page."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "secret").is_displayed(), "the login form")
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.ID, "login-button").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "app").is_displayed(), "the dashboard")


def open_page(driver: Any, name: str) -> None:
    """Tap the tab of page ``name`` and wait until it shows."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#tabs a[data-tab="{name}"]').click()
    wait_for(driver, lambda d: d.find_element(By.ID, f"page-{name}").is_displayed(), name)
