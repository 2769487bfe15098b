"""The MQTT publisher: paho-mqtt in one thread of its own, calling the service like every
other front end (SPEC §8).

The thread runs paho's loop itself (``Client.loop``): connecting, reconnecting with the
plan's capped backoff, the keep-alive, and every publish happen there; callbacks run there
too. Nothing here is called from the logging path (the publisher reads the service on its
own schedule), so a broker that is down, slow or refusing costs the logging nothing. What
may wait on the car (commands, DTC reads) runs on :class:`eccm.mqtt.actions.Actions`'
worker. The last will is ``offline`` (retained): a power cut shows within 1.5 keep-alives.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from eccm import replies
from eccm.clock import Clock, SystemClock
from eccm.config import Config
from eccm.mqtt import discovery, payloads
from eccm.mqtt.actions import Actions, scopes_for
from eccm.mqtt.payloads import BadCommand, parse_command
from eccm.mqtt.plan import (
    FLAPPING,
    STABLE,
    Discovery,
    Message,
    Plan,
    Problems,
    Reconnect,
    failure_text,
    refusal_text,
)
from eccm.mqtt.settings import MqttSettings
from eccm.mqtt.topics import Topics
from eccm.service import Caller, Service, ServiceError

log = logging.getLogger(__name__)

LOOP_STEP = 0.2  # seconds paho's loop waits for the socket at most (then we tick)
STOP_TIMEOUT = 3.0
MAX_QUEUED = 64  # QoS 1 messages paho may hold while a connection dies


def keepalive_for(interval: float) -> int:
    """Three intervals, 5 to 60 s: the broker sends the last will after 1.5 of these."""
    return int(min(60.0, max(5.0, 3.0 * interval)))


class MqttPublisher:
    @classmethod
    def from_config(
        cls, cfg: Config, service: Service, clock: Clock | None = None
    ) -> MqttPublisher:
        return cls(MqttSettings.from_config(cfg), service, clock)

    def __init__(
        self, settings: MqttSettings, service: Service, clock: Clock | None = None
    ) -> None:
        self._settings = cfg = settings
        self._service = service
        self._clock: Clock = clock or SystemClock()
        self.topics = Topics(cfg.prefix, cfg.discovery_prefix, cfg.car)
        host, port, tls = cfg.host, cfg.port, cfg.tls
        self._host, self._port = host, port
        self.broker = cfg.broker
        # The client is whoever may publish to the command topics: the broker knows, not us.
        self.caller = Caller(
            "mqtt", scopes_for(cfg.allow_commands), front="mqtt", address=f"{host}:{port}"
        )
        self._plan = Plan(cfg.interval)
        self._discovery = Discovery()
        self._reconnect = Reconnect()
        self._problems = Problems()
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "down"  # down, connecting, up
        self._dtc_body: dict[str, object] | None = None
        self._next_dtc = float("-inf")
        self._entities_key: object = None
        self.keepalive = keepalive_for(cfg.interval)
        self.attempts = 0  # connection attempts so far (a figure for tests and logs)
        self._connect_started = 0.0
        # The problem in STATUS is a connection the broker drops at once: it is over only
        # once a connection has held STABLE seconds, not at the next CONNACK.
        self._flapping = False
        self.actions = Actions(
            service,
            self.caller,
            allow_commands=cfg.allow_commands,
            on_result=lambda body: self._post(
                lambda: self._send(self._plan.result(self.topics.cmd_result, body))
            ),
            on_dtc=lambda body: self._post(lambda: self._on_dtc(body)),
        )
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True
        )
        client.will_set(self.topics.availability, payloads.OFFLINE, qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if tls:
            ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            client.tls_set_context(ctx)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- life cycle ----------------------------------------------------------------------
    @property
    def last_error(self) -> str | None:
        """The broker's refusal or the connection failure, for STATUS (None: connected)."""
        return self._problems.last_error

    @property
    def reconnect_delay(self) -> float:
        """Seconds the last reconnection waited (or waits): a figure for tests and STATUS."""
        return self._reconnect.last_delay

    @property
    def connected(self) -> bool:
        return self._state == "up"

    def start(self) -> None:
        self.actions.start()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()
        log.info("MQTT: publishing to %s under %s/", self.broker, self.topics.prefix)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self.actions.stop()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            now = self._clock.monotonic()
            if self._state == "down":
                if self._reconnect.due(now):
                    self._connect(now)
                else:
                    self._stop.wait(min(LOOP_STEP, self._reconnect.next_attempt - now))
            if self._state != "down":
                rc = self._client.loop(LOOP_STEP)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._state != "down":
                    self._lost(f"connection lost ({paho.error_string(rc)})")
            if self._state == "connecting" and now - self._connect_started > self.keepalive:
                # TCP (and TLS) up, but no CONNACK: not a broker, or one that hangs.
                self._problem(self._no_connack(f"nothing in {self.keepalive} s"))
                self._state = "down"
                self._client.disconnect()
                self._reconnect.failed(now)
            if self._flapping and self._state == "up" and self._reconnect.held(now):
                self._flapping = False
                self._problems.clear()
                log.info("MQTT: the connection to %s holds again", self.broker)
            self._drain()
            try:
                self._tick(self._clock.monotonic())
            except Exception:  # a bug must not end the publishing for good
                log.exception("MQTT publisher tick failed")
        self._last_trip()
        self._goodbye()

    def _last_trip(self) -> None:
        """Before the goodbye: the trip the daemon's stop ended (it ends it before stopping
        MQTT) is published like any other, not lost with the stop."""
        if self._state != "up":
            return
        try:
            previous = self._service.trip(self.caller).get("previous")
        except ServiceError:
            return
        if isinstance(previous, Mapping) and previous.get("trip"):
            now = self._clock.monotonic()
            self._send(self._plan.offer_trip(self.topics.trip, payloads.trip_end(previous), now))

    def _connect(self, now: float) -> None:
        self._state = "connecting"
        self._connect_started = now
        self.attempts += 1
        try:
            self._client.connect(self._host, self._port, keepalive=self.keepalive)
        except Exception as exc:
            self._state = "down"
            self._problem(
                failure_text(exc, self.broker, self._settings.ca_file, tls=self._settings.tls)
            )
            self._reconnect.failed(now)

    def _lost(self, reason: str) -> None:
        now = self._clock.monotonic()
        was_up = self._state == "up"
        held = self._reconnect.held(now)
        if self._state == "connecting":
            # TCP (and TLS) were up, but no CONNACK came: not a broker, or a hung one.
            self._problem(self._no_connack(reason))
        self._state = "down"
        self._plan.on_disconnect()
        delay = self._reconnect.failed(now)
        if was_up and (held or self._reconnect.short < FLAPPING):
            log.warning("MQTT: %s from %s; reconnecting in %.1f s", reason, self.broker, delay)
        elif was_up:
            # Said once (Problems), however often it happens: the backoff grows meanwhile.
            self._problem(
                f"MQTT broker {self.broker} drops the connection within {STABLE:g} s of "
                f"accepting it ({reason}): does another client use MQTT_CLIENT_ID="
                f"{self._settings.client_id!r} (a second Pi with the same CAR_IDENTIFIER)? "
                "Reconnecting ever less often, up to once a minute",
                flapping=True,
            )

    def _no_connack(self, reason: str) -> str:
        return (
            f"MQTT broker {self.broker} took the connection but did not answer MQTT's "
            f"CONNECT ({reason}): is it an MQTT broker, with mqtt:// or mqtts:// as it "
            "expects (MQTT_BROKER)?"
        )

    def _goodbye(self) -> None:
        """A clean stop: ``offline`` now (the last will is for the unclean ones)."""
        if self._state == "up":
            info = self._client.publish(
                self.topics.availability, payloads.OFFLINE, qos=1, retain=True
            )
            deadline = self._clock.monotonic() + 1.0
            while not info.is_published() and self._clock.monotonic() < deadline:
                if self._client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self._state = "down"
        self._client.disconnect()
        log.info("MQTT: closed")

    def _post(self, job: Callable[[], None]) -> None:
        """Any thread: run ``job`` on the publisher's thread."""
        self._inbox.put(job)

    def _drain(self) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            job()

    def _send(self, messages: list[Message]) -> None:
        for m in messages:
            self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)

    def _problem(self, text: str, *, flapping: bool = False) -> None:
        # Another problem (the broker gone, a refusal) is over at the next CONNACK.
        self._flapping = flapping
        if self._problems.report(text):
            log.error("%s", text)

    # -- paho's callbacks (on this thread, inside loop()) -----------------------------------
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._problem(refusal_text(str(reason), self.broker, self._settings.username))
            self._state = "down"
            self._plan.on_disconnect()
            self._reconnect.failed(self._clock.monotonic())
            client.disconnect()
            return
        self._state = "up"
        self._reconnect.succeeded(self._clock.monotonic())
        if self._flapping:
            pass  # said once the connection holds (_run), not at every CONNACK
        elif self._problems.clear():
            log.info("MQTT: connected to %s again", self.broker)
        else:
            log.info("MQTT: connected to %s", self.broker)
        client.subscribe(self.topics.cmd, qos=1)
        if self._settings.homeassistant:
            client.subscribe(self.topics.discovery_filter, qos=1)
        self._discovery.reset()
        self._entities_key = None
        self._send(self._plan.on_connect(self.topics.availability))
        if self._dtc_body is not None:
            self._send(
                self._plan.offer_dtc(self.topics.dtc, self._dtc_body, self._clock.monotonic())
            )
        self._next_dtc = float("-inf")  # and read them again now

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._state != "down" and not self._stop.is_set():
            why = str(reason)
            if why == "Unspecified error":
                # paho's name for a socket that closed without MQTT's DISCONNECT: a broker
                # that stopped (a clean mosquitto stop too) or a link that dropped.
                why = "the broker or the network closed the connection"
            self._lost(f"disconnected ({why})")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.cmd:
            if msg.retain:
                # A retained command would be obeyed again at every reconnect.
                log.warning(
                    "MQTT: a retained message on %s is ignored (send commands unretained)",
                    msg.topic,
                )
                return
            try:
                parsed: Any = parse_command(bytes(msg.payload))
            except BadCommand as exc:
                parsed = exc
            self.actions.command(parsed)
        elif msg.retain and self.topics.is_discovery(msg.topic):
            removal = self._discovery.seen(msg.topic, bytes(msg.payload))
            if removal is not None:
                log.info("MQTT: removing Home Assistant entity %s (no longer published)", msg.topic)
                self._send([removal])

    # -- what to publish -------------------------------------------------------------------
    def _tick(self, now: float) -> None:
        if not self._plan.due(now):
            return
        service, caller, topics = self._service, self.caller, self.topics
        send = self._send
        try:
            answer = service.values(caller, None, read_missing=False)
            send(
                self._plan.offer_periodic(
                    topics.state, payloads.state(answer, self._settings.values), now
                )
            )
            send(
                self._plan.offer_periodic(topics.gnss, payloads.gnss(service.position(caller)), now)
            )
            status = replies.status(service.status(caller))
            send(self._plan.offer_status(topics.status, status, now))
            previous = service.trip(caller).get("previous")
            if isinstance(previous, Mapping) and previous.get("trip"):
                send(self._plan.offer_trip(topics.trip, payloads.trip_end(previous), now))
        except ServiceError as exc:
            log.debug("MQTT tick: %s (%s)", exc.code, exc.message)
            return
        if self._plan.connected and self._settings.homeassistant:
            self._publish_discovery(status.get("vin"))
        if status.get("obd") == "connected" and now >= self._next_dtc:
            self._next_dtc = now + self._settings.dtc_interval
            self.actions.refresh_dtc()

    def _publish_discovery(self, vin: object) -> None:
        catalogue = self._service.supported(self.caller)
        key = (id(catalogue), vin)
        if key == self._entities_key:
            return
        self._entities_key = key
        infos = {v.name: v for v in catalogue}
        values = [_describe(name, infos.get(name)) for name in self._settings.values]
        wanted = discovery.entities(
            self.topics,
            values,
            vin if isinstance(vin, str) else None,
            position=self._settings.gnss,
        )
        self._send(self._discovery.update(discovery.config_topics(self.topics, wanted)))

    def _on_dtc(self, body: dict[str, object]) -> None:
        self._dtc_body = body
        self._send(self._plan.offer_dtc(self.topics.dtc, body, self._clock.monotonic()))


def _describe(name: str, info: Any) -> tuple[str, str | None, str]:
    """(name, python-OBD unit, description) of a value: the catalogue's when the car gave
    it, else python-OBD's own (a value not logged yet still gets its unit)."""
    if info is not None and info.unit:
        return name, info.unit, info.description
    import obd

    from eccm.obd.values import describe

    unit, desc = describe(obd.commands[name])
    return name, unit or None, (info.description if info is not None else "") or desc
