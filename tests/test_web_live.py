"""The LIVE stream's backpressure: a browser that stops reading costs one pending message.

The stream under test is the real :class:`LiveClient` over the real service (on the
in-memory backend of the control tests); the browser is a stand-in whose sends block
until it is told to read, which a real socket only does after megabytes of buffers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eccm.clock import SystemClock
from eccm.service import ALL_SCOPES, Caller, Service
from eccm.web import live
from eccm.web.live import Changes, LiveClient
from tests.control_fakes import FakeBackend

WAIT = 30.0


class StuckBrowser:
    """A WebSocket whose peer reads only when ``reading`` is set."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.attempts = 0
        self.closed = asyncio.Event()

    async def send_str(self, text: str) -> None:
        self.attempts += 1
        await self.reading.wait()
        self.sent.append(json.loads(text))

    async def close(self) -> bool:
        self.closed.set()
        return True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        await self.closed.wait()  # the browser sends nothing; the stream ends at close
        return
        yield


async def _until(predicate: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _stuck_then_reading() -> StuckBrowser:
    backend = FakeBackend(SystemClock())
    service = Service(backend, SystemClock())
    browser = StuckBrowser()
    changes = Changes(asyncio.get_running_loop())
    client = LiveClient(browser, service, Caller("test", ALL_SCOPES), changes)  # type: ignore[arg-type]
    task = asyncio.create_task(client.run())
    for rpm in range(800, 2000, 100):  # new rows while the browser is stuck
        backend.set("RPM", float(rpm), "revolutions_per_minute")
        changes.notify()
        await asyncio.sleep(0.05)
    dropped = client.dropped
    # One more offer after the last row: the pending message holds the newest values.
    await _until(lambda: client.dropped > dropped, "an update replaced after the last row")
    assert browser.attempts == 1  # one send waits; nothing else is queued behind it
    browser.reading.set()
    await _until(lambda: len(browser.sent) >= 3, "the stream to go on once it reads")
    await browser.close()
    await asyncio.wait_for(task, WAIT)
    return browser


def test_a_stuck_browser_gets_the_newest_values_not_a_backlog() -> None:
    browser = asyncio.run(_stuck_then_reading())
    first, second = browser.sent[0], browser.sent[1]
    assert first["class"] == "LIVE" and second["class"] == "LIVE"
    # The message after the stuck one is the newest there was, not the next in a queue.
    assert second["values"]["RPM"]["value"] == 1900.0
    assert first["values"]["RPM"]["value"] < 1900.0


async def _stalled(monkeypatch: pytest.MonkeyPatch) -> StuckBrowser:
    monkeypatch.setattr(live, "STALL", 0.3)
    backend = FakeBackend(SystemClock())
    browser = StuckBrowser()
    changes = Changes(asyncio.get_running_loop())
    client = LiveClient(browser, Service(backend, SystemClock()), Caller("t", ALL_SCOPES), changes)  # type: ignore[arg-type]
    await asyncio.wait_for(client.run(), WAIT)
    return browser


def test_a_browser_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    browser = asyncio.run(_stalled(monkeypatch))
    assert browser.closed.is_set() and browser.sent == []
