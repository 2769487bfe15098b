"""What to publish when: the pure decisions of the publisher (an injected clock, no I/O).

- State and position every MQTT_INTERVAL while they change; unchanged (a parked car, every
  value null) they are repeated only every ``heartbeat`` seconds: live values cost bytes.
- Status when a field a user watches changes (counters and uptime do not count), DTC when
  the report changes, the trip summary once per finished trip.
- While disconnected only the latest message per topic is kept (:class:`Outbox`): these
  are live values, the files hold the history. At connect everything retained is sent
  again (a broker restarted without persistence has lost it).
- Reconnection waits a capped, jittered backoff (:class:`eccm.backoff.Backoff`).
- A refusal (credentials, certificate) is logged once per distinct reason
  (:class:`Problems`) and kept for STATUS's ``last_error`` until a connection succeeds.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eccm.backoff import Backoff
from eccm.mqtt import payloads

HEARTBEAT = 60.0  # seconds: an unchanged state is repeated this often at most
RECONNECT_BASE = 1.0
RECONNECT_CAP = 60.0
# Seconds a connection must hold before it counts as a good one: only then does the backoff
# start over. A broker that takes the connection and drops it at once (another client with
# the same client id takes it over, every time it reconnects) otherwise had ECCM reconnect
# every ~2 s for good, logging two lines each time: 86,000 lines a day.
STABLE = 30.0
# Short connections in a row that make it the broker's habit (said once), not a restart.
FLAPPING = 2
# STATUS fields that change on every row or second: not a reason for a message.
_VOLATILE_STATUS = frozenset(
    {"rows", "rows_total", "uptime_s", "fast_hz", "slow_hz", "ondemand_busy", "gnss_dropped"}
)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int = 0


class Outbox:
    """Messages waiting for a connection: the latest per topic, oldest topic first."""

    def __init__(self) -> None:
        self._waiting: dict[str, Message] = {}

    def put(self, message: Message) -> None:
        self._waiting.pop(message.topic, None)
        self._waiting[message.topic] = message

    def drain(self) -> list[Message]:
        out = list(self._waiting.values())
        self._waiting.clear()
        return out

    def __len__(self) -> int:
        return len(self._waiting)


def status_key(body: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k not in _VOLATILE_STATUS}


class Plan:
    """The messages of the live topics. ``offer_*`` return what to send now (nothing
    while disconnected: the message waits in the outbox, replacing an older one)."""

    def __init__(self, interval: float, heartbeat: float = HEARTBEAT) -> None:
        self.interval = interval
        self.heartbeat = max(heartbeat, interval)
        self.outbox = Outbox()
        self.connected = False
        self._next_tick = float("-inf")
        # topic -> (what was compared, monotonic time it was sent or queued)
        self._last: dict[str, tuple[object, float]] = {}
        self._events: set[str] = set()  # topics of events: never sent again at connect

    # -- time ----------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        """Whether the interval's state and position are due; if so the next is scheduled."""
        if now < self._next_tick:
            return False
        # Keep the cadence (no drift), but never a burst to catch up after a stall: two
        # messages are at least half an interval apart.
        if self._next_tick == float("-inf"):  # the first one (after a connect)
            self._next_tick = now + self.interval
        else:
            self._next_tick = max(self._next_tick + self.interval, now + self.interval / 2)
        return True

    def wait(self, now: float) -> float:
        return max(0.0, self._next_tick - now)

    # -- connection ----------------------------------------------------------------------
    def on_connect(self, availability: str) -> list[Message]:
        """Connected: ``online`` first, then what waited. Every retained topic is sent again
        at its next turn (the broker may have lost it), and the next tick is now."""
        self.connected = True
        self._last = {t: last for t, last in self._last.items() if t in self._events}
        self._next_tick = float("-inf")
        return [Message(availability, payloads.ONLINE, True, 1), *self.outbox.drain()]

    def on_disconnect(self) -> None:
        self.connected = False

    # -- offers --------------------------------------------------------------------------
    def offer_periodic(self, topic: str, body: Mapping[str, object], now: float) -> list[Message]:
        """State or position (retained): sent when changed, else once per heartbeat."""
        key = payloads.without_time(body)
        return self._offer(topic, body, key, now, retain=True, qos=0, repeat=self.heartbeat)

    def offer_status(self, topic: str, body: Mapping[str, object], now: float) -> list[Message]:
        return self._offer(topic, body, status_key(body), now, retain=True, qos=1, repeat=None)

    def offer_dtc(self, topic: str, body: Mapping[str, object], now: float) -> list[Message]:
        return self._offer(topic, body, body, now, retain=True, qos=1, repeat=None)

    def offer_trip(self, topic: str, body: Mapping[str, object], now: float) -> list[Message]:
        """A finished trip: once per trip id (not retained: an event, not a state)."""
        self._events.add(topic)
        return self._offer(topic, body, body.get("trip"), now, retain=False, qos=1, repeat=None)

    def result(self, topic: str, body: Mapping[str, object]) -> list[Message]:
        """A command's answer: sent now or never (its asker is gone with the connection)."""
        if not self.connected:
            return []
        return [Message(topic, payloads.encode(body), False, 1)]

    def _offer(
        self,
        topic: str,
        body: Mapping[str, object],
        key: object,
        now: float,
        *,
        retain: bool,
        qos: int,
        repeat: float | None,
    ) -> list[Message]:
        last = self._last.get(topic)
        if last is not None and last[0] == key and (repeat is None or now - last[1] < repeat):
            return []
        self._last[topic] = (key, now)
        message = Message(topic, payloads.encode(body), retain, qos)
        if not self.connected:
            self.outbox.put(message)
            return []
        return [message]

    def remember_trip(self, topic: str, trip: object) -> None:
        """The trip already finished when the publisher started: not news."""
        self._events.add(topic)
        self._last.setdefault(topic, (trip, float("-inf")))


class Discovery:
    """Home Assistant's config messages: each sent once per connection and again when it
    changes; a config of this car no longer wanted (seen on the broker, or sent earlier)
    removed with an empty retained message."""

    def __init__(self) -> None:
        self._wanted: dict[str, bytes] = {}
        self._sent: dict[str, bytes] = {}

    def reset(self) -> None:
        self._sent.clear()

    def update(self, wanted: Mapping[str, Mapping[str, object]]) -> list[Message]:
        self._wanted = {topic: payloads.encode(config) for topic, config in wanted.items()}
        out = [
            Message(topic, body, True, 1)
            for topic, body in self._wanted.items()
            if self._sent.get(topic) != body
        ]
        out += [Message(t, b"", True, 1) for t in self._sent if t not in self._wanted]
        self._sent = dict(self._wanted)
        return out

    def seen(self, topic: str, payload: bytes) -> Message | None:
        """A retained config of this car on the broker: remove it if it is not wanted."""
        if not payload or topic in self._wanted:
            return None
        return Message(topic, b"", True, 1)


class Reconnect:
    """When to try the broker again: at once, then a capped, jittered backoff that starts
    over only after a connection held for :data:`STABLE` seconds."""

    def __init__(self, cap: float = RECONNECT_CAP, draw: Callable[[], float] | None = None) -> None:
        self._backoff = Backoff(base=RECONNECT_BASE, cap=cap, jitter=0.25)
        self._draw = draw
        self.next_attempt = float("-inf")
        self.last_delay = 0.0
        self._up_since: float | None = None
        self.short = 0  # connections in a row that the broker dropped before STABLE s

    def due(self, now: float) -> bool:
        return now >= self.next_attempt

    def held(self, now: float) -> bool:
        """Has the current connection been up for STABLE seconds?"""
        return self._up_since is not None and now - self._up_since >= STABLE

    def failed(self, now: float) -> float:
        """A connection failed or was lost at ``now``: the delay before the next try."""
        if self.held(now):
            self._backoff = self._backoff.succeeded()
            self.short = 0
        elif self._up_since is not None:
            self.short += 1
        self._up_since = None
        self._backoff = self._backoff.failed()
        delay = self._backoff.delay(None if self._draw is None else self._draw())
        self.next_attempt = now + delay
        self.last_delay = delay
        return delay

    def succeeded(self, now: float) -> None:
        """Connected (the broker accepted) at ``now``."""
        self._up_since = now


class Problems:
    """The current connection problem: logged once per distinct reason, shown in STATUS."""

    def __init__(self) -> None:
        self.last_error: str | None = None

    def report(self, reason: str) -> bool:
        """Whether this reason is new (to be logged)."""
        new = reason != self.last_error
        self.last_error = reason
        return new

    def clear(self) -> bool:
        """Connected: whether there was a problem (to log the recovery)."""
        had = self.last_error is not None
        self.last_error = None
        return had


# -- what a failure means, in the user's words ---------------------------------------------
_CREDENTIAL_REASONS = ("bad user name or password", "not authorized", "not authorised")


def refusal_text(reason: str, broker: str, username: str) -> str:
    """The broker's CONNACK refusal as one line naming the keys to check."""
    if any(r in reason.lower() for r in _CREDENTIAL_REASONS):
        who = f"MQTT_USERNAME={username!r}" if username else "no MQTT_USERNAME (anonymous)"
        return (
            f"MQTT broker {broker} refused the login ({reason}): check MQTT_USERNAME "
            f"and MQTT_PASSWORD ({who})"
        )
    if "identifier" in reason.lower():
        return f"MQTT broker {broker} refused the client id ({reason}): check MQTT_CLIENT_ID"
    return f"MQTT broker {broker} refused the connection ({reason})"


def failure_text(exc: BaseException, broker: str, ca_file: str, *, tls: bool = False) -> str:
    """A connection attempt's exception as one line naming the key to check (``tls``:
    mqtts://)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = f"MQTT_CA_FILE={ca_file!r}" if ca_file else "the system's CAs (MQTT_CA_FILE is empty)"
        return (
            f"MQTT broker {broker}: its TLS certificate is not trusted "
            f"({exc.verify_message or exc.reason}): check MQTT_CA_FILE (now {ca}) "
            "and the host name in MQTT_BROKER"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"MQTT broker {broker}: TLS failed ({exc.reason or exc}): is it mqtts:// "
            "on a TLS port (MQTT_BROKER)?"
        )
    if tls and isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        # The TCP connection was taken, then closed at the TLS handshake's first message:
        # a broker's plain port (1883) read it as a broken MQTT packet. Not "not reachable".
        return (
            f"MQTT broker {broker} closed the connection at the TLS handshake: is it "
            "mqtts:// on a TLS port, usually 8883 (MQTT_BROKER)?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"MQTT broker {broker} refused the TCP connection: is it running (MQTT_BROKER)?"
    if isinstance(exc, TimeoutError):
        return f"MQTT broker {broker} did not answer in time (MQTT_BROKER)"
    if isinstance(exc, OSError):
        return f"MQTT broker {broker} not reachable: {exc.strerror or exc} (MQTT_BROKER)"
    return f"MQTT broker {broker}: {type(exc).__name__}: {exc}"
