"""The ``rtdstream`` command: rtdstream's own commands, and Faust's for the worker.

A thin click front. rtdstream's commands (``sim``, ``broker``, ``bridge``,
``web``, ``status``, ``db``, ``dev``, ``bench``) each read and validate only
their own settings (:mod:`rtdstream.config`) and import only what they run:
the simulator starts without importing Faust or the agents, and a database
URL it never uses cannot stop it. Faust's commands (``worker``, ``send``,
``tables``, ``agents`` ...) are handed, with the whole command line, to
Faust's own CLI for :mod:`rtdstream.app`, so they work as a Faust user expects
and ``rtdstream worker`` equals ``faust -A rtdstream.app worker``.

Faust's global options are accepted before any command (``rtdstream -l debug
bridge``); rtdstream's commands use ``-l`` and ``--json``. Long-running commands
run through :func:`rtdstream.runtime.run_main`, which lets their cleanup finish
on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, NoReturn

import click
from click import argument, option

from rtdstream.config import (
    BridgeCommandSettings,
    DatabaseCommandSettings,
    DevCommandSettings,
    LogSettings,
    Settings,
    SettingsT,
    SimCommandSettings,
    StatusCommandSettings,
    WebSettings,
    settings_or_exit,
)
from rtdstream.runtime import configure_logging, run_main
from rtdstream.sim.server import SPEED_MODELS

#: Faust's own commands (``faust --help``), run by Faust's CLI for rtdstream.app.
FAUST_COMMANDS = (
    "agents", "clean-versions", "completion", "livecheck", "model", "models", "reset", "send", "tables", "worker",
)
_LOG_LEVELS = ("crit", "critical", "error", "warn", "warning", "info", "debug")


@dataclass
class GlobalOptions:
    """The global options rtdstream's own commands use (the others are Faust's, for Faust's commands)."""

    loglevel: str | None = None
    json: bool = False
    quiet: bool = False


class RtdGroup(click.Group):
    """rtdstream's commands, plus a stand-in for each of Faust's that hands the command line to Faust."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *FAUST_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in FAUST_COMMANDS:
            return _faust_command(cmd_name)
        return super().get_command(ctx, cmd_name)


def _faust_command(name: str) -> click.Command:
    """A command that runs Faust's CLI on the original command line (options and ``--help`` included)."""
    return click.Command(
        name,
        callback=_run_faust,
        help=f"Faust's `{name}` command for the rtdstream app (rtdstream {name} --help).",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _run_faust() -> NoReturn:
    """Import the Faust app (reading every setting) and let Faust's CLI parse ``sys.argv`` itself."""
    from rtdstream.app import app

    app.main()


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    # Faust's own option would print "rtdstream, version Faust x.y.z"; its version is read without importing it.
    faust = package_version("faust-streaming")
    click.echo(f"rtdstream {package_version('rtdstream')} (Faust {faust}, Python {platform.python_version()})")
    ctx.exit()


@click.group(cls=RtdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
        help="Show the versions of rtdstream, Faust and Python, and exit.")
@option("--loglevel", "-l", type=click.Choice(_LOG_LEVELS, case_sensitive=False), default=None,
        help="Logging level [default: $RTD_LOG_LEVEL or info].")
@option("--json", "as_json", is_flag=True, default=False, help="Return output in machine-readable JSON format.")
@option("--quiet/--no-quiet", "-q", default=False, help="Silence output to <stdout>/<stderr> (Faust's commands).")
@option("--app", "-A", hidden=True, help="Faust's: the app is always rtdstream.app.")
@option("--debug/--no-debug", default=False, help="Faust's commands: debugging output, and the blocking detector.")
@option("--workdir", "-W", default=None, help="Faust's commands: working directory to change to after start.")
@option("--datadir", "-D", default=None, help="Faust's commands: directory to keep application state.")
@option("--loop", "-L", default=None, help="Faust's commands: event loop implementation.")
@option("--logfile", "-f", default=None, help="Faust's commands: path to logfile (default is <stderr>).")
@option("--blocking-timeout", default=None, type=float, help="Faust's commands, with --debug: blocking detector timeout.")
@option("--console-port", default=None, type=int, help="Faust's commands, with --debug: debugger console port.")
@click.pass_context
def cli(ctx: click.Context, loglevel: str | None, as_json: bool, quiet: bool, **_faust_options: Any) -> None:
    """Real-time sensor data: simulator, bridge, Faust worker, web view and their tools."""
    ctx.obj = GlobalOptions(loglevel=loglevel, json=as_json, quiet=quiet)


def run_command(
    kind: type[SettingsT], name: str, body: Callable[[SettingsT], Coroutine[Any, Any, None]]
) -> NoReturn:
    """Read ``kind``, set up logging (``-l`` over RTD_LOG_LEVEL), and run ``body`` until it ends or a signal."""
    settings = settings_or_exit(kind)
    options = click.get_current_context().find_object(GlobalOptions) or GlobalOptions()
    configure_logging(options.loglevel or settings.log_level, settings.log_format)
    raise SystemExit(run_main(body(settings), name=name))


@cli.command()
@option("--port", type=int, default=None, help="HTTP port [default: $PORT or 3000]")
@option("--host", default="0.0.0.0", show_default=True, help="Address to listen on")
@option("--rate", type=float, default=1.0, show_default=True,
        help="Records per second per connection, spread over the sources")
@option("--sources", type=int, default=1, show_default=True,
        help="Independent sensors; above 1 each record carries a source field")
@option("--seed", type=int, default=None, help="Random seed for repeatable speeds")
@option("--speeds", type=click.Choice(SPEED_MODELS), default="uniform", show_default=True,
        help="uniform: a fresh 0-50 for each record, as the original; walk: a random walk")
def sim(port: int | None, host: str, rate: float, sources: int, seed: int | None, speeds: str) -> NoReturn:
    """Serve simulated readings at GET /stream, like the original rtd-sim."""

    async def body(settings: SimCommandSettings) -> None:
        from rtdstream.serve import serve_until_stopped
        from rtdstream.sim.server import Simulator

        simulator = Simulator(rate=rate, sources=sources, seed=seed, speeds=speeds)
        await serve_until_stopped(simulator.make_app(), host=host, port=port or settings.port or 3000, name="simulator")

    run_command(SimCommandSettings, "sim", body)


@cli.command()
@option("--port", type=int, default=9092, show_default=True, help="Port to listen on")
@option("--host", default="127.0.0.1", show_default=True,
        help="Address to listen on, and the one clients are told to use")
def broker(port: int, host: str) -> NoReturn:
    """Run the embedded Kafka-compatible broker (memory only) in the foreground."""

    async def body(settings: LogSettings) -> None:
        from rtdstream.broker import run_in_foreground

        await run_in_foreground(host, port)

    run_command(LogSettings, "broker", body)


@cli.command()
def bridge() -> NoReturn:
    """Read the streams of RTD_SOURCES into rtd.readings (bad lines into rtd.dlq)."""

    async def body(settings: BridgeCommandSettings) -> None:
        from rtdstream.bridge.service import Bridge

        await Bridge(settings).run()

    run_command(BridgeCommandSettings, "bridge", body)


@cli.command()
@option("--json", "as_json", is_flag=True, default=False, help="Print the report as JSON")
@option("--worker", "workers", multiple=True, metavar="URL",
        help="Base URL of a worker's web port, repeatable [default: the URLs group members publish, "
        "else http://localhost:6066]")
@option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for each answer")
@click.pass_obj
def status(options: GlobalOptions, as_json: bool, workers: tuple[str, ...], timeout: float) -> NoReturn:
    """Show topics and partitions, the worker group's lag per partition, workers, and counters."""

    async def body(settings: StatusCommandSettings) -> None:
        from rtdstream.status import collect_status, render_json, render_text

        # An unreachable broker is reported in one line; aiokafka's connection errors would only repeat it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        report = await collect_status(settings, list(workers), timeout=timeout)
        print(render_json(report) if as_json or options.json else render_text(report), flush=True)

    run_command(StatusCommandSettings, "status", body)


@cli.command()
@argument("action", type=click.Choice(["upgrade"]))
def db(action: str) -> NoReturn:
    """`db upgrade`: migrate RTD_DATABASE_URL to this version's schema (the worker also does it at start)."""

    async def body(settings: DatabaseCommandSettings) -> None:
        from rtdstream.sink.database import masked
        from rtdstream.sink.migrate import prepare

        revision = await prepare(settings)
        print(f"database {masked(settings.database_url)} is at schema revision {revision}", flush=True)

    run_command(DatabaseCommandSettings, "db", body)


@cli.command()
@option("--port", type=int, default=None, help="HTTP port [default: $PORT or 4000]")
@option("--host", default="0.0.0.0", show_default=True, help="Address to listen on")
def web(port: int | None, host: str) -> NoReturn:
    """Serve the dashboard, the Socket.IO live view (newData, reading, window ...) and the HTTP API."""

    async def body(settings: WebSettings) -> None:
        from rtdstream.kafka_security import check_credentials
        from rtdstream.sink.repository import HistoryRepository
        from rtdstream.web.server import DEFAULT_PORT, WebView

        await check_credentials(settings)  # else a refused password would look like a broker that is down
        view = WebView(settings, HistoryRepository.from_url(settings.database_url))
        await view.run(host=host, port=port or settings.port or DEFAULT_PORT)

    run_command(WebSettings, "web", body)


@cli.command()
@option("--rate", type=float, default=None, help="Readings per second offered in all [default: 5000; 20000 with --soak]")
@option("--sources", type=int, default=None, help="Simulated sensors [default: one per 500 readings/s, at least 10, but none slower than 1/s]")
@option("--duration", type=float, default=None, help="Seconds of load, warm-up included [default: 30, longer below 10/s so that 200 readings are measured; 600 with --soak]")
@option("--warmup", type=float, default=None, help="Seconds left out of the figures [default: 10; 30 with --soak]")
@option("--clients", type=int, default=10, show_default=True, help="Socket.IO clients subscribed to every source")
@option("--measuring", type=int, default=2, show_default=True, help="Clients (of --clients) that decode and time every reading")
@option("--workers", type=int, default=1, show_default=True, help="Worker processes")
@option("--database-url", default=None, help="Empty MySQL database to use [default: a fresh rtd_bench_<time> on the local MariaDB]")
@option("--keep", is_flag=True, default=False, help="Keep the fresh database afterwards")
@option("--output", type=click.Path(file_okay=False), default="bench-results", show_default=True, help="Where each run's directory goes")
@option("--limits/--no-limits", default=True, help="Also measure the raw aiokafka/executemany limits")
@option("--limit-rows", type=int, default=None, help="Readings used for the raw limits [default: what the run emitted, at most 500000]")
@option("--drain-timeout", type=float, default=180.0, show_default=True, help="Longest wait for the pipeline to drain after the load")
@option("--soak", is_flag=True, default=False, help="Ten minutes at 20000/s: is memory (RSS, descriptors) flat, is latency stable?")
@option("--ramp", is_flag=True, default=False, help="Raise the rate step by step from --rate until a bound is crossed")
@option("--ramp-factor", type=float, default=1.5, show_default=True, help="Rate multiplier per ramp step")
@option("--ramp-max", type=float, default=100_000.0, show_default=True, help="Highest rate a ramp tries")
@option("--ramp-step", type=float, default=20.0, show_default=True, help="Seconds per ramp step (warm-up included)")
@option("--max-p99", type=float, default=500.0, show_default=True, help="Ramp bound: client p99 latency, ms")
@option("--max-lag", type=float, default=10.0, show_default=True, help="Ramp bound: worker group lag at a step's end, in seconds of input")
@option("--producer", type=click.Choice(["bridge", "kafka"]), default="bridge", show_default=True,
        help="What writes rtd.readings: the simulator through the bridge (envelopes), or a Kafka producer "
           "of one-reading messages")
@option("--drain", type=click.IntRange(min=1000), default=None, metavar="READINGS",
        help="Instead: fill rtd.readings with this many readings, then time the workers alone draining it")
@option("--format", "drain_format", type=click.Choice(["single", "envelope"]), default="single", show_default=True,
        help="With --drain: one reading per message, as any producer writes, or the bridge's envelopes of 500")
def bench(output: str, drain: int | None, drain_format: str, **flags: Any) -> NoReturn:
    """Run the whole pipeline under load; report throughput, latency, lag, CPU, memory and loss (table, JSON, PNG)."""

    async def body(settings: Settings) -> None:
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

    run_command(Settings, "bench", body)


@cli.command()
@option("--port", type=int, default=4000, show_default=True, help="Dashboard and Socket.IO port")
@option("--sim-port", type=int, default=3000, show_default=True, help="Simulator port")
@option("--rate", type=float, default=5.0, show_default=True, help="Simulator records per second")
@option("--sources", type=int, default=3, show_default=True, help="Simulated sensors")
@option("--worker-web-port", type=int, default=6066, show_default=True, help="Faust worker web port")
@option("--verbose", "-v", is_flag=True, default=False, help="Show the Faust worker's start-up banner")
def dev(port: int, sim_port: int, rate: float, sources: int, worker_web_port: int, verbose: bool) -> NoReturn:
    """Run the whole pipeline here: embedded broker (unless RTD_BROKER), simulator, bridge, worker, web."""
    from rtdstream.dev import DevOptions, run_dev

    settings = settings_or_exit(DevCommandSettings)
    options = DevOptions(
        web_port=port, sim_port=sim_port, sim_rate=rate, sim_sources=sources,
        worker_web_port=worker_web_port, verbose=verbose,
    )
    raise SystemExit(run_dev(settings, options))


def main() -> NoReturn:
    """Entry point of the ``rtdstream`` console script."""
    cli.main(prog_name="rtdstream")
    raise SystemExit(0)  # click's main exits itself; for the type checker
