"""The HTTP API: history from the database, health, metrics.

``/api/readings`` and ``/api/windows`` page by time. A page holds at most
``limit`` rows (capped at :data:`MAX_LIMIT`), newest first unless
``order=asc``; when more rows follow, ``next`` is the URL of the next page
(the same query plus a ``cursor``), else null. ``from``/``to`` take epoch
milliseconds or ISO 8601 times; ``from`` is inclusive, ``to`` exclusive.

The cursor holds the last row's (time, id): rows share a time (window
aggregates of several sizes share a start), so only the id makes the position
exact. It is opaque, base64url of a JSON pair, so clients pass it back rather
than build it, and the key can change without breaking their code.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
)
from async_lru import alru_cache
from multidict import MultiDict, MultiMapping

from rtdstream import lag, metrics
from rtdstream.config import WebSettings, format_duration, is_valid_source_id
from rtdstream.kafka_security import client_options
from rtdstream.sink.repository import Page, Position
from rtdstream.web.errors import BadParameter, json_response
from rtdstream.web.history import DATABASE_ERRORS

if TYPE_CHECKING:
    from rtdstream.sink.repository import HistoryRepository
    from rtdstream.web.feed import TopicFeed

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
HEALTH_TIMEOUT = 3.0
#: A broker that answers but has no coordinator for the worker group yet, or is moving it.
COORDINATOR_PENDING = (
    GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorForGroupError,
)
#: Seconds a /healthz answer about the broker and the database is served before it is checked again.
HEALTH_INTERVAL = 1.0
QUERY_TIMEOUT = 10.0
_WINDOW_NAME = re.compile(r"^[A-Za-z0-9._:/-]{1,32}$")
#: Unpadded base64url; two 64-bit integers in JSON take at most 56 characters.
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BIGINT = range(-(2**63), 2**63)
#: Most buckets one ``/api/windows?step=`` answer holds (a chart is a few hundred pixels wide).
MAX_BUCKETS = 2000
#: Shortest ``step``: the smallest sensible window size.
MIN_STEP = 1000
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RangeQuery:
    source: str
    start: int | None
    end: int | None
    limit: int
    order: str
    window: str | None = None
    after: Position | None = None


def parse_range_query(query: MultiMapping[str], *, with_window: bool) -> RangeQuery:
    """Validate the query of a history endpoint; :class:`BadParameter` names the first bad one."""
    allowed = {"source", "from", "to", "limit", "order", "cursor"} | ({"window"} if with_window else set())
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter {name!r} (allowed: {', '.join(sorted(allowed))})")
    source = query.get("source")
    if not source:
        raise BadParameter("source", "source is required")
    if not is_valid_source_id(source):
        raise BadParameter("source", "source ids use letters, digits and . _ : - (1-64)")
    start = _time_param(query, "from")
    end = _time_param(query, "to")
    if start is not None and end is not None and end <= start:
        raise BadParameter("to", "to must be after from")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadParameter("order", "order is asc or desc")
    window = query.get("window") if with_window else None
    if window is not None and not _WINDOW_NAME.match(window):
        raise BadParameter("window", "window is a window name such as 10s or 60s/10s")
    return RangeQuery(source, start, end, _limit_param(query), order, window, _cursor_param(query))


@dataclass(frozen=True, slots=True)
class BucketQuery:
    source: str
    start: int
    end: int
    step: int
    window: str | None


def parse_bucket_query(query: MultiMapping[str]) -> BucketQuery:
    """Validate ``/api/windows?step=``: a range folded into buckets, so ``from`` and ``to`` are required."""
    allowed = {"source", "from", "to", "step", "window"}
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter {name!r} with step (allowed: {', '.join(sorted(allowed))})")
    rest = MultiDict((name, value) for name, value in query.items() if name != "step")
    base = parse_range_query(rest, with_window=True)  # source, from, to, window: the same rules
    if base.start is None or base.end is None:
        missing = "from" if base.start is None else "to"
        raise BadParameter(missing, f"{missing} is required with step")
    value = query.get("step", "")
    if not (value.isascii() and value.isdigit() and len(value) <= 12) or int(value) < MIN_STEP:
        raise BadParameter("step", f"step is a bucket size in milliseconds, at least {MIN_STEP}")
    step = int(value)
    if (base.end - base.start) / step > MAX_BUCKETS:
        raise BadParameter("step", f"step is too small for the range: at most {MAX_BUCKETS} buckets")
    return BucketQuery(base.source, base.start, base.end, step, base.window)


def bucket_window(step: int, window_sizes: list[float]) -> str:
    """The tumbling window whose aggregates make ``step``-sized buckets: the largest no longer than it.

    Larger windows mean fewer rows to fold; one longer than the step would give
    buckets wider than asked. When every window is longer, the smallest one.
    """
    sizes = sorted({round(size * 1000) for size in window_sizes})
    fitting = [size for size in sizes if size <= step]
    return format_duration((fitting[-1] if fitting else sizes[0]) / 1000)  # the label of a tumbling window


def _time_param(query: MultiMapping[str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(name, f"{name} is epoch milliseconds or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _limit_param(query: MultiMapping[str]) -> int:
    value = query.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise BadParameter("limit", f"limit is a whole number from 1 to {MAX_LIMIT}")
    return min(int(value), MAX_LIMIT)


def _cursor_param(query: MultiMapping[str]) -> Position | None:
    value = query.get("cursor")
    if value is None:
        return None
    position = decode_cursor(value)
    if position is None:
        raise BadParameter("cursor", "cursor is the one in a next link, passed back unchanged")
    return position


def encode_cursor(position: Position) -> str:
    """The opaque ``cursor`` of a next link for the page after ``position``."""
    return base64.urlsafe_b64encode(orjson.dumps([position.time, position.id])).rstrip(b"=").decode()


def decode_cursor(value: str) -> Position | None:
    """The position in a cursor made by :func:`encode_cursor`, or None for anything else."""
    if not _CURSOR.match(value):
        return None
    try:
        pair = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        return None
    if not (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int and v in _BIGINT for v in pair)):
        return None
    return Position(*pair)


def next_url(request: web.Request, page: Page) -> str | None:
    """The URL of the page after ``page`` (the same query with its cursor), or None when it is the last."""
    if page.next is None:
        return None
    return str(request.rel_url.update_query({"cursor": encode_cursor(page.next)}))


class HttpApi:
    """Handlers of /api/*, /healthz and /metrics."""

    def __init__(self, settings: WebSettings, repository: HistoryRepository, feed: TopicFeed) -> None:
        self.settings = settings
        self.repository = repository
        self.feed = feed

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/sources", self.sources)
        app.router.add_get("/api/readings", self.readings)
        app.router.add_get("/api/windows", self.windows)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/metrics", self.metrics)

    async def sources(self, request: web.Request) -> web.Response:
        if request.query:
            name = next(iter(request.query))
            raise BadParameter(name, f"unknown parameter {name!r} (/api/sources takes none)")
        return json_response({"sources": await self._stored(self.repository.sources())})

    async def readings(self, request: web.Request) -> web.Response:
        q = parse_range_query(request.query, with_window=False)
        page = await self._stored(
            self.repository.readings(
                q.source, start=q.start, end=q.end, limit=q.limit, order=q.order, after=q.after
            )
        )
        return json_response(
            {"source": q.source, "order": q.order, "readings": page.rows, "next": next_url(request, page)}
        )

    async def windows(self, request: web.Request) -> web.Response:
        if "step" in request.query:
            return await self.window_buckets(request)
        q = parse_range_query(request.query, with_window=True)
        page = await self._stored(
            self.repository.windows(
                q.source, window=q.window, start=q.start, end=q.end, limit=q.limit, order=q.order, after=q.after
            )
        )
        return json_response({
            "source": q.source, "window": q.window, "order": q.order, "windows": page.rows,
            "next": next_url(request, page),
        })

    async def window_buckets(self, request: web.Request) -> web.Response:
        """``/api/windows?step=``: a long range as min/mean/max buckets, for the dashboard's history chart."""
        q = parse_bucket_query(request.query)
        window = q.window or bucket_window(q.step, self.settings.window_sizes)
        buckets = await self._stored(
            self.repository.window_buckets(q.source, window=window, start=q.start, end=q.end, step=q.step)
        )
        return json_response({
            "source": q.source, "window": window, "step": q.step, "from": q.start, "to": q.end,
            "buckets": buckets, "next": None,
        })

    async def _stored(self, query: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                return await query
        except DATABASE_ERRORS:
            raise web.HTTPServiceUnavailable(reason="history database unavailable") from None

    async def health(self, request: web.Request) -> web.Response:
        """200 when the broker, the database and the feed are fine, else 503; the details either way.

        The worker's lag is reported, not judged: a backlog is no reason to
        take a web process out of a load balancer.
        """
        database, broker = await self.dependency_checks()
        lag_report = broker.get("lag")
        checks = {
            "broker": {key: value for key, value in broker.items() if key != "lag"},
            "database": database,
            "feed": {"ok": self.feed.ready.is_set()},
        }
        healthy = all(check["ok"] for check in checks.values())
        return json_response(
            {"status": "ok" if healthy else "unavailable", "checks": checks, "lag": lag_report},
            status=200 if healthy else 503,
        )

    @alru_cache(maxsize=1, ttl=HEALTH_INTERVAL)
    async def dependency_checks(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The database and broker checks, made at most once per :data:`HEALTH_INTERVAL`.

        Each broker check opens a Kafka consumer and an admin client (about 17 ms, and work
        for the broker); /healthz is open to anyone and polled by every load balancer. So
        concurrent requests share one check in flight, and later ones its answer until it
        is :data:`HEALTH_INTERVAL` old: a thousand requests a second cost the broker one.
        The answer is shared (the dashboard's health panel uses it too), so callers must not change it.
        """
        metrics.WEB_HEALTH_CHECKS.inc()
        database, broker = await asyncio.gather(self._database_check(), self._lag_check())
        return database, broker

    async def _database_check(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                ok = await self.repository.ping()
        except DATABASE_ERRORS as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": bool(ok)} if ok else {"ok": False, "error": "database did not answer"}

    async def _lag_check(self) -> dict[str, Any]:
        try:
            group = await lag.measure_worker_lag(
                client_options(self.settings), self.settings.app_id, timeout=HEALTH_TIMEOUT
            )
        except COORDINATOR_PENDING as exc:
            # The broker answered; the group's coordinator is not ready yet (Apache Kafka creates
            # __consumer_offsets on the first request, and moves coordinators on failover).
            # The lag is unknown for a moment, which is no reason to take this process out.
            return {"ok": True, "lag": None, "lag_error": str(exc) or type(exc).__name__}
        except (KafkaError, OSError, TimeoutError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": True, "lag": {"group": group.group, "total": group.total, "topics": group.by_topic()}}

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})
