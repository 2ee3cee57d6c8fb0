"""Pure logic of the web view: coalescing, the source table, API parameters, origins, tokens."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from multidict import MultiDict
from yarl import URL

from rtdstream.models import ReadingBatch
from rtdstream.sink.repository import Page, Position
from rtdstream.web import dashboard
from rtdstream.web.api import MAX_LIMIT, RangeQuery, decode_cursor, encode_cursor, next_url, parse_range_query
from rtdstream.web.auth import socket_token, token_matches
from rtdstream.web.errors import BadParameter
from rtdstream.web.server import origin_policy
from rtdstream.web.sources import SourceTable, Throttle


class TestThrottle:
    def test_a_value_after_a_quiet_interval_goes_out_at_once(self) -> None:
        throttle = Throttle(0.1)
        assert throttle.offer("a", now=10.0) == ("a", False)
        assert throttle.offer("b", now=10.2) == ("b", False)

    def test_values_faster_than_the_rate_are_coalesced_to_the_newest(self) -> None:
        throttle = Throttle(0.1)
        throttle.offer("a", now=10.0)
        assert throttle.offer("b", now=10.03) == (None, False)
        assert throttle.offer("c", now=10.06) == (None, True)  # b replaced, never sent
        assert throttle.take_due(10.09) is None
        assert throttle.take_due(10.1) == "c"
        assert throttle.take_due(10.3) is None  # nothing waiting


class TestSourceTable:
    def test_last_value_is_the_newest_time_and_history_is_bounded(self) -> None:
        table = SourceTable(history=3, live_interval=0.1)
        table.add_batch(ReadingBatch("s", [1, 2, 3, 4], [10, 20, 30, 40]))
        table.add_batch(ReadingBatch("s", [0], [99]))  # a late reading: history, not last
        state = table.get("s")
        assert state is not None
        assert state.last_reading() == {"source": "s", "time": 4, "speed": 40}
        assert [r["time"] for r in state.recent()] == [3, 4, 0]

    def test_the_least_recently_updated_source_is_forgotten_past_the_bound(self) -> None:
        table = SourceTable(history=2, live_interval=0.1, max_sources=2)
        for source in ("a", "b", "a", "c"):
            table.add_batch(ReadingBatch(source, [1], [1]))
        assert [r["source"] for r in table.latest()] == ["a", "c"]

    def test_restore_merges_stored_rows_with_live_ones_without_duplicates(self) -> None:
        table = SourceTable(history=4, live_interval=0.1)
        table.add_batch(ReadingBatch("s", [5, 6], [50, 60]))
        stored = [{"time": t, "speed": t * 10} for t in (6, 5, 4, 3, 2)]
        windows = [
            {"window": "1s", "start": 1000, "count": 1},
            {"window": "1s", "start": 2000, "count": 2},
            {"window": "10s", "start": 0, "count": 3},
        ]
        state = table.restore("s", stored, windows)
        assert [r["time"] for r in state.recent()] == [3, 4, 5, 6]
        assert state.restored
        assert {w["window"]: w["start"] for w in state.windows.values()} == {"1s": 2000, "10s": 0}

    def test_a_replayed_older_window_does_not_hide_the_newest(self) -> None:
        state = SourceTable(history=1, live_interval=0.1).touch("s")
        state.add_window({"window": "1s", "start": 2000})
        state.add_window({"window": "1s", "start": 1000})
        assert state.windows["1s"]["start"] == 2000

    def test_stored_last_values_do_not_override_what_the_feed_brought(self) -> None:
        table = SourceTable(history=2, live_interval=0.1)
        table.add_batch(ReadingBatch("s", [9], [90]))
        table.set_last("s", 5, 50)
        table.set_last("t", 7, 70)
        assert table.latest() == [{"source": "s", "time": 9, "speed": 90}, {"source": "t", "time": 7, "speed": 70}]


def query(**params: str) -> MultiDict[str]:
    return MultiDict(params)


class TestRangeQuery:
    def test_defaults(self) -> None:
        assert parse_range_query(query(source="s1"), with_window=False) == RangeQuery("s1", None, None, 100, "desc")

    def test_times_in_epoch_ms_or_iso_8601(self) -> None:
        q = parse_range_query(
            query(source="s1", **{"from": "1700000000000", "to": "2023-11-14T22:13:21Z"}), with_window=False
        )
        assert (q.start, q.end) == (1_700_000_000_000, 1_700_000_001_000)
        naive = parse_range_query(query(source="s1", **{"from": "2023-11-14T22:13:20"}), with_window=False)
        assert naive.start == 1_700_000_000_000  # naive times are UTC

    def test_limit_is_capped(self) -> None:
        assert parse_range_query(query(source="s", limit="100000"), with_window=False).limit == MAX_LIMIT

    @pytest.mark.parametrize(
        ("params", "parameter"),
        [
            ({}, "source"),
            ({"source": "bad source!"}, "source"),
            ({"source": "s", "from": "yesterday"}, "from"),
            ({"source": "s", "to": "12:00"}, "to"),
            ({"source": "s", "from": "2000", "to": "1000"}, "to"),
            ({"source": "s", "limit": "0"}, "limit"),
            ({"source": "s", "limit": "-5"}, "limit"),
            ({"source": "s", "limit": "ten"}, "limit"),
            ({"source": "s", "order": "newest"}, "order"),
            ({"source": "s", "start": "1"}, "start"),
            ({"source": "s", "window": "10s"}, "window"),  # readings take no window
            ({"source": "s", "cursor": ""}, "cursor"),
            ({"source": "s", "cursor": "not a cursor"}, "cursor"),
            ({"source": "s", "cursor": "WzEsMiwzXQ"}, "cursor"),  # [1,2,3]
            ({"source": "s", "cursor": "W3RydWUsMV0"}, "cursor"),  # [true,1]
            ({"source": "s", "cursor": "eyJ0IjoxfQ"}, "cursor"),  # {"t":1}
            ({"source": "s", "cursor": "WzEsOTIyMzM3MjAzNjg1NDc3NTgwOF0"}, "cursor"),  # id past BIGINT
            ({"source": "s", "cursor": "WzEsMl0="}, "cursor"),  # padded
        ],
    )
    def test_each_bad_parameter_is_named(self, params: dict[str, str], parameter: str) -> None:
        with pytest.raises(BadParameter) as excinfo:
            parse_range_query(query(**params), with_window=False)
        assert excinfo.value.parameter == parameter

    def test_window_name_is_checked(self) -> None:
        assert parse_range_query(query(source="s", window="60s/10s"), with_window=True).window == "60s/10s"
        with pytest.raises(BadParameter) as excinfo:
            parse_range_query(query(source="s", window="<script>"), with_window=True)
        assert excinfo.value.parameter == "window"


class TestNextPage:
    def request(self, path: str):  # type: ignore[no-untyped-def]
        return make_mocked_request("GET", path)

    def test_last_page_has_no_next(self) -> None:
        assert next_url(self.request("/api/readings?source=s&limit=3"), Page([{"time": 3}], None)) is None

    def test_next_keeps_the_query_and_adds_the_cursor_of_the_last_row(self) -> None:
        url = next_url(
            self.request("/api/windows?source=s&from=1&to=99&limit=2&order=asc&window=1s"),
            Page([{"start": 7}, {"start": 7}], Position(7, 42)),
        )
        assert url is not None and url.startswith("/api/windows?")
        parsed = URL(url).query
        assert {k: parsed[k] for k in ("source", "from", "to", "limit", "order", "window")} == {
            "source": "s", "from": "1", "to": "99", "limit": "2", "order": "asc", "window": "1s",
        }
        assert parse_range_query(parsed, with_window=True).after == Position(7, 42)

    def test_a_followed_cursor_is_replaced_not_repeated(self) -> None:
        first = encode_cursor(Position(9, 1))
        url = next_url(self.request(f"/api/readings?source=s&cursor={first}"), Page([{"time": 5}], Position(5, 2)))
        assert URL(url).query.getall("cursor") == [encode_cursor(Position(5, 2))]

    @pytest.mark.parametrize("position", [Position(0, 1), Position(1_795_625_575_000, 7), Position(-(2**63), 2**63 - 1)])
    def test_cursor_round_trips_and_is_url_safe(self, position: Position) -> None:
        cursor = encode_cursor(position)
        assert decode_cursor(cursor) == position
        assert cursor.replace("-", "").replace("_", "").isalnum()


class TestOrigins:
    environ: ClassVar[dict[str, str]] = {"wsgi.url_scheme": "http", "HTTP_HOST": "dash.example:4000"}

    def test_listed_origin_and_own_origin_are_allowed(self) -> None:
        allowed = origin_policy(["http://localhost:5173"])
        assert allowed("http://localhost:5173", self.environ)
        assert allowed("http://dash.example:4000", self.environ)
        assert not allowed("http://evil.example", self.environ)

    def test_star_allows_any(self) -> None:
        assert origin_policy(["*"])("http://anything.example", self.environ)


class TestTokens:
    def test_token_from_auth_payload_or_query(self) -> None:
        assert socket_token({"token": "t1"}, {"QUERY_STRING": "token=t2"}) == "t1"
        assert socket_token(None, {"QUERY_STRING": "EIO=4&token=t2"}) == "t2"
        assert socket_token({"newData": False}, {}) is None

    def test_matching(self) -> None:
        assert token_matches("secret", "secret")
        assert not token_matches("secret", "Secret")
        assert not token_matches("secret", None)
        assert not token_matches("secret", 42)


async def test_dashboard_without_its_libraries_says_the_installation_is_incomplete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>dashboard</title>")
    app = web.Application()
    with caplog.at_level(logging.WARNING):
        dashboard.add_routes(app, tmp_path)
    assert "dashboard libraries missing" in caplog.text
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/")
        assert page.status == 503
        assert "Dashboard libraries are missing" in await page.text()
        assert (await client.get("/vendor/socket.io.min.js")).status == 404
        assert (await client.get("/static/../index.html")).status == 404
