"""Load and latency measurement of a running web view: many Socket.IO clients, readings at a set rate.

Readings go straight onto rtd.readings stamped with the current time, so the
latency measured (reading time -> arrival at a client) is the web view's own
share of the pipeline plus one Kafka hop (the web view's live path has no
other). Most clients are light: raw
websockets that subscribe to every source and read every frame without
decoding it, as a browser tab would; a few are python-socketio clients that
decode the ``readings`` batches and record each reading's latency. The report
also has the web process's CPU and memory when its pid is given.

``python -m rtdstream.web.loadtest --rate 1000 --clients 100`` starts an
embedded broker and a web view and prints one JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import socketio
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.models import ReadingBatch, encode_envelope

#: How often each source sends a message: the rate is spread over these ticks.
TICK = 0.01


@dataclass
class Latencies:
    """Milliseconds from reading time to arrival, of every reading the measuring clients got."""

    values: list[int] = field(default_factory=list)

    def record(self, batch: dict[str, Any]) -> None:
        """Handler of a ``readings`` batch: the latency of each of its readings."""
        now = time.time() * 1000
        self.values.extend(round(now - t) for t in batch["time"])

    def summary(self) -> dict[str, float]:
        if not self.values:
            return {"count": 0}
        ordered = sorted(self.values)
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        return {"count": len(ordered), "p50_ms": cuts[49], "p95_ms": cuts[94], "p99_ms": cuts[98], "max_ms": ordered[-1]}


@dataclass
class LoadReport:
    rate: float
    sources: int
    clients: int
    seconds: float
    readings_sent: int
    latency: dict[str, float]
    light_client_frames: int
    #: rtd_web_live_dropped_total of the web view by reason (coalesced, slow_client, too_slow).
    web_drops: dict[str, float]
    web_cpu_percent: float | None = None
    web_rss_mb: float | None = None


async def measuring_client(
    url: str, sources: list[str], on_readings: Callable[[dict[str, Any]], None]
) -> socketio.AsyncClient:
    """A python-socketio client subscribed to ``sources`` that hands every ``readings`` batch to ``on_readings``."""
    client = socketio.AsyncClient(reconnection=False)
    client.on("readings", on_readings)
    await client.connect(url, transports=["websocket"], auth={"newData": False}, wait_timeout=10)
    for source in sources:
        ack = await client.call("subscribe", source)
        if not ack["ok"]:
            raise RuntimeError(f"subscribe {source}: {ack['error']}")
    return client


async def light_client(session: aiohttp.ClientSession, url: str, sources: list[str], frames: list[int]) -> None:
    """A websocket client that subscribes to every source and reads every frame, undecoded, until cancelled."""
    async with session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
        await ws.receive_str()  # Engine.IO open
        await ws.send_str('40{"newData":false}')  # Socket.IO connect to "/", as the dashboard does
        for source in sources:
            await ws.send_str(f'42["subscribe","{source}"]')
        async for message in ws:
            frames[0] += 1
            if message.data == "2":  # Engine.IO ping: answer, or the server drops us after 45 s
                await ws.send_str("3")


async def produce_load(bootstrap: str, sources: list[str], rate: float, seconds: float) -> int:
    """Readings at ``rate`` a second in all, spread over the sources; the number sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    try:
        while (elapsed := loop.time() - started) < seconds:
            due = int(rate * elapsed) - sent
            counts = Counter(sources[(sent + k) % len(sources)] for k in range(due))  # round robin
            now = int(time.time() * 1000)
            for source, count in counts.items():
                batch = ReadingBatch(source, [now] * count, [count % 50] * count)
                await producer.send(topics.READINGS, encode_envelope(batch), key=source.encode())
            sent += due
            await asyncio.sleep(TICK)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def measure(
    url: str,
    bootstrap: str,
    *,
    rate: float,
    sources: int = 10,
    clients: int = 100,
    measuring: int = 4,
    seconds: float = 20.0,
    web_pid: int | None = None,
) -> LoadReport:
    """Connect ``clients`` clients (``measuring`` of them decoding), run the load, report."""
    names = [f"bench-{i}" for i in range(sources)]
    # The sources must exist before clients can subscribe to them.
    await produce_load(bootstrap, names, rate=len(names) * 10, seconds=1.0)
    await asyncio.sleep(1.0)
    latencies = Latencies()
    frames = [0]
    session = aiohttp.ClientSession()
    light = [asyncio.create_task(light_client(session, url, names, frames)) for _ in range(clients - measuring)]
    decoding = [await measuring_client(url, names, latencies.record) for _ in range(measuring)]
    await asyncio.sleep(1.0)
    process = psutil.Process(web_pid) if web_pid else None
    if process:
        process.cpu_percent()  # starts the measurement interval
    latencies.values.clear()
    try:
        sent = await produce_load(bootstrap, names, rate, seconds)
        cpu = process.cpu_percent() if process else None
        rss = process.memory_info().rss / 1e6 if process else None
        await asyncio.sleep(1.0)  # the last batches arrive
        drops = await _drops(session, url)
    finally:
        for task in light:
            task.cancel()
        await asyncio.gather(*light, return_exceptions=True)
        for client in decoding:
            await client.disconnect()
        await session.close()
    return LoadReport(rate, sources, clients, seconds, sent, latencies.summary(), frames[0], drops, cpu, rss)


async def _drops(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    drops: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rtd_web_live_dropped_total":
                reason = sample.labels["reason"]
                drops[reason] = drops.get(reason, 0.0) + sample.value
    return drops


@contextmanager
def _web_process() -> Iterator[tuple[str, str, int]]:
    """An embedded broker and a ``rtdstream web`` subprocess on it: (url, bootstrap servers, web pid)."""
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = {**os.environ, "RTD_BROKER": broker.url, "RTD_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/db.sqlite3"}
        log_path = Path(workdir, "web.log")
        with log_path.open("wb") as log:
            web = subprocess.Popen(
                [sys.executable, "-m", "rtdstream", "web", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            while "web feed reading" not in log_path.read_text():
                if web.poll() is not None:
                    raise SystemExit(log_path.read_text())
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", broker.bootstrap_servers, web.pid
        finally:
            web.terminate()
            web.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="readings per second in all")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100, help="connected clients, measuring ones included")
    parser.add_argument("--measuring", type=int, default=4, help="clients that decode and time every reading")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with _web_process() as (url, bootstrap, pid):
        report = asyncio.run(
            measure(
                url, bootstrap, rate=args.rate, sources=args.sources, clients=args.clients,
                measuring=args.measuring, seconds=args.seconds, web_pid=pid,
            )
        )
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
