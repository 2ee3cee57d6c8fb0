"""A client that stops reading costs the web view bounded memory, and the other clients nothing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import psutil
from aiokafka import AIOKafkaProducer

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker
from rtdstream.models import ReadingBatch, encode_envelope
from tests.support.processes import ProcessGroup
from tests.support.web import RecordingClient, metric_samples, now_ms, produce_readings, start_web

SOURCES = [f"s{i}" for i in range(100)]
TICK = 0.1  # every source sends one reading per tick: 1,000 readings/s in all
FLOW_SECONDS = 20
#: Without the per-client bound the web view grows about 0.35 MB/s here (7 MB in the 20 s);
#: with it, about 1 MB in all.
MEMORY_BOUND = 3_000_000


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A socket whose kernel receive buffer fills after a few KB, like a client that stopped reading."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def stalled_client(url: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """A raw websocket client that completes the Socket.IO handshake, subscribes to everything, then never reads."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer))
    ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0{")  # Engine.IO open
    await ws.send_str("40")  # Socket.IO connect to "/"
    assert (await ws.receive_str()).startswith("40{")
    for source in SOURCES:
        await ws.send_str(f'42["subscribe","{source}"]')
    return session, ws


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Read what the kernel still holds until the connection ends; True if it does."""
    try:
        async with asyncio.timeout(30):
            while True:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return True
    except TimeoutError:
        return False


async def test_a_stalled_client_is_cut_off_and_others_keep_receiving(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    web, url = start_web(processes, {**rtd_env, "RTD_SLOW_CLIENT_TIMEOUT": "3s"})
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch(s, [t0], [0]) for s in SOURCES])
    await asyncio.sleep(1.5)

    healthy = await RecordingClient().connect(url, transports=["websocket"], auth={"newData": False})
    watched = SOURCES[:10]
    for source in watched:
        assert (await healthy.sio.call("subscribe", source))["ok"]
    session, stalled = await stalled_client(url)
    await asyncio.sleep(0.5)

    server = psutil.Process(web.pid)
    rss_before = server.memory_info().rss
    peak = rss_before
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    ticks = int(FLOW_SECONDS / TICK)
    healthy_counts = []
    try:
        for tick in range(ticks):
            started = loop.time()
            time_ms = t0 + 1 + tick
            for source in SOURCES:
                batch = ReadingBatch(source, [time_ms], [tick % 50])
                await producer.send(topics.READINGS, encode_envelope(batch), key=source.encode())
            peak = max(peak, server.memory_info().rss)
            healthy_counts.append(sum(len(b["time"]) for b in healthy.of("readings")))
            await asyncio.sleep(max(0.0, TICK - (loop.time() - started)))
        await producer.flush()
    finally:
        await producer.stop()

    expected = [t0 + 1 + tick for tick in range(ticks)]
    await healthy.wait_for(lambda: sum(len(b["time"]) for b in healthy.of("readings")) >= len(watched) * ticks)
    for source in watched:
        received = [t for b in healthy.of("readings") if b["source"] == source for t in b["time"]]
        assert received == expected, f"{source}: {len(received)} of {len(expected)}"
    # it kept receiving all along, including after the stalled client fell behind
    last_quarter = healthy_counts[-ticks // 4 :]
    assert last_quarter[-1] > last_quarter[0]

    assert peak - rss_before < MEMORY_BOUND, f"web view grew {(peak - rss_before) / 1e6:.1f} MB"
    samples = await metric_samples(url)
    slow_drops = sum(
        value for (name, labels), value in samples.items()
        if name == "rtd_web_live_dropped_total" and ("reason", "slow_client") in labels
    )
    assert slow_drops > 0
    assert samples[("rtd_web_slow_disconnects_total", ())] == 1
    assert samples[("rtd_web_clients", ())] == 1  # the healthy one
    assert await closed_by_server(stalled)
    assert "client" in web.log_text() and "disconnecting it" in web.log_text()
    await session.close()
    await healthy.disconnect()
