"""The Kafka topics of the pipeline, and their creation with explicit partitions.

A broker that auto-creates topics picks its own partition count (the embedded
one picks 4), and Faust refuses a table whose changelog differs from its source
topic. So every process that produces or consumes creates the topics first with
the configured count: the Faust worker through its topic declarations, the
bridge and the web view through :func:`ensure_topics`.

Each topic is created with the replication factor, ``min.insync.replicas`` and
retention the settings give (every producer uses ``acks=all``, so a write is
acknowledged once that many replicas hold it). A broker that refuses to
create a topic (more replicas than brokers, no authorisation) stops the
process with one line naming the cause, instead of leaving it to run against
topics that do not exist.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from rtdstream.config import TopicSettings
from rtdstream.errors import UserError
from rtdstream.kafka_security import check_credentials, client_options

log = logging.getLogger(__name__)

#: Raw input: envelopes from the bridge and single readings from any producer.
READINGS = "rtd.readings"
#: Validated readings, one batch of one source per message (added by rtdstream).
VALIDATED = "rtd.validated"
#: Rejected input with the reason and the raw bytes.
DLQ = "rtd.dlq"
#: Final window aggregates, one message per closed window.
WINDOWS = "rtd.windows"
#: Open-window values at a bounded rate, for live dashboards (added by rtdstream).
PARTIALS = "rtd.partials"

ALL = (READINGS, VALIDATED, DLQ, WINDOWS, PARTIALS)


def validation_group(app_id: str) -> str:
    """The consumer group of the workers' validation stage, which reads rtd.readings in bulk.

    The rest of the worker reads rtd.validated and rtd.windows in the Faust
    group named ``app_id``; Kafka does not let one group mix Faust's partition
    assignor with a plain consumer's, so validation has a group of its own.
    """
    return f"{app_id}-validation"


def worker_groups(app_id: str) -> dict[str, tuple[str, ...]]:
    """Each consumer group of the workers and the topics it consumes."""
    return {validation_group(app_id): (READINGS,), app_id: (VALIDATED, WINDOWS)}


async def ensure_topics(settings: TopicSettings, *, retry_for: float = 60.0) -> None:
    """Create missing rtdstream topics; wait for the broker up to ``retry_for`` seconds.

    A topic that already exists with another partition count or replication
    factor is left alone and logged: changing it would reshuffle keys between
    partitions, or is an operator's reassignment.
    """
    await check_credentials(settings)
    admin = await _connected_admin(settings, retry_for)
    try:
        # Describe only topics that exist: a metadata request naming an unknown
        # topic makes auto-creating brokers create it with their own count.
        present = set(await admin.list_topics()) & set(ALL)
        existing = await admin.describe_topics(sorted(present)) if present else []
        described = [info for info in existing if info.get("error_code", 0) == 0 and info["partitions"]]
        for info in described:
            _warn_if_different(info, settings)
        present_names = {info["topic"] for info in described}
        missing = [_new_topic(name, settings) for name in ALL if name not in present_names]
        if missing:
            response = await admin.create_topics(missing)
            _raise_if_refused(response.topic_errors)
            log.info(
                "created topics %s with %d partitions, %d replica(s), min.insync.replicas %d",
                [t.name for t in missing], settings.partitions, settings.replication_factor, settings.insync_replicas,
            )
    finally:
        await admin.close()


async def max_message_bytes(settings: TopicSettings, topic: str) -> int | None:
    """The topic's ``max.message.bytes``, or None where the broker does not say (the embedded one)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
        values = [
            entry["config_value"]
            for resource in response.to_object()["resources"]
            for entry in resource["config_entries"]
            if entry["config_names"] == "max.message.bytes"
        ]
        return int(values[0]) if values and str(values[0]).isdigit() else None
    except (KafkaError, OSError, ValueError, KeyError):
        return None
    finally:
        await admin.close()


def _new_topic(name: str, settings: TopicSettings) -> NewTopic:
    return NewTopic(
        name,
        num_partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        topic_configs={
            "min.insync.replicas": str(settings.insync_replicas),
            "retention.ms": str(round(settings.topic_retention * 1000)),
        },
    )


def _warn_if_different(info: dict[str, Any], settings: TopicSettings) -> None:
    name, partitions = info["topic"], info["partitions"]
    if len(partitions) != settings.partitions:
        log.warning(
            "topic %s has %d partitions, RTD_PARTITIONS is %d; keeping the topic as is",
            name, len(partitions), settings.partitions,
        )
    replicas = len(partitions[0]["replicas"])
    if replicas != settings.replication_factor:
        log.warning(
            "topic %s has %d replica(s), RTD_REPLICATION_FACTOR is %d; keeping the topic as is",
            name, replicas, settings.replication_factor,
        )


def _raise_if_refused(topic_errors: list[tuple[Any, ...]]) -> None:
    """:class:`TopicsRefused` for the first topic the broker would not create; one that exists is fine."""
    for name, code, *message in topic_errors:
        if code == 0 or code == TopicAlreadyExistsError.errno:
            continue  # created, or by another process first
        error = for_code(code)
        detail = (message[0] if message else None) or error.description
        raise TopicsRefused(f"the broker refused to create topic {name}: {error.__name__}: {detail}")


class TopicsRefused(UserError):
    """The broker would not create an rtdstream topic (RTD_REPLICATION_FACTOR above the brokers, no rights)."""


async def _connected_admin(settings: TopicSettings, retry_for: float) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + retry_for
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(**client_options(settings))
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await admin.close()
            if asyncio.get_running_loop().time() + delay > deadline:
                raise BrokerUnavailable(settings.broker_url, exc) from None
            log.warning("broker %s unreachable (%s); retrying in %.1fs", settings.broker_url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class BrokerUnavailable(UserError):
    """The broker did not answer within the start-up wait."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"Kafka broker {url} unreachable: {cause}")
