"""The calls to the service that may wait on the car (a command, a DTC read): run one at
a time on a worker thread of their own, so that the publisher's loop (and its keep-alive)
never waits for a slow ECU. Results go back to the loop through ``post``."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from eccm import replies
from eccm.mqtt.payloads import BadCommand, Command
from eccm.service import Caller, Scope, Service, ServiceError

log = logging.getLogger(__name__)

MAX_WAITING = 4  # commands waiting for the worker; more are answered busy
OFF = "MQTT commands are off: set MQTT_ALLOW_COMMANDS=yes to obey upload, dtc_read and dtc_clear"

Body = dict[str, object]


def scopes_for(allow_commands: bool) -> frozenset[Scope]:
    """MQTT's scopes, granted by config: ``read`` always (it publishes values); with
    MQTT_ALLOW_COMMANDS=yes ``control`` (upload) and ``diagnose`` (DTC clear), the latter
    still bound by SOCKET_SERVER_ALLOW_DTC_CLEAR, standstill and the confirmation token
    in the service, as for every front end."""
    if allow_commands:
        return frozenset({Scope.READ, Scope.CONTROL, Scope.DIAGNOSE})
    return frozenset({Scope.READ})


class Actions:
    """``on_result(body)``: a command's reply; ``on_dtc(body)``: a fresh DTC reply (from a
    command or a periodic read). Both are called on the worker thread."""

    def __init__(
        self,
        service: Service,
        caller: Caller,
        *,
        allow_commands: bool,
        on_result: Callable[[Body], None],
        on_dtc: Callable[[Body], None],
    ) -> None:
        self._service = service
        self._caller = caller
        self._allow = allow_commands
        self._on_result = on_result
        self._on_dtc = on_dtc
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(MAX_WAITING)
        self._thread = threading.Thread(target=self._run, name="mqtt-actions", daemon=True)
        self._dtc_waiting = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        # The thread is a daemon: a stuck ECU read does not hold the exit.
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._thread.join(timeout)

    # -- from the loop's thread ----------------------------------------------------------
    def command(self, parsed: Command | BadCommand) -> None:
        if isinstance(parsed, BadCommand):
            self._on_result(replies.error(parsed.code, parsed.message))
            return
        if not self._allow:
            log.info("MQTT command %s refused: MQTT_ALLOW_COMMANDS=no", parsed.name)
            self._on_result(replies.error("forbidden", OFF))
            return
        try:
            self._jobs.put_nowait(lambda: self._on_result(self._run_command(parsed)))
        except queue.Full:
            self._on_result(
                replies.error("busy", "earlier MQTT commands are still running (retry in 1 s)", 1.0)
            )

    def refresh_dtc(self) -> None:
        """Read the trouble codes (once: a read already waiting is enough)."""
        if self._dtc_waiting.is_set():
            return
        self._dtc_waiting.set()
        try:
            self._jobs.put_nowait(self._read_dtc)
        except queue.Full:
            self._dtc_waiting.clear()

    # -- on the worker -------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("MQTT action failed")

    def _read_dtc(self) -> None:
        self._dtc_waiting.clear()
        try:
            body = replies.dtc(self._service.dtc_report(self._caller))
        except ServiceError as exc:
            log.debug("DTC read for MQTT not done: %s (%s)", exc.code, exc.message)
            return
        self._on_dtc(body)

    def _run_command(self, cmd: Command) -> Body:
        log.info("MQTT command %s%s", cmd.name, " confirm" if cmd.token else "")
        service, caller = self._service, self._caller
        try:
            if cmd.name == "upload":
                return replies.upload(service.upload(caller))
            if cmd.name == "dtc_read":
                body = replies.dtc(service.dtc_report(caller))
                self._on_dtc(body)
                return body
            if cmd.token is None:
                return replies.confirm(service.request_clear(caller))
            result = service.confirm_clear(caller, cmd.token)
            self.refresh_dtc()  # queued behind this answer: the asker hears first
            return replies.cleared(result)
        except ServiceError as exc:
            return replies.error(exc.code, exc.message, exc.retry_after)
        except Exception as exc:  # a bug must not kill the worker: the asker gets an answer
            log.exception("MQTT command %s failed", cmd.name)
            return replies.error("server_error", f"{cmd.name} failed: {type(exc).__name__}")
