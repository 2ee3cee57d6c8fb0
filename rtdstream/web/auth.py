"""The optional shared token (RTD_AUTH_TOKEN) for Socket.IO and the REST API.

Unset, everything is open, as in the original backend. Set, a Socket.IO client
must send it in its auth payload (``{token}``) or as ``?token=``, and an API
request as ``Authorization: Bearer <token>``. ``/healthz``, ``/metrics`` and
the dashboard's static files stay open: they carry no readings (the dashboard
asks for the token and passes it to Socket.IO).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from rtdstream.web.errors import json_error

PROTECTED_PREFIX = "/api/"


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison, so response timing does not leak the token."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def socket_token(auth: Any, environ: Mapping[str, Any]) -> str | None:
    """The token a Socket.IO client sent: the auth payload first, else the query string."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def bearer_token(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def require_token(expected: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: API requests without the bearer token get 401 with a JSON body."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        protected = request.path.startswith(PROTECTED_PREFIX) and request.method != "OPTIONS"
        if protected and not token_matches(expected, bearer_token(request)):
            response = json_error(401, "missing or wrong bearer token (Authorization: Bearer <RTD_AUTH_TOKEN>)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="rtdstream"'
            return response
        return await handler(request)

    return middleware
