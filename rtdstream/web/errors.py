"""JSON errors for the HTTP API: a client always gets ``{"error": ...}``, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

JSON_PATHS = ("/api/", "/healthz", "/metrics")


class BadParameter(Exception):
    """A query parameter is missing or malformed; becomes a 400 naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def dumps(obj: Any) -> str:
    # Row keys from SQLAlchemy are str subclasses, which orjson only takes with this option.
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn errors on the API paths into JSON: 400 for bad parameters, 404/405, and 500 for bugs."""
    if not request.path.startswith(JSON_PATHS):
        return await handler(request)
    try:
        return await handler(request)
    except BadParameter as exc:
        return json_error(400, str(exc), parameter=exc.parameter)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path_qs)
        return json_error(500, "internal error (logged by the server)")
