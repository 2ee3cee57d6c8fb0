"""The machine's MariaDB server, for tests that need real MySQL."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

ENSURE_MARIADB = Path(__file__).resolve().parents[2] / "scripts" / "ensure-mariadb"


@dataclass(frozen=True)
class MariaDB:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""

    @classmethod
    def from_environment(cls) -> MariaDB:
        return cls(
            host=os.environ.get("RTD_TEST_MYSQL_HOST", "127.0.0.1"),
            port=int(os.environ.get("RTD_TEST_MYSQL_PORT", "3306")),
            user=os.environ.get("RTD_TEST_MYSQL_USER", "root"),
            password=os.environ.get("RTD_TEST_MYSQL_PASSWORD", ""),
        )

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            database=database, autocommit=True, connect_timeout=3,
        )

    def is_up(self) -> bool:
        try:
            self.connect().close()
            return True
        except pymysql.MySQLError:
            return False

    def ensure_running(self, timeout: float = 60.0) -> None:
        """Start the server with ``scripts/ensure-mariadb`` if it does not answer."""
        if self.is_up():
            return
        start()
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if time.monotonic() > deadline:
                raise RuntimeError(f"MariaDB did not come up on {self.host}:{self.port}")
            time.sleep(0.5)

    def url(self, database: str) -> str:
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"mysql+aiomysql://{auth}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")

    def drop_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def query(self, database: str, sql: str, *args: object) -> list[tuple]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())


def start() -> None:
    """Start the server the way ``make test`` does (installing it first on a fresh machine)."""
    subprocess.run([str(ENSURE_MARIADB)], check=True)


def stop() -> None:
    subprocess.run(
        ["start-stop-daemon", "--stop", "--oknodo", "--retry", "30", "--exec", "/usr/sbin/mariadbd"],
        check=True,
    )
