"""Every message reaches an agent through a worker's start and a rebalance (rtdstream.transport).

Faust 0.15.3 lost messages in both: records fetched while a rebalance was in
progress were dropped from the agents' queues, and the seek that should have
re-read them left partitions without a committed offset where they were. The
worker here (``tests/support/rebalance_worker.py``) has a table and a slow
agent, as rtdstream's worker does, and never commits before the rebalance.
On Faust's own consumer the first test lost 375 of the 400 messages, the
second 147.

The last two tests are about table recovery (rtdstream.recovery_watchdog): the
worker's consumer drops the changelog records it fetched, as Faust's does with
a batch a rebalance interrupts, and the recovery must read them again or end
the worker.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rtdstream.broker import EmbeddedBroker
from rtdstream.retry import EXIT_BUG
from tests.support.kafka import produce_at
from tests.support.processes import Proc, ProcessGroup, start_worker, until
from tests.support.rebalance_worker import CHANGELOG, PARTITIONS, TOPIC

ROOT = Path(__file__).resolve().parent.parent
PER_PARTITION = 100
EVERY_MESSAGE = {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
#: Logged when a worker has its partitions, at start and after each rebalance.
RECOVERED = r"Recovery\]: Worker ready"


async def backlog(broker: EmbeddedBroker) -> None:
    """PER_PARTITION messages in each partition and some table state, before any worker runs.

    No offset is committed. The state makes the worker recover its table
    (read the changelog) at start, which is when Faust starts its fetcher.
    Both topics are created with the worker's PARTITIONS first: a topic Apache Kafka
    creates on the first produce has the broker's num.partitions (8), and the second
    worker then got all four partitions with messages and the first four empty ones.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1) for topic in (TOPIC, CHANGELOG)])
    finally:
        await admin.close()
    messages = [(p, None, f"{p}-{o}".encode()) for o in range(PER_PARTITION) for p in range(PARTITIONS)]
    await produce_at(broker.bootstrap_servers, TOPIC, messages)
    await produce_at(
        broker.bootstrap_servers, CHANGELOG, [(p, f'"key-{p}"'.encode(), b"1") for p in range(PARTITIONS)]
    )


async def start_rebalance_worker(
    processes: ProcessGroup, env: dict[str, str], out: Path, *, seek_delay: float = 0.0, **options: str
) -> Proc:
    """The test app of :mod:`tests.support.rebalance_worker`, writing what it processes to ``out``.

    ``options`` are its other settings, named without their ``REBALANCE_`` prefix.
    """
    worker_env = {
        **env,
        "PYTHONPATH": str(ROOT),
        "REBALANCE_OUT": str(out),
        "REBALANCE_SEEK_DELAY": str(seek_delay),
        **{f"REBALANCE_{name.upper()}": value for name, value in options.items()},
    }
    worker, _ = await start_worker(
        processes, worker_env, name=out.stem, ready=False, app="tests.support.rebalance_worker"
    )
    return worker


def processed(*outs: Path) -> Counter[tuple[int, int]]:
    """How often each (partition, offset) was processed, over the outputs of all workers."""
    counts: Counter[tuple[int, int]] = Counter()
    for out in outs:
        if out.exists():
            for line in out.read_text().splitlines():
                partition, offset = line.split()
                counts[int(partition), int(offset)] += 1
    return counts


async def until_every_message(*outs: Path, timeout: float) -> None:
    """Wait until the workers writing ``outs`` processed every message of the backlog."""
    def missing() -> list[tuple[int, int]]:
        return sorted(EVERY_MESSAGE - processed(*outs).keys())

    try:
        await until(lambda: not missing(), timeout=timeout, what="every message processed")
    except AssertionError as timed_out:
        left = missing()
        raise AssertionError(f"{len(left)} messages never processed: {left[:3]} ... {left[-3:]}") from timed_out


async def test_a_worker_starting_on_a_backlog_processes_every_message(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    # The seek to committed offsets waits 1.5 s: Faust has resumed the stream
    # partitions by then, with its fetcher running for table recovery, and
    # used to hand out (and then drop) the backlog in that time.
    await backlog(broker)
    out = tmp_path / "worker.txt"
    worker = await start_rebalance_worker(processes, rtd_env, out, seek_delay=1.5)
    await worker.await_log(RECOVERED, timeout=90)

    await until_every_message(out, timeout=60)
    assert processed(out).keys() == EVERY_MESSAGE


async def test_a_rebalance_before_the_first_commit_loses_nothing(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    await backlog(broker)
    first_out, second_out = tmp_path / "first.txt", tmp_path / "second.txt"
    first = await start_rebalance_worker(processes, rtd_env, first_out)
    await first.await_log(RECOVERED, timeout=90)
    await until(lambda: _at_least(first_out, 20), timeout=30, what="the first worker's first messages")
    assert sum(processed(first_out).values()) < len(EVERY_MESSAGE) // 2  # the rest of its fetch is queued

    # A second member: the group rebalances, the first worker's queues are
    # cleared, and it keeps some of its partitions, none of them committed.
    second = await start_rebalance_worker(processes, rtd_env, second_out)
    await second.await_log(RECOVERED, timeout=90)
    await first.await_log(RECOVERED, timeout=30, count=2)

    await until_every_message(first_out, second_out, timeout=60)
    assert 0 < len({p for p, _ in processed(second_out)}) < PARTITIONS  # the two shared the partitions


async def test_a_recovery_whose_changelog_records_were_lost_reads_them_again(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    # The consumer fetches the changelog and drops the batch, as Faust's getmany
    # does when a rebalance stops the flow while it hands the batch out: the
    # recovery waits for records that nothing fetches again (rtdstream.recovery_watchdog).
    await backlog(broker)
    out = tmp_path / "worker.txt"
    worker = await start_rebalance_worker(processes, rtd_env, out, drop_changelog="first", stall_after="2")
    await worker.await_log(r"recovery of \S+-changelog\[\d\] stalled at offset -1 of 0 .* reading it again", timeout=90)
    await worker.await_log(RECOVERED, timeout=30)

    await until_every_message(out, timeout=60)


async def test_a_recovery_that_rewinding_cannot_bring_back_ends_the_worker_with_the_bug_status(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    await backlog(broker)
    worker = await start_rebalance_worker(
        processes, rtd_env, tmp_path / "worker.txt", drop_changelog="always", stall_after="1"
    )
    await until(lambda: not worker.is_running(), timeout=90, what="the worker to give up its recovery")

    assert worker.popen.returncode == EXIT_BUG
    log = worker.log_text()
    assert re.search(r"CRITICAL\] table recovery failed", log), log[-3000:]
    assert re.search(r"RecoveryStalled: recovery of \S+-changelog\[\d\] stayed at offset -1 of 0 through 3 rewinds",
                     log), log[-3000:]
    assert "Worker ready" not in log


async def _at_least(out: Path, count: int) -> bool:
    return sum(processed(out).values()) >= count


pytestmark = pytest.mark.timeout(180)
