"""The fleet dashboard in headless Chromium against the real pipeline (sim -> bridge -> worker -> web).

Each panel must show real data: tiles of the simulated sources, the pipeline's
health, a malformed message produced to rtd.readings as a dead letter with its
reason, a source that stops turning stale after RTD_IDLE_TIMEOUT, and stored
history in the detail view; the URL's state must survive a reload; the page
must work with RTD_AUTH_TOKEN and at phone width. Every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from playwright.async_api import Page, expect

from rtdstream import topics
from rtdstream.models import ReadingBatch
from tests.conftest import ARTIFACTS
from tests.support.browser import headless_chromium
from tests.support.mariadb import MariaDB
from tests.support.processes import until
from tests.support.web import now_ms, produce_keyed, produce_readings
from tests.support.web_pipeline import WebPipeline, web_pipeline

IDLE_TIMEOUT_S = 3
TOKEN = "fleet-secret"
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
#: A malformed record: not JSON, with markup that must stay text.
MALFORMED = b'{"time": 1, "speed": <img src=x onerror="window.__pwned=1"> fleet-test'


@pytest.fixture(scope="module")
def pipeline(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPipeline]:
    with web_pipeline(
        mariadb, tmp_path_factory.mktemp("fleet-pipeline"), sources=3, RTD_IDLE_TIMEOUT=f"{IDLE_TIMEOUT_S}s"
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def browser_page(url: str, viewport: dict[str, int]) -> AsyncIterator[Page]:
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport=viewport)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(url)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
        yield page
        assert errors == []


async def _produce_until(pipeline: WebPipeline, source: str, stop: asyncio.Event) -> None:
    """Readings of ``source`` every 200 ms until ``stop``: a sensor we can switch off."""
    speed = 0
    while not stop.is_set():
        speed = (speed + 7) % 50
        await produce_readings(pipeline.bootstrap, [ReadingBatch(source, [now_ms()], [speed])])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def test_overview_health_and_dead_letters_show_real_data_and_a_stopped_source_turns_stale(
    pipeline: WebPipeline,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    stop = asyncio.Event()
    sensor = asyncio.create_task(_produce_until(pipeline, "probe-1", stop))
    try:
        async with browser_page(pipeline.url + "/", DESKTOP) as page:
            # tiles of the simulated sources with live values and rates
            for source in ("sensor-1", "sensor-2", "sensor-3"):
                tile = page.locator(f'.tile[data-source="{source}"]')
                await expect(tile).to_have_attribute("data-state", "live", timeout=20_000)
                await expect(tile.locator(".tile-rate")).to_have_text(_positive_rate(), timeout=10_000)
            await expect(page.locator(".tile .tile-value").first).to_have_text(_number())
            # sparklines drawn from the fleet summary
            await page.wait_for_function(
                """() => { const c = document.querySelector('.tile[data-source="sensor-1"] canvas');
                           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                           return d.some((v, i) => i % 4 === 3 && v > 0); }""",
                timeout=15_000,
            )
            # the pipeline's health
            await expect(page.locator("#h-in")).to_have_text(_positive_rate(), timeout=15_000)
            await expect(page.locator("#h-stored")).to_have_text(_positive_rate(), timeout=15_000)
            for check in ("#h-broker", "#h-database", "#h-feed"):
                await expect(page.locator(check)).to_have_text("ok")
            await expect(page.locator("#h-clients")).to_have_text(_positive_int())
            await expect(page.locator("#h-lag")).to_have_text(_int())

            # a malformed message on rtd.readings appears with its reason, as text
            await produce_keyed(pipeline.bootstrap, topics.READINGS, [(b"probe-1", MALFORMED)])
            row = page.locator('#dead-letters tr[data-reason="not_json"]')
            await expect(row.first).to_be_visible(timeout=15_000)
            await expect(row.first.locator(".dl-raw")).to_contain_text('<img src=x onerror="window.__pwned=1">')
            await expect(page.locator('#h-reasons [data-reason="not_json"] .reason-count')).to_have_text(
                _positive_int(), timeout=5_000
            )
            assert await page.locator("#dead-letters img").count() == 0
            assert await page.evaluate("window.__pwned") is None

            # the probe sensor is live, then stale once silent for longer than RTD_IDLE_TIMEOUT
            probe = page.locator('.tile[data-source="probe-1"]')
            await expect(probe).to_have_attribute("data-state", "live", timeout=15_000)
            await page.screenshot(path=str(ARTIFACTS / "fleet-overview.png"), full_page=True)
            stop.set()
            await sensor
            await expect(probe).to_have_attribute("data-state", "stale", timeout=(IDLE_TIMEOUT_S + 10) * 1000)
            await expect(page.locator('.tile[data-source="sensor-1"]')).to_have_attribute("data-state", "live")
            await expect(page.locator("#fleet-count")).to_have_attribute("data-stale", "1")
            await page.screenshot(path=str(ARTIFACTS / "fleet-overview-stale.png"), full_page=True)

            # the filter narrows the tiles and goes into the URL
            await page.fill("#filter", "sensor-2")
            await expect(page.locator(".tile:visible")).to_have_count(1)
            await page.wait_for_function("location.hash.includes('q=sensor-2')")

            await page.set_viewport_size(PHONE)
            await page.fill("#filter", "")
            await expect(page.locator(".tile:visible")).to_have_count(4)
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await page.screenshot(path=str(ARTIFACTS / "fleet-overview-phone.png"), full_page=True)
    finally:
        stop.set()
        await sensor


async def test_a_tile_opens_the_detail_view_whose_url_state_and_history_survive_a_reload(
    pipeline: WebPipeline,
) -> None:
    await _wait_for_stored_windows(pipeline, "sensor-1")
    async with browser_page(pipeline.url + "/", DESKTOP) as page:
        await page.click('.tile[data-source="sensor-1"]', timeout=20_000)
        await expect(page.locator("#detail")).to_be_visible()
        await expect(page.locator("#overview")).to_be_hidden()
        await expect(page.locator("#gauge-number")).to_have_text(_number(), timeout=15_000)
        await expect(page.locator("#windows tr:not(.empty)").first).to_be_visible(timeout=20_000)
        assert "source=sensor-1" in await page.evaluate("location.hash")

        # short range: raw stored readings
        await page.click('#ranges button[data-range="5m"]')
        await expect(page.locator("#history")).to_have_attribute("data-kind", "raw", timeout=15_000)
        assert int(await page.get_attribute("#history", "data-points") or 0) > 0
        assert "range=5m" in await page.evaluate("location.hash")

        # long range: buckets of the stored window aggregates
        await page.click('#ranges button[data-range="1h"]')
        await expect(page.locator("#history")).to_have_attribute("data-kind", "buckets", timeout=15_000)
        assert int(await page.get_attribute("#history", "data-points") or 0) > 0
        await expect(page.locator("#history-status")).to_contain_text("of 5s windows")  # step 6 s: the largest window within it
        await page.screenshot(path=str(ARTIFACTS / "fleet-detail-1h.png"), full_page=True)

        # reload: the same source and range come back from the URL
        await page.reload()
        await expect(page.locator("#detail")).to_be_visible(timeout=15_000)
        await expect(page.locator("#detail-name")).to_have_text("sensor-1")
        await expect(page.locator('#ranges button[data-range="1h"]')).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#history")).to_have_attribute("data-kind", "buckets", timeout=15_000)

        # back (the browser's and ours) returns to the overview
        await page.go_back()
        await expect(page.locator('#ranges button[data-range="5m"]')).to_have_attribute("aria-pressed", "true")
        await page.click("#back")
        await expect(page.locator("#overview")).to_be_visible()
        assert "source=" not in await page.evaluate("location.hash")

        # a custom range from the URL: its inputs show it and its stored readings are charted
        end = now_ms()
        await page.goto(f"{pipeline.url}/#source=sensor-1&range=custom&from={end - 120_000}&to={end}")
        await expect(page.locator("#custom-range")).to_be_visible(timeout=15_000)
        await expect(page.locator('#ranges button[data-range="custom"]')).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#range-from")).not_to_have_value("")
        await expect(page.locator("#history")).to_have_attribute("data-kind", "raw", timeout=15_000)
        assert int(await page.get_attribute("#history", "data-points") or 0) > 0

        await page.goto(pipeline.url + "/#source=sensor-2&range=5m")
        await expect(page.locator("#detail-name")).to_have_text("sensor-2", timeout=15_000)
        await page.set_viewport_size(PHONE)
        await expect(page.locator("#history")).to_have_attribute("data-kind", "raw", timeout=15_000)
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await page.screenshot(path=str(ARTIFACTS / "fleet-detail-phone.png"), full_page=True)


async def test_the_dashboard_works_with_an_access_token(pipeline: WebPipeline) -> None:
    url = pipeline.start_web(RTD_AUTH_TOKEN=TOKEN)
    async with browser_page(f"{url}/?token={TOKEN}#source=sensor-3&range=5m", DESKTOP) as page:
        await expect(page.locator("#history")).to_have_attribute("data-kind", "raw", timeout=15_000)
        assert int(await page.get_attribute("#history", "data-points") or 0) > 0
        await expect(page.locator("#gauge-number")).to_have_text(_number(), timeout=15_000)
        await expect(page.locator("#h-database")).to_have_text("ok", timeout=15_000)
        await page.click("#back")
        await expect(page.locator('.tile[data-source="sensor-3"]')).to_have_attribute("data-state", "live")


async def _wait_for_stored_windows(pipeline: WebPipeline, source: str, at_least: int = 1) -> None:
    def stored() -> bool:
        try:
            # the 5s windows: what the 1 h range's 6 s buckets are made of
            rows = pipeline.rows("SELECT COUNT(*) FROM window_aggregates WHERE source=%s AND `window`='5s'", source)
        except Exception:  # noqa: BLE001  (the table appears once the worker has migrated)
            return False
        return rows[0][0] >= at_least

    await until(stored, timeout=30, what=f"{at_least} stored 5s window(s) of {source}")


def _number() -> re.Pattern[str]:
    return re.compile(r"^\d+(\.\d+)?$")


def _int() -> re.Pattern[str]:
    return re.compile(r"^\d+$")


def _positive_int() -> re.Pattern[str]:
    return re.compile(r"^[1-9]\d*$")


def _positive_rate() -> re.Pattern[str]:
    """A rate above zero, with or without its unit: "4.0 /s", "49.8", not "0.0 /s"."""
    return re.compile(r"^(?!0(\.0)?( |$))\d+(\.\d)?( /s)?$")


async def test_window_buckets_fold_the_stored_aggregates_and_bad_steps_get_400(pipeline: WebPipeline) -> None:
    await _wait_for_stored_windows(pipeline, "sensor-2", at_least=4)  # so some bucket folds two windows
    end = now_ms()
    start = end - 3600_000
    expected = pipeline.rows(
        "SELECT start - start %% 10000, SUM(count), MIN(min), MAX(max) FROM window_aggregates"
        " WHERE source=%s AND `window`='5s' AND start>=%s AND start<%s GROUP BY 1 ORDER BY 1",
        "sensor-2", start, end,
    )
    async with aiohttp.ClientSession() as http:
        params = {"source": "sensor-2", "from": str(start), "to": str(end), "step": "10000"}
        async with http.get(f"{pipeline.url}/api/windows", params=params) as response:
            assert response.status == 200
            body = await response.json()
        assert body["window"] == "5s" and body["step"] == 10000 and body["next"] is None
        served = [(b["start"], b["count"], b["min"], b["max"]) for b in body["buckets"]]
        assert all(b["start"] % 10000 == 0 for b in body["buckets"])
        assert served[: len(expected)] == [(int(s), int(c), float(lo), float(hi)) for s, c, lo, hi in expected]
        assert all(b["min"] <= b["mean"] <= b["max"] for b in body["buckets"])
        for query, parameter in [
            ({**params, "step": "10"}, "step"),
            ({**params, "step": "1000", "from": str(end - 30 * 86_400_000)}, "step"),
            ({"source": "sensor-2", "step": "1000"}, "from"),
            ({**params, "order": "asc"}, "order"),
        ]:
            async with http.get(f"{pipeline.url}/api/windows", params=query) as response:
                assert response.status == 400 and response.content_type == "application/json"
                assert (await response.json())["parameter"] == parameter
