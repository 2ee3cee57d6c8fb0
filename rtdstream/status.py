"""``rtdstream status``: what an operator asks first - is it keeping up, and who does the work?

It reads three things, each with a short timeout so a dead component shows up
as such instead of hanging the command:

* the broker: every rtdstream topic's partitions and offsets, and the committed
  offsets of the worker group (``RTD_APP_ID``), which give the lag per partition
  (:mod:`rtdstream.lag`, the same computation as the web view's ``/healthz``);
* the consumer group's members; brokers that report member metadata (Apache
  Kafka does, the embedded broker does not) also name each worker's web URL
  and partitions;
* each worker's web port: ``/healthz`` (its state and partitions) and
  ``/counters/`` (what it processed since it started).

Only an unreachable broker is an error; an unreachable worker is part of the report.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from rtdstream import topics
from rtdstream.config import StatusCommandSettings
from rtdstream.kafka_security import ClientOptions, check_credentials, client_options
from rtdstream.lag import GroupLag, PartitionLag, measure_groups_lag
from rtdstream.topics import BrokerUnavailable

#: Topics the worker group consumes; its lag on the others (outputs) means nothing.
CONSUMED = (topics.READINGS, topics.VALIDATED, topics.WINDOWS)
#: Where ``rtdstream worker`` and ``rtdstream dev`` serve their web views unless told otherwise.
DEFAULT_WORKER_URL = "http://localhost:6066"
#: Counters of the web view live in the web processes (their /metrics), not in workers.
_WEB_COUNTERS = "rtd_web_"

Assignment = dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    client_host: str
    #: The worker's web URL, when the broker reports the member's Faust metadata.
    url: str | None = None
    assignment: Assignment = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One worker as seen on its web port; ``error`` says why it could not be asked."""

    url: str
    state: str | None = None
    assignment: Assignment = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    broker: str
    group: str
    group_state: str
    members: list[GroupMember]
    offsets: GroupLag
    workers: list[WorkerReport]

    def owners(self) -> dict[tuple[str, int], list[str]]:
        """(topic, partition) -> URLs of the workers that own it, as they or the group report it."""
        claims = [(w.url, w.assignment) for w in self.workers]
        claims += [(m.url, m.assignment) for m in self.members if m.url]
        owners: dict[tuple[str, int], list[str]] = defaultdict(list)
        for url, assignment in claims:
            for topic, partitions in assignment.items():
                for partition in partitions:
                    if url not in owners[(topic, partition)]:
                        owners[(topic, partition)].append(url)
        return owners

    def counters(self) -> dict[str, float]:
        """Each counter summed over the workers that answered."""
        totals: dict[str, float] = defaultdict(float)
        for worker in self.workers:
            for name, value in worker.counters.items():
                if not name.startswith(_WEB_COUNTERS):
                    totals[name] += value
        return dict(sorted(totals.items()))

    def as_dict(self) -> dict[str, Any]:
        """The report as ``--json`` prints it."""
        owners = self.owners()
        by_topic: dict[str, list[PartitionLag]] = defaultdict(list)
        for p in self.offsets.partitions:
            by_topic[p.topic].append(p)
        return {
            "broker": self.broker,
            "group": {"id": self.group, "state": self.group_state, "members": len(self.members)},
            "topics": {
                topic: {
                    "consumed": topic in CONSUMED,
                    "lag": sum(p.lag for p in partitions) if topic in CONSUMED else None,
                    "partitions": [
                        {
                            "partition": p.partition,
                            "beginning": p.beginning,
                            "end": p.end,
                            "committed": p.committed,
                            "lag": p.lag if topic in CONSUMED else None,
                            "owners": owners.get((topic, p.partition), []),
                        }
                        for p in partitions
                    ],
                }
                for topic, partitions in by_topic.items()
            },
            "workers": [
                {"url": w.url, "state": w.state, "assignment": w.assignment, "error": w.error}
                for w in self.workers
            ],
            "counters": self.counters(),
        }


async def collect_status(
    settings: StatusCommandSettings, worker_urls: list[str], *, timeout: float = 5.0
) -> ClusterStatus:
    """Ask the broker, then every worker; :class:`BrokerUnavailable` when the broker does not answer."""
    try:
        await check_credentials(settings)
        client = client_options(settings)
        # Every topic, each under the group that consumes it; the outputs under Faust's group commit nothing.
        groups = topics.worker_groups(settings.app_id)
        groups[settings.app_id] += tuple(topic for topic in topics.ALL if topic not in CONSUMED)
        offsets = await measure_groups_lag(client, settings.app_id, groups, timeout=timeout)
        state, members = await _describe_group(client, settings.app_id, timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        cause = exc if str(exc) else TimeoutError(f"no answer within {timeout:g}s")
        raise BrokerUnavailable(settings.broker_url, cause) from None
    urls = list(dict.fromkeys([*worker_urls, *(m.url for m in members if m.url)])) or [DEFAULT_WORKER_URL]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        workers = await asyncio.gather(*(_ask_worker(http, url.rstrip("/")) for url in urls))
    return ClusterStatus(settings.broker_url, settings.app_id, state, members, offsets, list(workers))


async def _describe_group(
    client: ClientOptions, group: str, timeout: float
) -> tuple[str, list[GroupMember]]:
    async with asyncio.timeout(timeout):
        admin = AIOKafkaAdminClient(**client)
        try:
            await admin.start()
            (response,) = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
    (described,) = response.groups
    _error, _group, state, _protocol_type, _protocol, members = described[:6]
    return state or "Empty", [decode_member(*member) for member in members]


def decode_member(
    member_id: str, client_id: str, client_host: str, metadata: bytes, assignment: bytes
) -> GroupMember:
    """A described group member: a Faust worker's metadata names its web URL, its assignment its partitions.

    Brokers that do not pass these on (the embedded one sends empty bytes) give a member with neither.
    """
    return GroupMember(member_id, client_host, _worker_url(metadata), _assigned(assignment))


def _worker_url(metadata: bytes) -> str | None:
    try:
        client = orjson.loads(ConsumerProtocolMemberMetadata.decode(metadata).user_data)
    except ValueError:
        return None
    url = client.get("url") if isinstance(client, dict) else None
    return url if isinstance(url, str) else None


def _assigned(assignment: bytes) -> Assignment:
    try:
        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
    except ValueError:
        return {}
    return {topic: sorted(partitions) for topic, partitions in decoded.assignment}


async def _ask_worker(http: aiohttp.ClientSession, url: str) -> WorkerReport:
    try:
        async with http.get(f"{url}/healthz") as response:
            health = await response.json()
        async with http.get(f"{url}/counters/") as response:
            response.raise_for_status()
            counters = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return WorkerReport(url, error=str(exc) or type(exc).__name__)
    return WorkerReport(url, health.get("state"), health.get("assignment", {}), counters)


def render_text(status: ClusterStatus) -> str:
    """The report as aligned columns for a terminal."""
    data = status.as_dict()
    group = data["group"]
    heading = f"broker {status.broker}, consumer group {group['id']}: {group['state']}, {group['members']} member(s)"
    answered = sum(1 for w in status.workers if not w.error)
    return "\n".join(
        [
            heading,
            "",
            _row("TOPIC", "PARTITION", "END", "COMMITTED", "LAG", "OWNER"),
            *_topic_rows(data["topics"]),
            "",
            "WORKER",
            *(_worker_line(worker) for worker in status.workers),
            "",
            f"COUNTERS (sum over {answered} worker(s), since each started)",
            *([f"  {name:<60} {value:g}" for name, value in data["counters"].items()] or ["  (none)"]),
        ]
    )


def _topic_rows(topics_report: dict[str, Any]) -> list[str]:
    rows = []
    for topic, info in topics_report.items():
        consumed = info["consumed"]
        for p in info["partitions"]:
            committed = ("-" if p["committed"] is None else p["committed"]) if consumed else "-"
            owners = ", ".join(p["owners"]) or ("(none)" if consumed else "(output)")
            rows.append(
                _row(topic, p["partition"], p["end"], committed, p["lag"] if consumed else "-", owners)
            )
    return rows


def _worker_line(worker: WorkerReport) -> str:
    if worker.error:
        return f"  {worker.url}  unreachable: {worker.error}"
    owned = "; ".join(f"{topic} {','.join(map(str, ps))}" for topic, ps in worker.assignment.items())
    return f"  {worker.url}  {worker.state}  {owned or 'no partitions'}"


def render_json(status: ClusterStatus) -> str:
    return orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode()


def _row(*cells: object) -> str:
    widths = (16, 9, 10, 10, 8)
    head = "".join(
        f"{cell!s:<{width}}" if i == 0 else f"{cell!s:>{width}}  "
        for i, (cell, width) in enumerate(zip(cells, widths))
    )
    return f"  {head}{cells[-1]}"
