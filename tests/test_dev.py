"""``rtdstream dev``: the whole pipeline from one command, and nothing left behind after Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from rtdstream.broker import free_port
from rtdstream.config import load_settings
from rtdstream.dev import DevOptions, dev_processes
from tests.support.kafka import produce, read_topic
from tests.support.processes import ProcessGroup, session_alive


async def test_dev_runs_the_pipeline_and_stops_every_process_cleanly(
    rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {key: value for key, value in rtd_env.items() if key != "RTD_BROKER"}  # dev embeds its own
    web_port = free_port()
    dev = processes.start("dev", [
        "dev", "--port", str(web_port), "--sim-port", str(free_port()),
        "--worker-web-port", str(free_port()), "--rate", "20", "--sources", "2",
    ], env)
    broker_port = int((await dev.await_log(r"embedded broker on kafka://127\.0\.0\.1:(\d+)")).group(1))
    await dev.await_log(r"worker\s+\| .*\[\^Worker\]: Ready", timeout=90)

    async with aiohttp.ClientSession() as http:
        for _ in range(120):  # readings went sim -> bridge -> broker -> worker -> database -> API
            async with http.get(f"http://127.0.0.1:{web_port}/api/sources") as response:
                sources = (await response.json())["sources"] if response.status == 200 else []
            if len(sources) == 2 and all(s["count"] > 0 for s in sources):
                break
            await asyncio.sleep(0.5)
        assert {s["source"] for s in sources} == {"sensor-1", "sensor-2"}
        async with http.get(f"http://127.0.0.1:{web_port}/") as response:
            assert response.status == 200 and "rtdstream" in await response.text()

    dev.popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert dev.popen.wait(timeout=30) == 130
    log = dev.log_text()
    for name in ("sim", "bridge", "worker", "web"):
        assert re.search(rf"{name} stopped \(rc=0\)", log), f"{name} did not stop cleanly:\n{log[-3000:]}"
    assert "SIGKILL" not in log and "Traceback" not in log
    assert "appdir" not in log  # Faust's start-up banner is left out (rtdstream dev -v shows it)
    assert session_alive(dev.pid) == []  # the shells and every child are gone...
    with pytest.raises(OSError):  # ...and so is the embedded broker (it runs in a session of its own)
        socket.create_connection(("127.0.0.1", broker_port), timeout=1).close()


async def test_broker_command_serves_until_sigterm_and_refuses_a_port_in_use(
    rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    port = free_port()
    broker = processes.start("broker", ["broker", "--port", str(port)], rtd_env)
    await broker.await_log(rf"embedded broker listening on kafka://127\.0\.0\.1:{port}\b")
    await produce(f"127.0.0.1:{port}", "rtd.readings", [b"one", b"two"])
    records = await read_topic(f"127.0.0.1:{port}", "rtd.readings", until=lambda got: len(got) >= 2)
    assert sorted(r.value for r in records) == [b"one", b"two"]

    second = processes.start("broker-2", ["broker", "--port", str(port)], rtd_env)
    assert second.popen.wait(timeout=30) == 1
    assert second.log_text().strip().splitlines()[-1] == (
        f"rtdstream broker: cannot listen on 127.0.0.1:{port}: the port is in use"
    )

    assert processes.terminate(broker) == 0
    with pytest.raises(OSError):  # the broker process itself is gone, not only its parent
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_dev_leaves_the_worker_banner_out_unless_verbose() -> None:
    settings = load_settings()
    quiet, _ = dev_processes(settings, DevOptions(), broker_url=None)
    verbose, _ = dev_processes(settings, DevOptions(verbose=True), broker_url=None)
    assert "--quiet worker" in quiet["worker"]
    assert "--quiet" not in verbose["worker"] and " worker " in verbose["worker"]


def test_version_names_rtdstream_faust_and_python() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtdstream", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert re.fullmatch(r"rtdstream \d+\.\d+\.\d+\S* \(Faust \S+, Python 3\.\d+\.\d+\)\n", result.stdout), result.stdout
