"""``rtdstream dev``: the whole pipeline on one machine, as one supervised process group.

Each stage runs as its own process, exactly as in production, under honcho's
process manager: prefixed output, and on Ctrl-C or SIGTERM every process gets
SIGTERM (then SIGKILL after a grace period) through its own process group, so
nothing is left behind. Without RTD_BROKER the embedded broker is the first
process of the group.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from honcho.manager import Manager

from rtdstream.broker import broker_command, free_port
from rtdstream.config import Settings


@dataclass(frozen=True)
class DevOptions:
    web_port: int = 4000
    sim_port: int = 3000
    sim_rate: float = 5.0
    sim_sources: int = 3
    worker_web_port: int = 6066


def _rtdstream(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "rtdstream", *args])


def dev_processes(settings: Settings, options: DevOptions) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> command line, environment) of the dev stack, broker first when embedded."""
    env = dict(os.environ)
    commands: dict[str, str] = {}
    if settings.broker is None:
        port = free_port()
        commands["broker"] = shlex.join(broker_command(port))
        env["RTD_BROKER"] = f"kafka://127.0.0.1:{port}"
        # The embedded broker forms a group after half the session timeout.
        env.setdefault("RTD_SESSION_TIMEOUT", "6s")
    env["RTD_SOURCES"] = f"http://127.0.0.1:{options.sim_port}/stream"
    env.pop("PORT", None)
    commands["sim"] = _rtdstream(
        "sim", "--port", str(options.sim_port),
        "--rate", str(options.sim_rate), "--sources", str(options.sim_sources),
    )
    commands["bridge"] = _rtdstream("bridge")
    commands["worker"] = _rtdstream("worker", "-l", settings.log_level, "--web-port", str(options.worker_web_port))
    commands["web"] = _rtdstream("web", "--port", str(options.web_port))
    return commands, env


def run_dev(settings: Settings, options: DevOptions) -> int:
    """Run the stack until Ctrl-C/SIGTERM or until one process exits; the exit code."""
    commands, env = dev_processes(settings, options)
    manager = Manager()
    for name, command in commands.items():
        manager.add_process(name, command, env=env)
    manager.loop()
    return manager.returncode or 0
