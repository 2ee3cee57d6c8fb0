"""The Procfile under honcho, as a user runs it: readings reach MySQL and two web views, then a clean stop.

The broker is the Procfile's own optional ``broker`` line (uncommented, as its
comment says), so the embedded broker runs and stops with the other processes.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import psutil

from rtdstream.broker import free_port
from tests.support.mariadb import MariaDB
from tests.support.processes import Proc, ProcessGroup, session_alive, until
from tests.support.web import RecordingClient

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
#: Every process type of the Procfile, its optional broker too; web runs twice in the test.
PROCESS_NAMES = {"web.1", "web.2", "worker.1", "bridge.1", "sim.1", "broker.1"}
IN_FLIGHT_MS = 2000


def base_port() -> int:
    """A base port for honcho with the ports it derives free too: web.1/web.2 and worker.1 (+100)."""
    while True:
        base = free_port()
        if base + 100 < 65536 and all(_is_free(base + offset) for offset in (1, 100)):
            return base


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def procfile_with_broker(directory: Path) -> Path:
    """The Procfile with its commented ``broker`` line uncommented, as a user without Kafka does."""
    text, count = re.subn(r"^#\s*(broker:.*)$", r"\1", PROCFILE.read_text(), flags=re.MULTILINE)
    assert count == 1, "the Procfile has no commented broker line"
    procfile = directory / "Procfile"
    procfile.write_text(text)
    return procfile


def honcho_env() -> dict[str, str]:
    """The user's shell: no rtdstream settings (they come from .env), rtdstream on the PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RTD_") and key != "PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stopped_codes(honcho: Proc) -> dict[str, int]:
    """Exit codes honcho reports per process ("web.1 stopped (rc=0)")."""
    return {name: int(code) for name, code in re.findall(r"(\S+) stopped \(rc=(-?\d+)\)", honcho.log_text())}


def distinct_readings(mariadb: MariaDB, database: str) -> tuple[int, int]:
    return mariadb.query(database, "SELECT COUNT(*), COUNT(DISTINCT source, time) FROM readings")[0]


def stored_times(mariadb: MariaDB, database: str) -> set[int]:
    return {time for (time,) in mariadb.query(database, "SELECT time FROM readings")}


def live_readings(client: RecordingClient) -> set[tuple[int, str]]:
    return {(int(record["time"]), record["speed"]) for record in client.of("newData")}


def overlap(a: set[tuple[int, str]], b: set[tuple[int, str]]) -> tuple[set, set]:
    """Both clients' readings, cut to the time span both were connected for.

    Sources reach a client in batches, not in time order across sources, so the
    newest ``IN_FLIGHT_MS`` are left out: a client may still have been owed some.
    """
    low = max(min(a)[0], min(b)[0])
    high = min(max(a)[0], max(b)[0]) - IN_FLIGHT_MS
    return {r for r in a if low <= r[0] <= high}, {r for r in b if low <= r[0] <= high}


async def test_procfile_runs_every_process_under_honcho_and_stops_cleanly_on_sigterm(
    mysql_url: str, mariadb: MariaDB, processes: ProcessGroup, tmp_path: Path
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    sim_port, broker_port, base = free_port(), free_port(), base_port()
    (tmp_path / ".env").write_text(
        "\n".join(
            [
                f"RTD_BROKER_PORT={broker_port}",
                f"RTD_BROKER=kafka://127.0.0.1:{broker_port}",
                f"RTD_DATABASE_URL={mysql_url}",
                f"RTD_SIM_PORT={sim_port}",
                f"RTD_SOURCES=http://127.0.0.1:{sim_port}/stream",
                "RTD_PARTITIONS=4",
                "RTD_SESSION_TIMEOUT=6s",
            ]
        )
        + "\n"
    )
    honcho = processes.start(
        "honcho",
        [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            str(procfile_with_broker(tmp_path)),
            "-p",
            str(base),
            "-c",
            "web=2",
            "--no-colour",
        ],
        honcho_env(),
        module=False,
    )
    for ready in (
        r"broker\.1 .*embedded broker listening on",
        r"web\.1 .*web view listening",
        r"web\.2 .*web view listening",
        r"worker\.1 .*\[\^Worker\]: Ready",
        r"bridge\.1 .*connected to",
    ):
        await honcho.await_log(ready, timeout=120)

    # Each web process serves all live data: one Socket.IO client on each sees the same readings.
    clients = [await RecordingClient().connect(f"http://127.0.0.1:{port}") for port in (base, base + 1)]
    try:
        for client in clients:
            await client.wait_for(lambda c=client: len(c.of("newData")) >= 25, timeout=60)
        first, second = (live_readings(client) for client in clients)
    finally:
        for client in clients:
            await client.disconnect()
    first, second = overlap(first, second)
    assert len(first) >= 5 and first == second

    # What the dashboards showed was stored in MySQL, once.
    async def shown_readings_stored() -> bool:
        return {time for time, _ in first} <= stored_times(mariadb, database)

    await until(shown_readings_stored, timeout=60, what="the live readings in MySQL")
    count, distinct = distinct_readings(mariadb, database)
    assert count == distinct >= len(first)

    # SIGTERM to honcho: every process stops by itself with exit code 0, and nothing is left behind.
    descendants = psutil.Process(honcho.pid).children(recursive=True)
    assert len(descendants) >= len(PROCESS_NAMES)
    assert processes.terminate(honcho, timeout=60) == 143  # honcho's own code for "stopped by SIGTERM"
    assert stopped_codes(honcho) == dict.fromkeys(PROCESS_NAMES, 0)
    assert "SIGKILL" not in honcho.log_text()
    left = [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [] and session_alive(honcho.pid) == []
    for line in ("web view stopped", "bridge stopped: readings_read=", r"\[\^Worker\]: Closing event loop"):
        assert re.search(line, honcho.log_text()), line
