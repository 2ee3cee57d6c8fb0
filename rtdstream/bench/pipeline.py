"""The pipeline under test, as the real processes users run: ``rtdstream sim | bridge | worker | web``.

Every process inherits this environment, so the knobs of the README
(RTD_SINK_BATCH, RTD_BRIDGE_LINGER, RTD_PARTITIONS ...) apply to a benchmark
exactly as to production; only the broker, the database, the stream URL and
the consumer group are set here. Each process runs in its own session with
its output in ``<run>/logs``, and is stopped with SIGTERM like under a
process manager, so a benchmark also shows that every stage shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtdstream.broker import free_port

#: What the simulator logs for each connection when it stops (the simulator stops first, README Performance).
STREAM_CLOSED = re.compile(r"stream closed for \S+ after (\d+) records")
WORKER_READY = r"\[\^Worker\]: Ready"
STOP_TIMEOUT = 60.0


class PipelineFailed(Exception):
    """A process of the pipeline did not start or died; the message has the end of its log."""


@dataclass
class Service:
    """One running rtdstream process and its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    returncode: int | None = None
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    async def wait_for_log(self, pattern: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not re.search(pattern, self.log_text()):
            if self.process.returncode is not None:
                raise PipelineFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if loop.time() > deadline:
                raise PipelineFailed(f"{self.name} did not log {pattern!r} within {timeout:g}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL to its whole session if it has not exited within ``timeout``."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                _kill_session(self.pid)
                await self.process.wait()
        else:
            _kill_session(self.pid)  # whatever it left behind
        self.returncode = self.process.returncode
        self.stopped = self.stopped or time.monotonic()
        return self.returncode


@dataclass
class Pipeline:
    """Simulator, bridge, workers and web view of one benchmark run."""

    env: dict[str, str]
    run_dir: Path
    workers: int
    sim_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    worker_ports: list[int] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    sims: list[Service] = field(default_factory=list)
    #: What feeds rtd.readings: "bridge" (the simulator through the bridge) or "kafka" (one-reading messages).
    producer: str = "bridge"

    @classmethod
    def configure(
        cls, run_dir: Path, *, broker_url: str, database_url: str, app_id: str, workers: int, embedded: bool
    ) -> Pipeline:
        env = {key: value for key, value in os.environ.items() if key not in ("PORT", "RTD_AUTH_TOKEN")}
        pipeline = cls(env, run_dir, workers)
        env.update(
            RTD_BROKER=broker_url,
            RTD_DATABASE_URL=database_url,
            # Named, so that a one-sensor run (its records carry no source) is sensor-1 as well.
            RTD_SOURCES=f"sensor-1=http://127.0.0.1:{pipeline.sim_port}/stream",
            RTD_APP_ID=app_id,
            PYTHONUNBUFFERED="1",
        )
        if embedded:
            env.setdefault("RTD_SESSION_TIMEOUT", "6s")  # the embedded broker forms a group after half of it
        return pipeline

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def worker_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.worker_ports]

    @property
    def sim(self) -> Service | None:
        return self.sims[-1] if self.sims and self.sims[-1].returncode is None else None

    def pids(self) -> dict[str, int]:
        """Name -> pid of every process running now."""
        running = [s for s in [*self.services, *self.sims] if s.returncode is None]
        return {s.name: s.pid for s in running}

    async def start_workers(self, *, wait: bool = True) -> None:
        """Start the workers; with ``wait``, return once each is ready."""
        for index in range(self.workers):
            port = free_port()
            self.worker_ports.append(port)
            name = "worker" if self.workers == 1 else f"worker-{index + 1}"
            self.services.append(await self._spawn(name, ["worker", "-l", "info", "--web-port", str(port)]))
        for worker in self.services[: self.workers] if wait else ():
            await worker.wait_for_log(WORKER_READY, timeout=120)

    async def start(self, *, rate: float, sources: int, producer: str = "bridge") -> None:
        """Start the workers and the web view, then the input; return once data flows.

        The input is the simulator and the bridge, or with ``producer="kafka"`` a
        producer of one-reading messages (:mod:`rtdstream.bench.producer`).
        """
        await self.start_workers(wait=False)
        web = await self._spawn("web", ["web", "--host", "127.0.0.1", "--port", str(self.web_port)])
        self.services.append(web)
        for worker in self.services[: self.workers]:
            await worker.wait_for_log(WORKER_READY, timeout=120)
        await web.wait_for_log("web feed reading", timeout=60)
        self.producer = producer
        await self.start_sim(rate=rate, sources=sources)
        if producer == "kafka":
            return
        bridge = await self._spawn("bridge", ["bridge"])
        self.services.append(bridge)
        await bridge.wait_for_log("connected to", timeout=60)
        self.sims[-1].started = time.monotonic()  # a simulator emits once a client is connected

    async def start_sim(self, *, rate: float, sources: int) -> None:
        """Start the input at ``rate``: a simulator the bridge reads, or the one-reading producer."""
        name = f"sim-{len(self.sims) + 1}" if self.sims else "sim"
        if self.producer == "kafka":
            args = ["--rate", f"{rate:g}", "--sources", str(sources)]
            sim = await self._spawn(name, args, module="rtdstream.bench.producer")
            await sim.wait_for_log("producing", timeout=30)
        else:
            args = ["sim", "--host", "127.0.0.1", "--port", str(self.sim_port), "--rate", f"{rate:g}",
                    "--sources", str(sources)]
            sim = await self._spawn(name, args)
            await sim.wait_for_log("listening on", timeout=30)
        self.sims.append(sim)

    async def stop_sim(self) -> int:
        """Stop the simulator (the bridge then sees its streams end); the exit code."""
        sim = self.sim
        return await sim.stop() if sim is not None else 0

    def emitted(self) -> int:
        """Readings the simulators emitted, from their own accounts (complete once they stopped)."""
        return sum(int(n) for sim in self.sims for n in STREAM_CLOSED.findall(sim.log_text()))

    def emitting_seconds(self) -> float:
        """How long simulators ran, from start to stop (their rates are set per second of that)."""
        return sum((sim.stopped or time.monotonic()) - sim.started for sim in self.sims)

    def check_alive(self) -> None:
        for service in [*self.services, *([self.sim] if self.sim else [])]:
            if service.process.returncode is not None:
                raise PipelineFailed(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")

    async def stop(self) -> dict[str, int]:
        """Stop everything: simulator first, then the bridge, then web and workers; name -> exit code."""
        codes = {}
        for service in [*self.sims, *self.services[::-1]]:
            codes[service.name] = service.returncode if service.returncode is not None else await service.stop()
        return codes

    def kill_remaining(self) -> None:
        """SIGKILL whatever still runs: the last resort when a second Ctrl-C cut the clean stop short."""
        for service in [*self.sims, *self.services]:
            if service.process.returncode is None:
                _kill_session(service.pid)

    async def _spawn(self, name: str, args: list[str], module: str = "rtdstream") -> Service:
        log_dir = self.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        cwd = self.run_dir / "work" / name  # Faust keeps a data directory in its working directory
        cwd.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *args,
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=cwd, start_new_session=True,
            )
        return Service(name, process, log_path)


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
