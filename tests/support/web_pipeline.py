"""The real pipeline behind a dashboard test: sim -> bridge -> worker -> web, embedded broker, MariaDB.

Shared by the browser tests (a test module must not import another's fixtures).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rtdstream.broker import EmbeddedBroker, free_port
from tests.support.mariadb import MariaDB
from tests.support.processes import ProcessGroup
from tests.support.web import start_web


@dataclass
class WebPipeline:
    url: str
    mariadb: MariaDB
    database: str
    bootstrap: str
    env: dict[str, str]
    processes: ProcessGroup

    def rows(self, sql: str, *args: object) -> list[tuple]:
        return self.mariadb.query(self.database, sql, *args)

    def start_web(self, **env: str) -> str:
        """Another web view on the same topics and database (e.g. with RTD_AUTH_TOKEN); its base URL."""
        _, url = start_web(self.processes, {**self.env, **env}, name=f"web-{len(self.processes.procs)}")
        return url


@contextmanager
def web_pipeline(
    mariadb: MariaDB, workdir: Path, *, sources: int, rate: float = 20, **env: str
) -> Iterator[WebPipeline]:
    """Start the whole pipeline on a fresh database; stop it and drop the database afterwards."""
    database = f"rtd_test_{uuid.uuid4().hex[:12]}"
    mariadb.create_database(database)
    group = ProcessGroup(log_dir=workdir / "logs", cwd=workdir)
    try:
        with EmbeddedBroker() as broker:
            sim_port = free_port()
            base = {key: value for key, value in os.environ.items() if not key.startswith("RTD_")}
            base.pop("PORT", None)
            base.update(
                RTD_BROKER=broker.url,
                RTD_DATABASE_URL=mariadb.url(database),
                RTD_SESSION_TIMEOUT="6s",
                RTD_PARTITIONS="2",
                RTD_WINDOWS="1s,5s",
                RTD_HOPPING_WINDOW="",
                RTD_GRACE="500ms",
                RTD_SOURCES=f"http://127.0.0.1:{sim_port}/stream",
                PYTHONUNBUFFERED="1",
                **env,
            )
            group.start("sim", ["sim", "--port", str(sim_port), "--rate", str(rate), "--sources", str(sources)], base)
            worker = group.start("worker", ["worker", "-l", "info", "--web-port", str(free_port())], base)
            worker.wait_for_log(r"\[\^Worker\]: Ready", timeout=90)
            group.start("bridge", ["bridge"], base)
            _, url = start_web(group, base)
            yield WebPipeline(url, mariadb, database, broker.bootstrap_servers, base, group)
            group.stop_all()
    finally:
        group.stop_all()
        mariadb.drop_database(database)
