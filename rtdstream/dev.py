"""``rtdstream dev``: the whole pipeline on one machine, as one supervised process group.

Each stage runs as its own process, exactly as in production, under honcho's
process manager: prefixed output, and on Ctrl-C or SIGTERM every process gets
SIGTERM (then SIGKILL after a grace period) through its own process group, so
nothing is left behind. Without RTD_BROKER the embedded broker runs beside the
group and stops only after every process has stopped, so the worker and the
bridge can still commit and flush on their way out.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from honcho.manager import Manager

from rtdstream.broker import EmbeddedBroker
from rtdstream.config import DevCommandSettings


@dataclass(frozen=True)
class DevOptions:
    web_port: int = 4000
    sim_port: int = 3000
    sim_rate: float = 5.0
    sim_sources: int = 3
    worker_web_port: int = 6066
    #: Show Faust's start-up banner (the worker's tables of settings, agents and topics).
    verbose: bool = False


def _rtdstream(*args: str) -> str:
    # exec: honcho runs each line through a shell; without it SIGTERM stops the shell, not rtdstream.
    return "exec " + shlex.join([sys.executable, "-m", "rtdstream", *args])


def dev_processes(settings: DevCommandSettings, options: DevOptions, broker_url: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> command line, environment) of the dev stack; ``broker_url`` is the embedded broker's, if any."""
    env = dict(os.environ)
    commands: dict[str, str] = {}
    if broker_url is not None:
        env["RTD_BROKER"] = broker_url
        # The embedded broker forms a group after half the session timeout.
        env.setdefault("RTD_SESSION_TIMEOUT", "6s")
    env["RTD_SOURCES"] = f"http://127.0.0.1:{options.sim_port}/stream"
    env.pop("PORT", None)
    commands["sim"] = _rtdstream(
        "sim", "--port", str(options.sim_port),
        "--rate", str(options.sim_rate), "--sources", str(options.sim_sources),
    )
    commands["bridge"] = _rtdstream("bridge")
    quiet = () if options.verbose else ("--quiet",)  # Faust's --quiet leaves the banner out, not the log
    commands["worker"] = _rtdstream(
        *quiet, "worker", "-l", settings.log_level, "--web-port", str(options.worker_web_port)
    )
    commands["web"] = _rtdstream("web", "--port", str(options.web_port))
    return commands, env


def run_dev(settings: DevCommandSettings, options: DevOptions) -> int:
    """Run the stack until Ctrl-C/SIGTERM or until one process exits; the exit code."""
    if settings.broker is not None:
        return _run_group(settings, options, broker_url=None)
    with EmbeddedBroker() as broker:
        print(f"embedded broker on {broker.url}", flush=True)
        return _run_group(settings, options, broker_url=broker.url)


def _run_group(settings: DevCommandSettings, options: DevOptions, broker_url: str | None) -> int:
    commands, env = dev_processes(settings, options, broker_url)
    manager = Manager()
    for name, command in commands.items():
        manager.add_process(name, command, env=env)
    manager.loop()
    return manager.returncode or 0
