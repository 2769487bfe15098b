"""The body of ``eccm query``: authenticate with HMAC, send one command, print the replies.

CLI code: it prints (each reply as the line of JSON it is, so that ``jq`` can read it) and
returns an exit code: 0 when the reply is not an ERROR (and when Ctrl-C ends a WATCH), 1
when it is (or a DTC CLEAR is not confirmed), 2 when the daemon cannot be reached or
refuses the secret, 130 when Ctrl-C interrupts anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
from typing import IO, Any

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 30.0  # a DTC read on a slow car takes up to 15 s on the daemon's side
# After failed attempts from an address the daemon holds its next AUTH back, up to 60 s
# (SPEC §5): wait that long for the answer, and say why after AUTH_NOTICE seconds.
AUTH_WAIT = 70.0
AUTH_NOTICE = 3.0
# Seconds within which a `busy` AUTH is tried again: the daemon closes a connection that has
# not authenticated within 10 s (AUTH_TIMEOUT).
BUSY_AUTH_WINDOW = 8.0
EXIT_INTERRUPTED = 130


class _OutputClosed(Exception):
    """Standard output was closed (``eccm query WATCH | head``): stop quietly."""


def _emit(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise _OutputClosed from None


def gen_secret() -> str:
    """A new random SOCKET_SERVER_SECRET: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def hmac_proof(secret: str, nonce: str) -> str:
    """Hex of HMAC-SHA256(key=secret, msg=nonce): what ``AUTH HMAC`` expects."""
    return hmac.new(secret.encode("utf-8"), nonce.encode("ascii"), hashlib.sha256).hexdigest()


class _Lines:
    """Reply lines from the daemon, one JSON object each."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def next(self) -> tuple[str, dict[str, Any]]:
        raw = self._file.readline()
        if not raw:
            raise ConnectionError("the daemon closed the connection")
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        try:
            obj = json.loads(text)
        except ValueError:
            raise ConnectionError(f"not a reply of the control socket: {text[:80]!r}") from None
        if not isinstance(obj, dict):
            raise ConnectionError(f"not a reply of the control socket: {text[:80]!r}")
        return text, obj


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _connect(host: str, port: int, ctx: ssl.SSLContext | None) -> socket.socket:
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is None:
        return raw
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def _confirm(prompt_in: IO[str], interactive: bool) -> bool:
    if interactive:
        print("Clear the stored trouble codes? Type yes to confirm: ", end="", file=sys.stderr)
        sys.stderr.flush()
    answer = prompt_in.readline()
    return answer.strip().lower() in ("yes", "y")


def run_query(
    host: str,
    port: int,
    tls: bool,
    cafile: str | None,
    words: list[str],
    secret: str | None,
    *,
    secret_key: str = "SOCKET_SERVER_SECRET",
) -> int:
    """Authenticate, send ``words`` as one command, print the reply (WATCH: until Ctrl-C).

    ``DTC CLEAR`` asks for a confirmation (a line "yes" on standard input) and then sends
    ``DTC CLEAR CONFIRM <token>`` in the same session, since a token is bound to it.
    ``secret_key`` names the key ``secret`` comes from, for the message when it is empty.
    """
    if not secret:
        print(
            f"eccm query: no secret: set {secret_key} in the config or the "
            f"ECCM_{secret_key} environment variable",
            file=sys.stderr,
        )
        return 2
    if not words:
        print("eccm query: no command given (try HELP)", file=sys.stderr)
        return 2
    tls = tls or cafile is not None  # a CA file to trust only means something with TLS
    if not 0 < port < 65536:
        # getaddrinfo would silently take 70000 for 4464.
        print(f"eccm query: --port {port} is not a TCP port (1 to 65535)", file=sys.stderr)
        return 2
    command = " ".join(words)
    if "\n" in command or "\r" in command:
        print("eccm query: a command is one line", file=sys.stderr)
        return 2
    where = f"{host}:{port}" + (" (TLS)" if tls else "")
    ctx: ssl.SSLContext | None = None
    if tls:
        try:
            ctx = _tls_context(cafile)
        except (OSError, ssl.SSLError) as exc:
            print(
                f"eccm query: --cafile {cafile} cannot be read ({exc}): expected the PEM "
                "certificate of the daemon (SOCKET_SERVER_TLS_CERT) or of its CA",
                file=sys.stderr,
            )
            return 2
    try:
        sock = _connect(host, port, ctx)
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or str(exc)
        if "mismatch" in message:
            advice = (
                "connect with --host set to a name or address the certificate lists in "
                "its subjectAltName, or make a certificate that lists this one"
            )
        else:
            advice = "pass the certificate or its CA with --cafile"
        print(
            f"eccm query: the certificate of {where} is not trusted ({message}): {advice}",
            file=sys.stderr,
        )
        return 2
    except UnicodeError:
        # The resolver's IDNA step refuses an empty or over-long label ("pi..local").
        print(
            f"eccm query: --host {host!r} is not a host name or address: expected e.g. "
            "127.0.0.1, pi.local or ::1",
            file=sys.stderr,
        )
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(
            f"eccm query: cannot connect to {where}: {exc} (is eccm running with "
            "ENABLE_SOCKET_SERVER=yes, and are --host/--port/--tls right?)",
            file=sys.stderr,
        )
        return 2
    try:
        with sock:
            return _session(sock, secret, command, words, tls)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _OutputClosed:
        # Like `yes | head`: the reader left, nothing more to say. Python would complain
        # while flushing stdout at exit, so stdout goes nowhere from now on.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except TimeoutError:
        print(f"eccm query: no reply from {where} in time", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(f"eccm query: {where}: {exc}", file=sys.stderr)
        return 2


def _is_busy(reply: dict[str, object]) -> bool:
    return reply.get("class") == "ERROR" and reply.get("code") == "busy"


def _session(sock: socket.socket, secret: str, command: str, words: list[str], tls: bool) -> int:
    sock.settimeout(REPLY_TIMEOUT)
    lines = _Lines(sock)
    try:
        _text, hello = lines.next()
    except ConnectionError as exc:
        if tls:
            raise
        # A TLS daemon waits for a handshake and closes after 10 s: say what may be wrong.
        raise ConnectionError(
            f"{exc} before its greeting: if it speaks TLS (SOCKET_SERVER_TLS_CERT is set), "
            "add --tls"
        ) from None
    if hello.get("class") != "HELLO":
        print(f"eccm query: unexpected greeting: {_text}", file=sys.stderr)
        return 2
    nonce = str(hello.get("nonce", ""))

    def send(line: str) -> None:
        sock.sendall(line.encode("utf-8") + b"\n")

    send(f"AUTH HMAC {hmac_proof(secret, nonce)}")
    notice = threading.Timer(
        AUTH_NOTICE,
        lambda: print(
            "eccm query: waiting: the daemon holds authentication back after failed "
            "attempts from this address (up to 60 s)",
            file=sys.stderr,
            flush=True,
        ),
    )
    notice.daemon = True
    sock.settimeout(AUTH_WAIT)
    notice.start()
    try:
        text, reply = lines.next()
    finally:
        notice.cancel()
    # Another AUTH from this address is being held back (someone, perhaps another query,
    # failed lately): wait for it once, while the daemon's AUTH_TIMEOUT leaves time.
    give_up = time.monotonic() + BUSY_AUTH_WINDOW
    while _is_busy(reply):
        wait = reply.get("retry_after")
        if not isinstance(wait, int | float) or time.monotonic() + wait > give_up:
            _emit(text)
            print(
                "eccm query: another AUTH from this address is being held back by the daemon "
                "after failed attempts: try again in a minute",
                file=sys.stderr,
            )
            return 2
        time.sleep(max(0.0, float(wait)))
        send(f"AUTH HMAC {hmac_proof(secret, nonce)}")
        sock.settimeout(AUTH_WAIT)
        text, reply = lines.next()
    sock.settimeout(REPLY_TIMEOUT)
    if reply.get("class") != "AUTH" or not reply.get("ok"):
        _emit(text)
        print("eccm query: authentication refused: check the secret", file=sys.stderr)
        return 2
    verb = [w.upper() for w in words]
    send(command)
    if verb == ["QUIT"]:  # `QUIT now` is refused (bad_request): its reply is read below
        return 0
    text, reply = lines.next()
    _emit(text)
    if verb[:1] == ["WATCH"] and reply.get("class") == "WATCH" and reply.get("watching"):
        sock.settimeout(None)  # a WATCH may be quiet for as long as its interval
        try:
            while True:
                text, _obj = lines.next()
                _emit(text)
        except KeyboardInterrupt:  # the way to end a WATCH
            with contextlib.suppress(OSError):  # the daemon may have closed first
                send("QUIT")
            return 0
    if verb == ["DTC", "CLEAR"] and reply.get("class") == "CONFIRM":
        try:
            confirmed = _confirm(sys.stdin, sys.stdin.isatty())
        except KeyboardInterrupt:
            print(file=sys.stderr)  # the prompt's line was left open
            confirmed = False
        if not confirmed:
            print("eccm query: not confirmed: nothing cleared", file=sys.stderr)
            with contextlib.suppress(OSError):
                send("QUIT")
            return 1
        send(f"DTC CLEAR CONFIRM {reply.get('token', '')}")
        text, reply = lines.next()
        _emit(text)
    with contextlib.suppress(OSError):  # the daemon may have closed first
        send("QUIT")
    if reply.get("class") == "ERROR":
        return 1
    if reply.get("class") == "DTC_CLEARED" and not reply.get("ok"):
        return 1
    return 0
