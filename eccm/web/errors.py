"""Errors of the web API: the socket's ERROR body, with the HTTP status of SPEC §7."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from aiohttp import web

from eccm import replies
from eccm.service import ServiceError, error_for

STATUS: dict[str, int] = {
    "bad_request": 400,
    "noauth": 401,
    "auth_failed": 401,
    "forbidden": 403,
    "unknown_value": 404,
    "unknown_command": 404,
    "vehicle_moving": 409,
    "confirm_invalid": 409,
    "busy": 429,
    "server_error": 500,
    "not_connected": 503,
    "obd_timeout": 504,
}


# The socket's encoding: compact, and never NaN (the values were made plain before).
dumps = functools.partial(json.dumps, allow_nan=False, separators=(",", ":"))


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def http_error(code: str, message: str) -> ServiceError:
    """An error of one of the codes above (noauth and auth_failed are the web's own)."""
    return error_for(code, message)


def error_response(exc: ServiceError) -> web.Response:
    status = STATUS.get(exc.code, 500)
    response = json_response(replies.error(exc.code, exc.message, exc.retry_after), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="eccm"'
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response
