"""``rtdstream web``: the dashboard, the Socket.IO live view and the HTTP API in one aiohttp process.

Socket.IO follows the original backend (README, Compatibility): Engine.IO v4,
path ``/socket.io/``, polling and websocket, ping every 25 s with a 20 s
timeout, CORS for RTD_CORS_ORIGINS. The process reads the output topics itself
(:mod:`rtdstream.web.feed`), so several can run side by side behind a load
balancer, each serving all data. A broker or database outage degrades it
(``/healthz`` says which) but never stops it serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp_cors
from aiohttp import web

from rtdstream import metrics
from rtdstream.backoff import Backoff
from rtdstream.config import WebSettings
from rtdstream.serve import serve_until_stopped
from rtdstream.web import dashboard
from rtdstream.web.api import HttpApi
from rtdstream.web.auth import require_token
from rtdstream.web.backpressure import BackpressureManager, track_websockets
from rtdstream.web.deadletters import DeadLetterRing
from rtdstream.web.errors import json_errors
from rtdstream.web.feed import TopicFeed
from rtdstream.web.fleet import FleetSummary
from rtdstream.web.guard import GuardedServer, refuse_bad_transport_requests
from rtdstream.web.history import StoredHistory
from rtdstream.web.live import LiveHub
from rtdstream.web.pulse import Pulse
from rtdstream.web.socketio_internals import room_count, session_count
from rtdstream.web.sockets import LiveNamespace
from rtdstream.web.sources import SourceTable

if TYPE_CHECKING:
    from rtdstream.sink.repository import HistoryRepository

log = logging.getLogger(__name__)

DEFAULT_PORT = 4000
PING_INTERVAL = 25
PING_TIMEOUT = 20


class WebView:
    """Everything one web process serves, wired together."""

    def __init__(self, settings: WebSettings, repository: HistoryRepository) -> None:
        self.settings = settings
        self.repository = repository
        self.manager = BackpressureManager(
            max_queue=settings.client_queue, slow_timeout=settings.slow_client_timeout
        )
        self.sio = GuardedServer(
            message_rate=settings.client_message_rate,
            message_burst=settings.client_message_burst,
            async_mode="aiohttp",
            client_manager=self.manager,
            cors_allowed_origins=origin_policy(settings.cors_origins),
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            transports=["polling", "websocket"],
        )
        metrics.WEB_SESSIONS.set_function(lambda: session_count(self.sio))
        metrics.WEB_ROOMS.set_function(lambda: room_count(self.manager))
        self.sources = SourceTable(history=settings.live_history, live_interval=1.0 / settings.live_max_rate)
        self.fleet = FleetSummary()
        self.hub = LiveHub(
            self.sio,
            self.sources,
            batch_interval=settings.live_batch_interval,
            newdata_source=settings.newdata_source,
            fleet=self.fleet,
        )
        self.dead_letters = DeadLetterRing()
        self.feed = TopicFeed(settings, self.hub, self.dead_letters)
        self.history = StoredHistory(self.repository)
        self.api = HttpApi(self.settings, self.repository, self.feed)
        self.pulse = Pulse(
            self.sio,
            self.fleet,
            self.dead_letters,
            checks=self.api.dependency_checks,
            stored_total=self.history.stored_total,
            feed_ready=self.feed.ready.is_set,
            clients=lambda: session_count(self.sio),
        )
        self.sio.register_namespace(
            LiveNamespace(
                self.sources,
                self.history,
                history_size=settings.live_history,
                token=settings.auth_token or None,
                overview=self._overview,
            )
        )

    def _overview(self, now_ms: int) -> dict[str, Any]:
        """What a dashboard that starts watching the overview gets at once (see LiveNamespace.on_overview)."""
        return {
            "fleet": self.fleet.snapshot(now_ms, self.settings.idle_timeout),
            "health": self.pulse.latest_health,
            "deadletters": self.dead_letters.summary(),
        }

    def make_app(self) -> web.Application:
        middlewares = [json_errors, track_websockets(self.manager), refuse_bad_transport_requests(self.sio)]
        if self.settings.auth_token:
            middlewares.append(require_token(self.settings.auth_token))
        app = web.Application(middlewares=middlewares)
        self.sio.attach(app, socketio_path="socket.io")
        self.api.add_routes(app)
        _allow_cross_origin(app, self.settings.cors_origins, paths=("/api/",))
        dashboard.add_routes(app)
        app.cleanup_ctx.append(self._running)
        app.on_shutdown.append(self._close_connections)
        return app

    async def run(self, *, host: str, port: int) -> None:
        await serve_until_stopped(self.make_app(), host=host, port=port, name="web view")

    async def _running(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(self.feed.run(), name="web feed"),
            asyncio.create_task(self.hub.run(), name="web live events"),
            asyncio.create_task(self._load_last_values(), name="web last values"),
            asyncio.create_task(self.pulse.run_fleet(), name="web overview fleet"),
            asyncio.create_task(self.pulse.run_health(), name="web overview health"),
        ]
        for task in tasks:
            task.add_done_callback(_report_crash)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.sio.shutdown()
            await self.repository.close()

    async def _close_connections(self, app: web.Application) -> None:
        await self.manager.close_all()

    async def _load_last_values(self) -> None:
        """Know every stored source's last value, so clients of a restarted web view see no blank."""
        backoff = Backoff(initial=1.0, cap=30.0)
        while (rows := await self.history.latest()) is None:
            await asyncio.sleep(backoff.next())
        for row in rows:
            self.sources.set_last(row["source"], row["time"], row["speed"])
            self.fleet.seed(row["source"], row["time"], row["speed"])
        log.info("web view knows the last value of %d stored sources", len(rows))


def _report_crash(task: asyncio.Task[None]) -> None:
    # A bug, not an outage (those are retried inside): the process keeps serving
    # what it can, and /healthz reports the feed as down.
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


def origin_policy(origins: list[str]) -> Callable[[str | None, Mapping[str, Any]], bool]:
    """Socket.IO's origin check: the listed origins (``*``: any) and the page's own origin.

    The own origin matters because an explicit list replaces python-socketio's
    same-origin default, and the dashboard served by this process must connect.
    """
    allowed = frozenset(origins)

    def is_allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None or "*" in allowed or origin in allowed:
            return True
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http")).split(",")[0].strip()
        host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", "")).split(",")[0].strip()
        return origin == f"{scheme}://{host}"

    return is_allowed


def _allow_cross_origin(app: web.Application, origins: list[str], *, paths: tuple[str, ...]) -> None:
    """CORS headers (and preflight answers) on the API routes for RTD_CORS_ORIGINS."""
    options = aiohttp_cors.ResourceOptions(allow_headers=("Authorization",), expose_headers="*")
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in list(app.router.routes()):
        info = route.resource.get_info() if route.resource is not None else {}
        if str(info.get("path", "")).startswith(paths):
            cors.add(route)
