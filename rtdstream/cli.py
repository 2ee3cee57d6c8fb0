"""The ``rtdstream`` command: Faust's own CLI for this app, plus rtdstream's commands.

Faust's commands (``worker``, ``send``, ``tables``, ``agents`` ...) work as a
Faust user expects. The commands below take Faust's global options too
(``rtdstream -l debug bridge``) but run through :func:`rtdstream.runtime.run_main`,
which lets their cleanup finish on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from faust.cli import AppCommand, option

from rtdstream.app import app, settings
from rtdstream.bridge.service import Bridge
from rtdstream.dev import DevOptions, run_dev
from rtdstream.runtime import configure_logging, run_main
from rtdstream.serve import serve_until_stopped
from rtdstream.sim.server import Simulator


class RtdCommand(AppCommand):
    """A long-running rtdstream command: log level from ``-l`` or RTD_LOG_LEVEL, clean stop."""

    abstract: ClassVar[bool] = True

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        configure_logging(self._loglevel or settings.log_level)
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
    base=RtdCommand,
)
async def sim(self: AppCommand, port: int | None, host: str, rate: float, sources: int, seed: int | None) -> None:
    """Serve simulated readings at GET /stream, like the original rtd-sim."""
    simulator = Simulator(rate=rate, sources=sources, seed=seed)
    await serve_until_stopped(simulator.make_app(), host=host, port=port or settings.port or 3000, name="simulator")


@app.command(base=RtdCommand)
async def bridge(self: AppCommand) -> None:
    """Read the streams of RTD_SOURCES into rtd.readings (bad lines into rtd.dlq)."""
    await Bridge(settings).run()


class dev(AppCommand):  # noqa: N801  (the class name is the command name)
    """Run the whole pipeline here: embedded broker (unless RTD_BROKER), simulator, bridge, worker, web."""

    options = [
        option("--port", type=int, default=4000, show_default=True, help="Dashboard and Socket.IO port"),
        option("--sim-port", type=int, default=3000, show_default=True, help="Simulator port"),
        option("--rate", type=float, default=5.0, show_default=True, help="Simulator records per second"),
        option("--sources", type=int, default=3, show_default=True, help="Simulated sensors"),
        option("--worker-web-port", type=int, default=6066, show_default=True, help="Faust worker web port"),
    ]

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        opts = {**self.kwargs, **kwargs}
        dev_options = DevOptions(
            web_port=opts["port"],
            sim_port=opts["sim_port"],
            sim_rate=opts["rate"],
            sim_sources=opts["sources"],
            worker_web_port=opts["worker_web_port"],
        )
        raise SystemExit(run_dev(settings, dev_options))


def main() -> NoReturn:
    """Entry point of the ``rtdstream`` console script."""
    app.main()
