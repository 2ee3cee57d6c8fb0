"""The worker group as ``rtdstream status`` sees it: who owns which partition."""

from __future__ import annotations

from urllib.parse import urlsplit

from rtdstream.config import Settings, load_settings
from rtdstream.status import CONSUMED, ClusterStatus, collect_status


def settings_of(env: dict[str, str]) -> Settings:
    """The settings the processes started with ``env`` run with (its broker, app id, credentials ...)."""
    return load_settings(**{key: value for key, value in env.items() if key.startswith("RTD_")})


def owners(status: ClusterStatus) -> dict[tuple[str, int], list[str]]:
    """Owners of every partition the worker group consumes (an empty list: nobody owns it)."""
    known = status.owners()
    return {
        (p.topic, p.partition): known.get((p.topic, p.partition), [])
        for p in status.offsets.partitions
        if p.topic in CONSUMED
    }


async def partition_owners(env: dict[str, str], worker_urls: list[str]) -> dict[tuple[str, int], list[str]]:
    """:func:`owners` of the group of ``env``, asking the workers at ``worker_urls``."""
    return owners(await collect_status(settings_of(env), worker_urls))


def port_of(url: str) -> int | None:
    """A worker URL's port: Apache Kafka hands on the URL a worker publishes (its host name), the
    embedded broker does not, and then the URL is the one the status asked (127.0.0.1)."""
    return urlsplit(url).port
