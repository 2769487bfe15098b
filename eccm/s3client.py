"""The boto3 S3 client for AWS and S3-compatible servers, and what its errors mean.

Every failure is classified once here into a sentence a user can act on; the uploader logs
it once per failing run and keeps it for STATUS.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eccm.config import Config

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


def verify_arg(cfg: Config) -> bool | str:
    return cfg.s3_verify_tls


def build_client(cfg: Config, timeouts: S3Timeouts = DEFAULT_TIMEOUTS) -> Any:
    """A boto3 S3 client configured for ``cfg`` (no request is sent)."""
    import boto3
    from botocore.config import Config as BotoConfig

    boto_cfg = BotoConfig(
        region_name=cfg.s3_server_region,
        signature_version="s3v4",
        # Most S3-compatible servers only know path-style; AWS prefers virtual hosts.
        s3={"addressing_style": "virtual" if is_aws(cfg.s3_server_endpoint) else "path"},
        # boto3 >= 1.36 adds CRC checksums (aws-chunked trailers) to every PUT by default,
        # which several S3-compatible servers reject; Content-MD5 does the job everywhere.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        retries={"mode": "standard", "total_max_attempts": timeouts.attempts},
        tcp_keepalive=True,
    )
    verify = verify_arg(cfg)
    if verify is False:
        # One warning here instead of urllib3's warning on every request.
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        log.warning(
            "S3_VERIFY_TLS=no: the certificate of %s is not checked", cfg.s3_server_endpoint
        )
    kwargs: dict[str, Any] = {}
    if cfg.s3_server_ak:
        kwargs["aws_access_key_id"] = cfg.s3_server_ak
        kwargs["aws_secret_access_key"] = cfg.s3_server_sk
    # else boto3's default chain: environment, shared files, instance profile.
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=cfg.s3_server_endpoint, verify=verify, config=boto_cfg, **kwargs
    )


@dataclass(frozen=True)
class Failure:
    """Why a run stopped. ``transient`` failures are the network's; others need a person."""

    kind: str  # offline, timeout, server, credentials, bucket, access, clock, tls, other
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


def classify(exc: BaseException, cfg: Config, timeouts: S3Timeouts = DEFAULT_TIMEOUTS) -> Failure:
    """One sentence naming the cause and what to do."""
    from botocore import exceptions as bx

    ep = cfg.s3_server_endpoint
    bucket = cfg.s3_server_bucket
    if isinstance(exc, bx.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Failure(
            "tls",
            False,
            f"the TLS certificate of {ep} is not trusted ({_short(exc)}): set S3_VERIFY_TLS "
            f"to the path of the CA bundle that signed it, or fix the server's certificate; "
            f"{_kept(False)}",
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
            f"{ep} did not answer within {timeouts.read:g} s; {_kept(True)}",
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return Failure("offline", True, f"cannot reach {ep} ({_short(exc)}); {_kept(True)}")
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError):
        return Failure("offline", True, f"connection to {ep} failed ({_short(exc)}); {_kept(True)}")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return Failure(
            "credentials",
            False,
            "no S3 credentials: set S3_SERVER_AK and S3_SERVER_SK in the configuration "
            "(or AWS credentials in the environment or an instance profile); "
            f"{_kept(False)}",
        )
    if isinstance(exc, bx.ClientError):
        code = error_code(exc)
        status = http_status(exc)
        if code in _CREDENTIAL_CODES:
            return Failure(
                "credentials",
                False,
                f"{ep} rejected the credentials ({code}): check S3_SERVER_AK and "
                f"S3_SERVER_SK; {_kept(False)}",
            )
        if code == "NoSuchBucket":
            return Failure(
                "bucket",
                False,
                f"bucket {bucket!r} does not exist at {ep}: create it or fix "
                f"S3_SERVER_BUCKET; {_kept(False)}",
            )
        if code in _CLOCK_CODES:
            return Failure(
                "clock",
                False,
                f"{ep} says this device's clock is wrong ({code}): set the system time "
                f"(NTP, or wait for a GNSS fix); {_kept(False)}",
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return Failure(
                "access",
                False,
                f"access denied to bucket {bucket!r} at {ep} ({code or status}): the key "
                "needs s3:PutObject and s3:GetObject under S3_KEY_PREFIX "
                "(or the secret is wrong); "
                f"{_kept(False)}",
            )
        if code in _SERVER_CODES or status >= 500:
            return Failure("server", True, f"{ep} answered {status} {code}; {_kept(True)}")
        return Failure(
            "other", False, f"{ep} answered {status} {code} ({_short(exc)}); {_kept(False)}"
        )
    if isinstance(exc, bx.BotoCoreError):
        return Failure("other", True, f"S3 client error: {_short(exc)}; {_kept(True)}")
    return Failure("other", True, f"{type(exc).__name__}: {_short(exc)}; {_kept(True)}")


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).replace("\n", " ") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
