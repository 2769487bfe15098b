"""The boto3 S3 client for AWS and S3-compatible servers, and what its errors mean.

Every failure is classified once here into a sentence a user can act on; the uploader logs
it once per failing run and keeps it for STATUS.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from eccm.upload.settings import UploadSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Timeouts:
    """Per-request limits. Few attempts: the uploader's schedule does the long backoff."""

    connect: float = 10.0
    read: float = 30.0
    attempts: int = 3  # total, first one included (botocore's standard retry mode)


DEFAULT_TIMEOUTS = S3Timeouts()


def is_aws(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def build_client(s: UploadSettings, timeouts: S3Timeouts = DEFAULT_TIMEOUTS) -> Any:
    """A boto3 S3 client configured for ``s`` (no request is sent)."""
    import boto3
    from botocore.config import Config as BotoConfig

    boto_cfg = BotoConfig(
        region_name=s.region,
        signature_version="s3v4",
        # Most S3-compatible servers only know path-style; AWS prefers virtual hosts.
        s3={"addressing_style": "virtual" if is_aws(s.endpoint) else "path"},
        # boto3 >= 1.36 adds CRC checksums (aws-chunked trailers) to every PUT by default,
        # which several S3-compatible servers reject; Content-MD5 does the job everywhere.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        retries={"mode": "standard", "total_max_attempts": timeouts.attempts},
        tcp_keepalive=True,
    )
    verify = s.verify_tls
    if verify is False:
        # One warning here instead of urllib3's warning on every request.
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        log.warning("S3_VERIFY_TLS=no: the certificate of %s is not checked", s.endpoint)
    kwargs: dict[str, Any] = {}
    if s.access_key:
        kwargs["aws_access_key_id"] = s.access_key
        kwargs["aws_secret_access_key"] = s.secret_key
    # else boto3's default chain: environment, shared files, instance profile.
    from eccm.upload.models import slim_session

    session = boto3.session.Session(botocore_session=slim_session())
    client = session.client("s3", endpoint_url=s.endpoint, verify=verify, config=boto_cfg, **kwargs)
    if not is_aws(s.endpoint):
        client.meta.events.register("before-call.s3", _no_region_redirect)
    return client


def _no_region_redirect(context: dict[str, Any], **kwargs: Any) -> None:
    """Mark a request as redirected already, so botocore's region redirector leaves it.

    That redirector takes any 301/302/307 for AWS's "wrong region" answer and asks the
    bucket's region with a HeadBucket; a hotspot's login page (a car's link meets one when
    its data plan runs out) redirects that too, and so on until a RecursionError, after
    hundreds of requests. An S3-compatible server has no region to redirect to (botocore
    would send the request to amazonaws.com): its redirect is reported as such instead.
    """
    context.setdefault("s3_redirect", {})["redirected"] = True


class NotS3Answer(Exception):
    """A 2xx answer without what every S3 server sends (an ETag on a PUT or a HEAD): a
    web page answered in the server's place, such as a hotspot's login page."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"no ETag in the answer to a {operation}")
        self.operation = operation


@dataclass(frozen=True)
class Failure:
    """Why a run stopped. ``transient`` failures are the network's; others need a person."""

    kind: str  # offline, timeout, server, credentials, bucket, access, clock, region, tls, other
    transient: bool
    message: str


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}
_CLOCK_CODES = {"RequestTimeTooSkewed", "RequestExpired"}
_SERVER_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "BadDigest",  # the body changed in transit: send it again
    "ConditionalRequestConflict",
    "OperationAborted",
}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) if isinstance(status, int) else 0
    return 0


def _kept(transient: bool) -> str:
    return "files are kept and retried" if transient else "files are kept"


# AWS refuses a request signed more than 15 minutes away from its own clock; most
# S3-compatible servers copy the limit (SeaweedFS does).
CLOCK_SKEW_LIMIT = 15 * 60.0
_SET_THE_CLOCK = (
    "set the system time (NTP: `timedatectl set-ntp true`, or chrony fed by gpsd; ECCM's "
    "GNSS time stamps rows but does not set the system clock)"
)


def signing_time() -> datetime:
    """The time botocore signs requests with (the system clock), timezone-aware."""
    from botocore import auth

    now: datetime = auth.get_current_datetime()  # type: ignore[attr-defined]
    return now.replace(tzinfo=UTC)


def server_skew(exc: BaseException) -> float | None:
    """Seconds the server's clock (its Date header) is ahead of ours; None if unknown."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    server_time = response.get("Error", {}).get("ServerTime") or headers.get("date")
    if not isinstance(server_time, str):
        return None
    try:
        if "," in server_time:  # an HTTP date
            server = parsedate_to_datetime(server_time)
        else:  # an ISO time, as AWS puts in RequestTimeTooSkewed's body
            server = datetime.fromisoformat(server_time.replace("Z", "+00:00"))
    except (TypeError, ValueError, IndexError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return (server - signing_time()).total_seconds()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds >= 2 * 365 * 86400:
        return f"{seconds / (365.25 * 86400):.0f} years"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"


def _clock_failure(ep: str, code: str, skew: float | None) -> Failure:
    if skew is None:
        said = f"{ep} says this device's clock is wrong ({code})"
    else:
        now = signing_time()
        way = "behind" if skew > 0 else "ahead of"
        said = (
            f"{ep} refused the request ({code}): this device's clock is {_span(skew)} {way} "
            f"the server's (device {_iso(now)}, server {_iso(now + timedelta(seconds=skew))})"
        )
    return Failure(
        "clock", False, f"{said}: {_SET_THE_CLOCK}; {_kept(False)} and sent once the clock is right"
    )


def _network_reason(exc: BaseException) -> str:
    """What went wrong on the wire, without the URL (it names an object and would make
    every run's message different, defeating the log's repeat suppression)."""
    cause = getattr(exc, "kwargs", {}).get("error")
    text = str(cause if cause is not None else exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip().rstrip(".").lower()
    # urllib3 puts an object's repr and the URL into its messages: both go.
    text = re.sub(r"<[^>]* at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"(for |endpoint URL: )?\"?https?://\S+", "", text)
    return _short(text.strip(' :;,."')) or type(exc).__name__


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"certificate verify failed: ([^(')]+)", text)
    if found:
        return found.group(1).strip()
    # "EOF occurred in violation of protocol (_ssl.c:2427)" and the like, from the
    # underlying error (botocore's own text adds the URL of the object)
    cause = str(getattr(exc, "kwargs", {}).get("error", text))
    found = re.search(r"([A-Za-z][^(')\[\]]*?) \(_ssl\.c:\d+\)", cause)
    return found.group(1).strip() if found else _network_reason(exc)


def _tls_clock_problem(text: str) -> str | None:
    if "certificate is not yet valid" in text:
        return "not yet valid"
    if "certificate has expired" in text:
        return "expired"
    return None


def classify(
    exc: BaseException, s: UploadSettings, timeouts: S3Timeouts = DEFAULT_TIMEOUTS
) -> Failure:
    """One sentence naming the cause and what to do."""
    from botocore import exceptions as bx

    ep = s.endpoint
    bucket = s.bucket
    text = str(exc)
    about_certificate = any(
        t in text.lower() for t in ("certificate verify failed", "certificate_verify_failed")
    )
    if isinstance(exc, bx.SSLError) and not about_certificate:
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return Failure(
                "tls",
                False,
                f"{ep} does not speak TLS (wrong version number): if the server is plain "
                f"http, write S3_SERVER_ENDPOINT=http://...; {_kept(False)}",
            )
        # Not about the certificate: the link broke during the handshake or mid-stream
        # (EOF, reset), an everyday event on a cellular link.
        return Failure(
            "offline",
            True,
            f"the TLS connection to {ep} broke ({_tls_reason(exc)}); {_kept(True)}",
        )
    if isinstance(exc, bx.SSLError) or about_certificate:
        when = _tls_clock_problem(text)
        if when is not None:
            # A Pi without a real-time clock that thinks it is 2016 meets this long before
            # S3 could complain about the signature's date.
            now = _iso(datetime.now(UTC))
            extra = "" if when == "not yet valid" else " (or it really expired)"
            return Failure(
                "clock",
                False,
                f"the TLS certificate of {ep} is {when} by this device's clock ({now}): the "
                f"clock is probably wrong{extra}: {_SET_THE_CLOCK}; {_kept(False)}",
            )
        return Failure(
            "tls",
            False,
            f"the TLS certificate of {ep} is not trusted ({_tls_reason(exc)}): set "
            "S3_VERIFY_TLS to the path of the CA bundle that signed it, or fix the server's "
            f"certificate; {_kept(False)}",
        )
    if isinstance(exc, NotS3Answer):
        return Failure(
            "offline",
            True,
            f"{ep} answered like a web page, not an S3 server ({exc}): a hotspot's or "
            f"mobile operator's login page instead of the S3 server?; {_kept(True)}",
        )
    if isinstance(exc, bx.ConnectTimeoutError):
        return Failure(
            "timeout",
            True,
            f"no connection to {ep} within {timeouts.connect:g} s (offline?); {_kept(True)}",
        )
    if isinstance(exc, bx.ReadTimeoutError):
        return Failure(
            "timeout",
            True,
            # botocore retries a timed-out request: say how long it really took.
            f"{ep} did not answer within {timeouts.read:g} s"
            + (f" ({timeouts.attempts} tries)" if timeouts.attempts > 1 else "")
            + f"; {_kept(True)}",
        )
    if isinstance(exc, bx.ConnectionClosedError):
        return Failure(
            "offline",
            True,
            f"the connection to {ep} dropped before the answer (an unstable link?); {_kept(True)}",
        )
    if isinstance(exc, bx.EndpointConnectionError):
        return Failure(
            "offline", True, f"cannot reach {ep} ({_network_reason(exc)}); {_kept(True)}"
        )
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError):
        return Failure(
            "offline",
            True,
            f"connection to {ep} failed ({_network_reason(exc)}); {_kept(True)}",
        )
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return Failure(
            "credentials",
            False,
            "no S3 credentials: set S3_SERVER_AK and S3_SERVER_SK in the configuration "
            "(or AWS credentials in the environment or an instance profile); "
            f"{_kept(False)}",
        )
    if isinstance(exc, bx.ClientError):
        return _classify_answer(exc, ep, bucket, s)
    if isinstance(exc, bx.ParamValidationError):
        # Refused by botocore before any request: the configuration, not the network.
        if "bucket name" in text.lower():
            return Failure(
                "bucket",
                False,
                f"S3_SERVER_BUCKET={bucket!r} is not a valid bucket name (letters, digits, "
                f"'.', '-' and '_'): fix S3_SERVER_BUCKET; {_kept(False)}",
            )
        return Failure("other", False, f"S3 request refused: {_short(exc)}; {_kept(False)}")
    if isinstance(exc, bx.BotoCoreError):
        return Failure("other", True, f"S3 client error: {_short(exc)}; {_kept(True)}")
    return Failure("other", True, f"{type(exc).__name__}: {_short(exc)}; {_kept(True)}")


def _classify_answer(exc: BaseException, ep: str, bucket: str, s: UploadSettings) -> Failure:
    """The server answered with an error."""
    code = error_code(exc)
    status = http_status(exc)
    if code in _CLOCK_CODES:
        return _clock_failure(ep, code, server_skew(exc))
    if status in (400, 401, 403):
        # Servers differ in what they answer to a request signed at a wrong time
        # (RequestTimeTooSkewed, SignatureDoesNotMatch, AccessDenied, and a HEAD's error
        # has no body at all): the Date header of the answer tells.
        skew = server_skew(exc)
        if skew is not None and abs(skew) > CLOCK_SKEW_LIMIT:
            return _clock_failure(ep, code or str(status), skew)
    error = getattr(exc, "response", {}).get("Error", {})
    said = str(error.get("Message", ""))
    if status in (302, 303, 307, 308) and code not in ("PermanentRedirect", "TemporaryRedirect"):
        # Not S3's own redirect (that has an XML body and a code): a hotspot's login page,
        # a mobile operator's "top up" page, a proxy. It goes away without a person here.
        headers = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
        location = str((headers or {}).get("location", "")) or "an unknown page"
        return Failure(
            "offline",
            True,
            f"{ep} answered with a redirect ({status}) to {_short(location, 120)}: a "
            f"hotspot's or mobile operator's login page instead of the S3 server?; "
            f"{_kept(True)}",
        )
    if (
        code in ("PermanentRedirect", "IllegalLocationConstraintException")
        or status == 301
        or (code == "AuthorizationHeaderMalformed" and "region" in said.lower())
    ):
        # AWS and MinIO sign and route by region; a wrong one is not a wrong key.
        expected = error.get("Region") or error.get("BucketRegion")
        hint = (
            f" (the server expects {expected!r})"
            if expected
            else f" ({_short(said)})"
            if said
            else ""
        )
        return Failure(
            "region",
            False,
            f"{ep} refused S3_SERVER_REGION={s.region!r} for bucket {bucket!r} "
            f"({code or status}){hint}: set S3_SERVER_REGION to the bucket's region; "
            f"{_kept(False)}",
        )
    if code in _CREDENTIAL_CODES:
        which = "S3_SERVER_AK" if code == "InvalidAccessKeyId" else "S3_SERVER_AK and S3_SERVER_SK"
        return Failure(
            "credentials",
            False,
            f"{ep} rejected the credentials ({code}): check {which}; {_kept(False)}",
        )
    if code == "NoSuchBucket":
        return Failure(
            "bucket",
            False,
            f"bucket {bucket!r} does not exist at {ep}: create it or fix "
            f"S3_SERVER_BUCKET; {_kept(False)}",
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        operation = getattr(exc, "operation_name", "") or "a request"
        prefix = s.key_prefix.strip("/")
        where = f"{prefix}/*" if prefix else "the bucket"
        # A refused HEAD has no body, so no code: a wrong key looks the same.
        or_wrong = " (or the key or secret is wrong)" if operation == "HeadObject" else ""
        return Failure(
            "access",
            False,
            f"access denied to bucket {bucket!r} at {ep} ({code or status} on {operation}): "
            f"the key needs s3:PutObject and s3:GetObject on {where} (a HEAD verifies each "
            f"upload){or_wrong}; {_kept(False)}",
        )
    # Without an S3 error body (a proxy's or a gateway's page), botocore's code is the
    # status again: said once.
    answer = f"{status}" if code in ("", str(status)) else f"{status} {code}"
    if code in _SERVER_CODES or status >= 500:
        what = "" if code and code != str(status) else " (not an S3 error: a proxy or gateway?)"
        return Failure("server", True, f"{ep} answered {answer}{what}; {_kept(True)}")
    return Failure("other", False, f"{ep} answered {answer} ({_short(exc)}); {_kept(False)}")


def _short(exc: BaseException | str, limit: int = 160) -> str:
    text = str(exc).replace("\n", " ") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
