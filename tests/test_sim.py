"""The simulator, byte for byte against the original rtd-sim's contract (README, Compatibility)."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from rtdstream.broker import free_port
from rtdstream.sim.server import Sensor, Simulator

ORIGINAL_RECORD = re.compile(rb'^\{"time":"\d{13}","speed":"(\d|[1-4]\d|50)"\}\n$')


@pytest.fixture
async def running_sim(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Simulator, int]]:
    options = getattr(request, "param", {})
    simulator = Simulator(**options)
    runner = web.AppRunner(simulator.make_app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield simulator, port
    finally:
        await runner.cleanup()


class RawHttp:
    """An HTTP/1.1 client on a bare socket, so the test sees headers and chunks as sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def get(cls, port: int, path: str) -> tuple[RawHttp, int, dict[str, str]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {}
        for line in filter(None, header_lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return cls(reader, writer), int(status_line.split()[1]), headers

    async def chunk(self, timeout: float = 5.0) -> bytes:
        size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
        size = int(size_line.strip(), 16)
        data = await self.reader.readexactly(size + 2)
        assert data.endswith(b"\r\n")
        return data[:-2]

    def close(self) -> None:
        self.writer.close()


async def test_stream_headers_and_one_original_record_per_chunk_each_second(running_sim) -> None:
    _, port = running_sim
    client, status, headers = await RawHttp.get(port, "/stream")
    try:
        assert status == 200
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["connection"] == "keep-alive"
        assert headers["transfer-encoding"] == "chunked"
        assert "content-encoding" not in headers
        chunks = [await client.chunk() for _ in range(3)]
    finally:
        client.close()
    for chunk in chunks:
        assert ORIGINAL_RECORD.match(chunk), chunk  # one compact object and "\n", no "data:" framing
    times = [int(orjson.loads(chunk)["time"]) for chunk in chunks]
    assert all(900 <= later - earlier <= 1100 for earlier, later in zip(times, times[1:])), times


@pytest.mark.parametrize("path", ["/", "/streams", "/stream/x", "/favicon.ico"])
async def test_other_paths_are_not_found(running_sim, path: str) -> None:
    _, port = running_sim
    client, status, _ = await RawHttp.get(port, path)
    client.close()
    assert status == 404


@pytest.mark.parametrize("running_sim", [{"rate": 20.0}], indirect=True)
async def test_timer_stops_when_the_client_goes_away(running_sim) -> None:
    simulator, port = running_sim
    clients = [await RawHttp.get(port, "/stream") for _ in range(3)]
    for client, _, _ in clients:
        await client.chunk()
    assert simulator.active_streams == 3
    for client, _, _ in clients:
        client.close()
    for _ in range(50):
        if simulator.active_streams == 0:
            break
        await asyncio.sleep(0.1)
    assert simulator.active_streams == 0
    sent = simulator.records_sent
    await asyncio.sleep(0.5)
    assert simulator.records_sent == sent  # nothing keeps generating for departed clients


@pytest.mark.parametrize("running_sim", [{"rate": 300.0, "sources": 3}], indirect=True)
async def test_several_sources_carry_a_source_field_and_increasing_times(running_sim) -> None:
    _, port = running_sim
    client, _, _ = await RawHttp.get(port, "/stream")
    records: list[dict] = []
    try:
        while len(records) < 300:
            records += [orjson.loads(line) for line in (await client.chunk()).splitlines()]
    finally:
        client.close()
    assert set(records[0]) == {"time", "speed", "source"}
    by_source: dict[str, list[int]] = {}
    for record in records:
        assert 0 <= int(record["speed"]) <= 50
        by_source.setdefault(record["source"], []).append(int(record["time"]))
    assert sorted(by_source) == ["sensor-1", "sensor-2", "sensor-3"]
    for times in by_source.values():
        assert all(a < b for a, b in zip(times, times[1:]))  # strictly increasing per source
        assert abs(len(times) - len(records) / 3) <= 1  # the rate is shared evenly


ORIGINAL_BACKEND_READER = r"""
// The original rtd-backend's way of reading the simulator: one JSON.parse per 'data' event.
const http = require('http');
http.get(process.argv[2], (res) => {
  let n = 0;
  res.on('data', (chunk) => {
    const record = JSON.parse(chunk);          // throws if a chunk is not exactly one record
    console.log(JSON.stringify(record));
    if (++n === 3) process.exit(0);
  });
});
setTimeout(() => { console.error('timeout'); process.exit(2); }, 10000);
"""


async def test_the_original_backend_can_read_the_stream_unchanged(running_sim, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed to run the original backend's reader"
    _, port = running_sim
    script = tmp_path / "reader.js"
    script.write_text(ORIGINAL_BACKEND_READER)
    process = await asyncio.create_subprocess_exec(
        node, str(script), f"http://127.0.0.1:{port}/stream",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    parsed = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(parsed) == 3 and all(set(record) == {"time", "speed"} for record in parsed)


async def read_records(client: RawHttp, count: int) -> list[dict]:
    records: list[dict] = []
    while len(records) < count:
        records += [orjson.loads(line) for line in (await client.chunk()).splitlines()]
    return records


@pytest.mark.parametrize("running_sim", [{"rate": 200.0, "sources": 2}], indirect=True)
async def test_a_resumed_session_replays_what_the_client_did_not_keep_then_goes_on(running_sim) -> None:
    simulator, port = running_sim
    client, _, _ = await RawHttp.get(port, "/stream?session=bridge-1")
    first = await read_records(client, 100)
    client.close()
    await asyncio.sleep(0.3)  # records written after the client stopped reading are in the session's log

    kept = first[:60]  # say the client crashed having delivered only these
    since = {}
    for record in kept:
        since[record["source"]] = int(record["time"])
    query = orjson.dumps(since).decode()
    client, status, _ = await RawHttp.get(port, f"/stream?session=bridge-1&since={query}")
    assert status == 200
    second = await read_records(client, 200)
    client.close()

    for source in ("sensor-1", "sensor-2"):
        times = [int(r["time"]) for r in kept + second if r["source"] == source]
        assert times == sorted(set(times))  # no duplicate, in order...
    resumed = [r for r in second if int(r["time"]) <= since[r["source"]]]
    assert resumed == []  # ...nothing the client kept comes again
    assert second[:40] == first[60:100]  # and what it lost comes first, unchanged


async def test_a_bad_since_parameter_is_a_400(running_sim) -> None:
    _, port = running_sim
    client, status, _ = await RawHttp.get(port, "/stream?session=x&since=yesterday")
    client.close()
    assert status == 400


def speeds_of(model: str, count: int = 500) -> list[int]:
    sensor = Sensor(None, random.Random(7), model)
    return [int(orjson.loads(sensor.next_record(1_795_625_575_478))["speed"]) for _ in range(count)]


def test_speeds_are_a_fresh_uniform_draw_by_default_and_a_random_walk_on_request() -> None:
    uniform, walk = speeds_of("uniform"), speeds_of("walk")
    # the original draws each record's speed anew from 0-50: every value turns up, jumps are common
    assert set(uniform) == set(range(51))
    assert sum(abs(b - a) > 3 for a, b in pairwise(uniform)) > 300
    # the walk moves at most 3 a step
    assert all(abs(b - a) <= 3 for a, b in pairwise(walk)) and 0 <= min(walk) and max(walk) <= 50
    assert Simulator().speeds == "uniform"
    with pytest.raises(ValueError, match="speeds must be one of uniform, walk"):
        Simulator(speeds="sine")
