"""Fixtures shared by the test modules (helpers live in plain modules: obd_helpers,
s3_helpers, nmea_sentences, listeners, waiting; no test module imports another).

The S3 servers are session fixtures defined in tests/s3server.py and registered here, so
each starts once per test session whichever module asks first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eccm.sim.car import emulated_car
from tests.s3server import s3_any, s3_http, s3_https, tls_cert

__all__ = ["car", "s3_any", "s3_http", "s3_https", "tls_cert"]


@pytest.fixture(scope="module")
def car() -> Iterator[str]:
    """The pseudo-terminal of an emulated car, one per module (it takes seconds to start).

    Modules that need more than the path (test_obd_link, test_control_daemon) define their
    own ``car``, which pytest prefers to this one.
    """
    with emulated_car("car") as emu:
        yield emu.get_pty()
