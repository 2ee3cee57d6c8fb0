"""The ``rtdstream`` command: Faust's own CLI for this app, plus rtdstream's commands.

Faust's commands (``worker``, ``send``, ``tables``, ``agents`` ...) work as a
Faust user expects. The commands below take Faust's global options too
(``rtdstream -l debug bridge``) but run through :func:`rtdstream.runtime.run_main`,
which lets their cleanup finish on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import logging
import platform
import sys
from importlib.metadata import version as package_version
from typing import Any, ClassVar, NoReturn

import click
import faust
from faust.cli import AppCommand, argument, option

from rtdstream.app import app, settings
from rtdstream.bridge.service import Bridge
from rtdstream.broker import run_in_foreground
from rtdstream.dev import DevOptions, run_dev
from rtdstream.runtime import configure_logging, run_main
from rtdstream.serve import serve_until_stopped
from rtdstream.sim.server import SPEED_MODELS, Simulator


class RtdCommand(AppCommand):
    """A long-running rtdstream command: log level from ``-l`` or RTD_LOG_LEVEL, clean stop."""

    abstract: ClassVar[bool] = True

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        configure_logging(self._loglevel or settings.log_level, settings.log_format)
        body = self.execute(*self.args, *args, **{**self.kwargs, **kwargs})
        raise SystemExit(run_main(body, name=type(self).__name__))


@app.command(
    option("--port", type=int, default=None, help="HTTP port [default: $PORT or 3000]"),
    option("--host", default="0.0.0.0", show_default=True, help="Address to listen on"),
    option("--rate", type=float, default=1.0, show_default=True,
           help="Records per second per connection, spread over the sources"),
    option("--sources", type=int, default=1, show_default=True,
           help="Independent sensors; above 1 each record carries a source field"),
    option("--seed", type=int, default=None, help="Random seed for repeatable speeds"),
    option("--speeds", type=click.Choice(SPEED_MODELS), default="uniform", show_default=True,
           help="uniform: a fresh 0-50 for each record, as the original; walk: a random walk"),
    base=RtdCommand,
)
async def sim(
    self: AppCommand, port: int | None, host: str, rate: float, sources: int, seed: int | None, speeds: str
) -> None:
    """Serve simulated readings at GET /stream, like the original rtd-sim."""
    simulator = Simulator(rate=rate, sources=sources, seed=seed, speeds=speeds)
    await serve_until_stopped(simulator.make_app(), host=host, port=port or settings.port or 3000, name="simulator")


@app.command(
    option("--port", type=int, default=9092, show_default=True, help="Port to listen on"),
    option("--host", default="127.0.0.1", show_default=True,
           help="Address to listen on, and the one clients are told to use"),
    base=RtdCommand,
)
async def broker(self: AppCommand, port: int, host: str) -> None:
    """Run the embedded Kafka-compatible broker (memory only) in the foreground."""
    await run_in_foreground(host, port)


@app.command(base=RtdCommand)
async def bridge(self: AppCommand) -> None:
    """Read the streams of RTD_SOURCES into rtd.readings (bad lines into rtd.dlq)."""
    await Bridge(settings).run()


@app.command(
    option("--json", "as_json", is_flag=True, default=False, help="Print the report as JSON"),
    option("--worker", "workers", multiple=True, metavar="URL",
           help="Base URL of a worker's web port, repeatable [default: the URLs group members publish, "
           "else http://localhost:6066]"),
    option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for each answer"),
    base=RtdCommand,
)
async def status(self: AppCommand, as_json: bool, workers: tuple[str, ...], timeout: float) -> None:
    """Show topics and partitions, the worker group's lag per partition, workers, and counters."""
    from rtdstream.status import collect_status, render_json, render_text

    # An unreachable broker is reported in one line; aiokafka's connection errors would only repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    report = await collect_status(settings, list(workers), timeout=timeout)
    print(render_json(report) if as_json or self.json else render_text(report), flush=True)


@app.command(
    argument("action", type=click.Choice(["upgrade"])),
    base=RtdCommand,
)
async def db(self: AppCommand, action: str) -> None:
    """`db upgrade`: migrate RTD_DATABASE_URL to this version's schema (the worker also does it at start)."""
    from rtdstream.sink.database import masked
    from rtdstream.sink.migrate import prepare

    revision = await prepare(settings)
    print(f"database {masked(settings.database_url)} is at schema revision {revision}", flush=True)


@app.command(
    option("--port", type=int, default=None, help="HTTP port [default: $PORT or 4000]"),
    option("--host", default="0.0.0.0", show_default=True, help="Address to listen on"),
    base=RtdCommand,
)
async def web(self: AppCommand, port: int | None, host: str) -> None:
    """Serve the dashboard, the Socket.IO live view (newData, reading, window ...) and the HTTP API."""
    # Imported here: the other commands need neither Socket.IO nor the database drivers.
    from rtdstream.kafka_security import check_credentials
    from rtdstream.sink.repository import HistoryRepository
    from rtdstream.web.server import DEFAULT_PORT, WebView

    await check_credentials(settings)  # else a refused password would look like a broker that is down

    view = WebView(settings, HistoryRepository.from_url(settings.database_url))
    await view.run(host=host, port=port or settings.port or DEFAULT_PORT)


@app.command(
    option("--rate", type=float, default=None, help="Readings per second offered in all [default: 5000; 20000 with --soak]"),
    option("--sources", type=int, default=None, help="Simulated sensors [default: one per 500 readings/s, at least 10, but none slower than 1/s]"),
    option("--duration", type=float, default=None, help="Seconds of load, warm-up included [default: 30, longer below 10/s so that 200 readings are measured; 600 with --soak]"),
    option("--warmup", type=float, default=None, help="Seconds left out of the figures [default: 10; 30 with --soak]"),
    option("--clients", type=int, default=10, show_default=True, help="Socket.IO clients subscribed to every source"),
    option("--measuring", type=int, default=2, show_default=True, help="Clients (of --clients) that decode and time every reading"),
    option("--workers", type=int, default=1, show_default=True, help="Worker processes"),
    option("--database-url", default=None, help="Empty MySQL database to use [default: a fresh rtd_bench_<time> on the local MariaDB]"),
    option("--keep", is_flag=True, default=False, help="Keep the fresh database afterwards"),
    option("--output", type=click.Path(file_okay=False), default="bench-results", show_default=True, help="Where each run's directory goes"),
    option("--limits/--no-limits", default=True, help="Also measure the raw aiokafka/executemany limits"),
    option("--limit-rows", type=int, default=None, help="Readings used for the raw limits [default: what the run emitted, at most 500000]"),
    option("--drain-timeout", type=float, default=180.0, show_default=True, help="Longest wait for the pipeline to drain after the load"),
    option("--soak", is_flag=True, default=False, help="Ten minutes at 20000/s: is memory (RSS, descriptors) flat, is latency stable?"),
    option("--ramp", is_flag=True, default=False, help="Raise the rate step by step from --rate until a bound is crossed"),
    option("--ramp-factor", type=float, default=1.5, show_default=True, help="Rate multiplier per ramp step"),
    option("--ramp-max", type=float, default=100_000.0, show_default=True, help="Highest rate a ramp tries"),
    option("--ramp-step", type=float, default=20.0, show_default=True, help="Seconds per ramp step (warm-up included)"),
    option("--max-p99", type=float, default=500.0, show_default=True, help="Ramp bound: client p99 latency, ms"),
    option("--max-lag", type=float, default=10.0, show_default=True, help="Ramp bound: worker group lag at a step's end, in seconds of input"),
    option("--producer", type=click.Choice(["bridge", "kafka"]), default="bridge", show_default=True,
           help="What writes rtd.readings: the simulator through the bridge (envelopes), or a Kafka producer "
           "of one-reading messages"),
    option("--drain", type=click.IntRange(min=1000), default=None, metavar="READINGS",
           help="Instead: fill rtd.readings with this many readings, then time the workers alone draining it"),
    option("--format", "drain_format", type=click.Choice(["single", "envelope"]), default="single", show_default=True,
           help="With --drain: one reading per message, as any producer writes, or the bridge's envelopes of 500"),
    base=RtdCommand,
)
async def bench(self: AppCommand, output: str, drain: int | None, drain_format: str, **flags: Any) -> None:
    """Run the whole pipeline under load; report throughput, latency, lag, CPU, memory and loss (table, JSON, PNG)."""
    from pathlib import Path

    from rtdstream.bench.options import options_from_command_line
    from rtdstream.bench.runner import BenchLostReadings, BenchRun

    if drain is not None:
        from rtdstream.bench.drain import DrainOptions, run_drain

        sources = flags["sources"] or 50
        await run_drain(DrainOptions(drain, drain_format, sources, flags["workers"], Path(output)), settings)
        return
    options = options_from_command_line(output=Path(output), **flags)
    report = await BenchRun(options, settings).run()
    if BenchLostReadings.found_in(report["integrity"]):
        raise BenchLostReadings(report["integrity"])


class dev(AppCommand):  # noqa: N801  (the class name is the command name)
    """Run the whole pipeline here: embedded broker (unless RTD_BROKER), simulator, bridge, worker, web."""

    options = [
        option("--port", type=int, default=4000, show_default=True, help="Dashboard and Socket.IO port"),
        option("--sim-port", type=int, default=3000, show_default=True, help="Simulator port"),
        option("--rate", type=float, default=5.0, show_default=True, help="Simulator records per second"),
        option("--sources", type=int, default=3, show_default=True, help="Simulated sensors"),
        option("--worker-web-port", type=int, default=6066, show_default=True, help="Faust worker web port"),
        option("--verbose", "-v", is_flag=True, default=False, help="Show the Faust worker's start-up banner"),
    ]

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        opts = {**self.kwargs, **kwargs}
        dev_options = DevOptions(
            web_port=opts["port"],
            sim_port=opts["sim_port"],
            sim_rate=opts["rate"],
            sim_sources=opts["sources"],
            worker_web_port=opts["worker_web_port"],
            verbose=opts["verbose"],
        )
        raise SystemExit(run_dev(settings, dev_options))


def main() -> NoReturn:
    """Entry point of the ``rtdstream`` console script."""
    if sys.argv[1:] == ["--version"]:  # Faust's own would print "rtdstream, version Faust x.y.z"
        print(f"rtdstream {package_version('rtdstream')} (Faust {faust.__version__}, Python {platform.python_version()})")
        raise SystemExit(0)
    app.main()
