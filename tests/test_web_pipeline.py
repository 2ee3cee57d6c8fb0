"""The web view at the end of the real pipeline: sim -> bridge -> worker (validate, windows, sink) -> web.

One pipeline (embedded broker, a fresh MariaDB database, every stage as a real
process) serves the tests of this module: the official JavaScript client,
window events from the window agent, the history API against rows the sink
wrote, and the dashboard in headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ARTIFACTS
from tests.support.browser import headless_chromium
from tests.support.mariadb import MariaDB
from tests.support.processes import until
from tests.support.web import RecordingClient, now_ms
from tests.support.web_pipeline import WebPipeline, web_pipeline

JS_DIR = Path(__file__).resolve().parent / "js"
SOURCES = ("sensor-1", "sensor-2")
WINDOW_KEYS = {
    "source", "window", "size", "step", "start", "end", "count",
    "min", "max", "sum", "mean", "first_time", "last_time", "last_speed",
}
Pipeline = WebPipeline


@pytest.fixture(scope="module")
def pipeline(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with web_pipeline(mariadb, tmp_path_factory.mktemp("web-pipeline"), sources=len(SOURCES)) as running:
        yield running


async def run_js_client(url: str, transport: str, count: int) -> dict[str, Any]:
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.fail(f"socket.io-client is not installed: run `npm ci --prefix {JS_DIR}`")
    node = shutil.which("node")
    assert node, "Node.js is needed for the official Socket.IO client test"
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "newdata.mjs"), url, transport, str(count), "30000",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"node exited {process.returncode}: {stdout.decode()} {stderr.decode()}"
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize(("transport", "final_transport"), [("default", "websocket"), ("polling", "polling")])
async def test_the_official_javascript_client_receives_new_data_in_the_original_shape(
    pipeline: Pipeline, transport: str, final_transport: str
) -> None:
    result = await run_js_client(pipeline.url, transport, count=10)
    assert result["transport"] == final_transport
    assert len(result["received"]) == 10
    for data in result["received"]:
        assert list(data) == ["time", "speed"]
        assert isinstance(data["time"], str) and data["time"].isdigit()
        assert isinstance(data["speed"], str) and data["speed"].isdigit() and 0 <= int(data["speed"]) <= 50
        assert abs(int(data["time"]) - now_ms()) < 60_000


async def test_windows_of_the_window_agent_reach_subscribers(pipeline: Pipeline) -> None:
    client = await RecordingClient().connect(pipeline.url)
    await client.wait_for(lambda: {s["source"] for s in client.of("sources")[0]} >= set(SOURCES) if client.of("sources") else False)
    ack = await client.sio.call("subscribe", {"source": "sensor-1"})
    assert ack["ok"] and ack["last"]["source"] == "sensor-1" and ack["history"]
    await client.wait_for(lambda: {w["window"] for w in client.of("window")} >= {"1s", "5s"}, timeout=30)
    for window in client.of("window"):
        assert set(window) == WINDOW_KEYS
        assert window["source"] == "sensor-1"
        assert window["end"] - window["start"] == window["size"]
        assert window["min"] <= window["mean"] <= window["max"]
    assert await client.sio.call("unsubscribe", "sensor-1") == {"ok": True, "source": "sensor-1"}
    await client.disconnect()


async def test_history_api_pages_through_rows_written_by_the_sink(pipeline: Pipeline) -> None:
    source = "sensor-2"
    # a range of 4 s that ends 2 s ago and that the stream covers whole (it may have started just now)
    first = await _first_reading_time(pipeline, source)
    await asyncio.sleep(max(0.0, (first + 6_000 - now_ms()) / 1000))
    end = now_ms() - 2_000
    start = end - 4_000
    # wait until the sink is past `end` for this source: the range is then complete in MySQL
    await _wait_for_row(pipeline, "SELECT 1 FROM readings WHERE source=%s AND time>=%s LIMIT 1", source, end)
    expected = pipeline.rows(
        "SELECT time, speed FROM readings WHERE source=%s AND time>=%s AND time<%s ORDER BY time", source, start, end
    )
    assert len(expected) >= 30  # about 10 readings a second per source

    async with aiohttp.ClientSession() as http:
        pages, next_url = [], f"{pipeline.url}/api/readings?source={source}&from={start}&to={end}&limit=25&order=asc"
        while next_url:
            async with http.get(next_url) as response:
                assert response.status == 200
                body = await response.json()
            pages.append(body["readings"])
            next_url = body["next"] and pipeline.url + body["next"]
        assert all(len(page) <= 25 for page in pages) and len(pages) >= 2
        served = [(r["time"], r["speed"]) for page in pages for r in page]
        assert served == [(t, s) for t, s in expected], f"{len(served)} rows served, {len(expected)} stored"

        async with http.get(f"{pipeline.url}/api/readings", params={"source": source, "limit": "3"}) as response:
            newest = (await response.json())["readings"]
        assert [r["time"] for r in newest] == sorted((r["time"] for r in newest), reverse=True)
        assert set(newest[0]) == {"source", "time", "speed", "ingested_at"}

        async with http.get(f"{pipeline.url}/api/sources") as response:
            listed = {row["source"]: row for row in (await response.json())["sources"]}
        assert set(listed) >= set(SOURCES)
        assert listed[source]["count"] >= len(expected)

        await _wait_for_row(pipeline, "SELECT 1 FROM window_aggregates WHERE source=%s LIMIT 1", source)
        async with http.get(
            f"{pipeline.url}/api/windows", params={"source": source, "window": "1s", "limit": "1000"}
        ) as response:
            windows = (await response.json())["windows"]
        # The stream goes on: read the table after the API, up to the newest window the API served
        # (a window closed between the two reads would otherwise head one list and not the other).
        stored = pipeline.rows(
            "SELECT start, count FROM window_aggregates WHERE source=%s AND `window`='1s' AND start <= %s "
            "ORDER BY start DESC", source, windows[0]["start"],
        )
        assert [(w["start"], w["count"]) for w in windows] == stored[: len(windows)]
        assert set(windows[0]) == WINDOW_KEYS


async def _first_reading_time(pipeline: Pipeline, source: str) -> int:
    await _wait_for_row(pipeline, "SELECT 1 FROM readings WHERE source=%s LIMIT 1", source)
    ((first,),) = pipeline.rows("SELECT MIN(time) FROM readings WHERE source=%s", source)
    return int(first)


async def _wait_for_row(pipeline: WebPipeline, sql: str, *args: object) -> None:
    """Wait until ``sql`` finds a row (the worker stored what the test looks for)."""
    await until(lambda: bool(pipeline.rows(sql, *args)), timeout=30, what=f"a row for {sql} {args}")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/api/readings", "source"),
        ("/api/readings?source=sensor-1&from=soon", "from"),
        ("/api/readings?source=sensor-1&to=-1", "to"),
        ("/api/readings?source=sensor-1&from=20&to=10", "to"),
        ("/api/readings?source=sensor-1&limit=0", "limit"),
        ("/api/readings?source=sensor-1&order=up", "order"),
        ("/api/readings?source=sensor%201", "source"),
        ("/api/readings?source=sensor-1&window=1s", "window"),
        ("/api/windows?source=sensor-1&window=%3Cb%3E", "window"),
        ("/api/windows?source=sensor-1&limit=lots", "limit"),
        ("/api/sources?source=sensor-1", "source"),
    ],
)
async def test_each_bad_parameter_gets_400_naming_it(pipeline: Pipeline, query: str, parameter: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(pipeline.url + query) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["parameter"] == parameter
    assert body["error"]


async def test_dashboard_chart_and_gauge_follow_the_live_data(pipeline: Pipeline) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1100, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The overview comes first now; a source's detail view is one click, or its URL, away.
        await page.goto(pipeline.url + "/#source=sensor-1")
        await page.wait_for_selector("#status[data-state=live]", timeout=20_000)
        await page.wait_for_function("document.querySelector('#source').options.length >= 2")
        await page.wait_for_function("document.querySelector('#gauge-number').textContent !== '–'")
        first = await _dashboard_state(page)
        await page.wait_for_function(
            f"document.querySelector('#last-time').textContent !== {json.dumps(first['last_time'])}"
        )
        await page.wait_for_selector("#windows tr:not(.empty)", timeout=30_000)
        await asyncio.sleep(1.0)
        second = await _dashboard_state(page)
        assert second["last_time"] != first["last_time"]  # the gauge moved on to newer readings
        assert second["chart"] != first["chart"]  # the chart was redrawn with them
        assert second["gauge"].replace(".", "").isdigit()
        assert second["source"] in SOURCES
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

        await page.set_viewport_size({"width": 390, "height": 844})
        await asyncio.sleep(0.5)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        await page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        assert errors == []


async def _dashboard_state(page: Any) -> dict[str, Any]:
    return {
        "gauge": await page.text_content("#gauge-number"),
        "last_time": await page.text_content("#last-time"),
        "source": await page.input_value("#source"),
        "chart": await page.locator("#chart canvas").screenshot(),
    }
