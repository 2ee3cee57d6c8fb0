"""Run rtdstream commands as real processes, the way users and Procfile runners do."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rtdstream.broker import free_port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while (match := self._find(pattern, count, deadline, timeout)) is None:
            time.sleep(0.1)
        return match

    async def await_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> re.Match[str]:
        """:meth:`wait_for_log` for async tests: the test's event loop keeps running meanwhile."""
        deadline = time.monotonic() + timeout
        while (match := self._find(pattern, count, deadline, timeout)) is None:
            await asyncio.sleep(0.1)
        return match

    def _find(self, pattern: str, count: int, deadline: float, timeout: float) -> re.Match[str] | None:
        matches = list(re.finditer(pattern, self.log_text()))
        if len(matches) >= count:
            return matches[count - 1]
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before logging {pattern!r}:\n"
                                 + self.log_text()[-4000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"{self.name} did not log {pattern!r} within {timeout}s:\n"
                                 + self.log_text()[-4000:])
        return None

    def is_running(self) -> bool:
        return self.popen.poll() is None


@dataclass
class ProcessGroup:
    """Processes of one test; each in its own session so nothing it spawns can escape."""

    log_dir: Path
    cwd: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str], *, module: bool = True) -> Proc:
        """Start ``python -m rtdstream <args>`` (or ``args`` as is when ``module`` is false)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        command = [sys.executable, "-m", "rtdstream", *args] if module else args
        log_file = log_path.open("wb")
        popen = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True
        )
        log_file.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def terminate(self, proc: Proc, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the exit code of a clean shutdown."""
        proc.popen.send_signal(signal.SIGTERM)
        return proc.popen.wait(timeout=timeout)

    def kill(self, proc: Proc) -> None:
        """``kill -9`` the process and everything in its session."""
        _killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.is_running():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            _killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)

    def dump_logs(self) -> None:
        for proc in self.procs:
            sys.stderr.write(f"\n----- {proc.name} (pid {proc.pid}) -----\n{proc.log_text()[-6000:]}\n")


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def session_alive(pid: int) -> list[int]:
    """Pids still running in the session that ``pid`` led (empty when all are gone)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == pid:
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(int(entry.name))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return alive


#: What the simulator logs when a client goes away: how many records that stream carried.
STREAM_CLOSED = r"stream closed for \S+ after (\d+) records"


def sim_total(sim: Proc) -> int:
    """Records a finished simulator sent over all its streams."""
    return sum(int(n) for n in re.findall(STREAM_CLOSED, sim.log_text()))


async def start_worker(
    processes: ProcessGroup, env: dict[str, str], *, name: str = "worker", web_port: int | None = None,
    ready: bool = True, app: str = "rtdstream",
) -> tuple[Proc, str]:
    """A Faust worker with its web views on ``web_port`` (else a free port): (process, their base URL).

    With ``ready`` it returns once the worker logged Ready (its agents run); without, at once, for
    a worker that joins a busy group and is watched by other means. ``app`` is the module whose
    command line runs it (``python -m <app> worker``): the rtdstream worker, or a test's own Faust app.
    """
    port = web_port or free_port()
    args = [sys.executable, "-m", app, "worker", "-l", "info", "--web-port", str(port)]
    worker = processes.start(name, args, env, module=False)
    if ready:
        await worker.await_log(r"\[\^Worker\]: Ready", timeout=90)
    return worker, f"http://127.0.0.1:{port}"


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``condition`` (plain or async) every ``interval`` s until it holds; AssertionError naming ``what`` after
    ``timeout``. The one way tests wait for a condition, so every wait fails the same way and says what it waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
