"""until_acknowledged(send_all) returns only once the broker has every record, whatever failed on the way."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

from rtdstream.delivery import OrderedDeliveries, Record, acknowledged, send_all, until_acknowledged


class Topic:
    """Stands in for a Faust topic: ``send`` hands back the delivery future, settled by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, *, key: bytes | None, value: bytes, force: bool = False) -> asyncio.Future[None]:
        self.sent.append((key, value))
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    async def settle(self, count: int, error: Exception | None = None) -> None:
        """Wait for ``count`` sends in all, then acknowledge (or fail) the unsettled ones."""
        while len(self.deliveries) < count:
            await asyncio.sleep(0.01)
        for delivery in self.deliveries:
            if delivery.done():
                continue
            if error:
                delivery.set_exception(error)
            else:
                delivery.set_result(None)


async def test_returns_only_after_every_record_is_acknowledged() -> None:
    topic = Topic()
    sending = asyncio.create_task(
        send_until_acknowledged([(topic, b"a", b"1"), (topic, b"b", b"2")], what="test", input_events=[])
    )
    await topic.settle(2)
    await asyncio.wait_for(sending, timeout=5)
    assert topic.sent == [(b"a", b"1"), (b"b", b"2")]


async def test_a_failed_delivery_sends_the_whole_set_again(caplog: pytest.LogCaptureFixture) -> None:
    topic = Topic()
    records = [(topic, b"a", b"1"), (topic, b"b", b"2")]
    sending = asyncio.create_task(send_until_acknowledged(records, what="validated readings", input_events=[]))
    await topic.settle(2, error=ConnectionError("broker went away"))
    while len(topic.sent) < 4:  # sent again, after a backoff
        await asyncio.sleep(0.01)
    assert not sending.done()

    await topic.settle(4)
    await asyncio.wait_for(sending, timeout=5)
    assert topic.sent == [(b"a", b"1"), (b"b", b"2")] * 2
    assert (
        "validated readings not acknowledged by the broker (ConnectionError('broker went away'))"
        in caplog.text
    )


async def test_every_failed_delivery_is_retrieved_not_only_the_first(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    deliveries = [loop.create_future() for _ in range(3)]
    for delivery in deliveries:
        delivery.set_exception(ConnectionError("broker went away"))
    try:
        await acknowledged(deliveries)
    except ConnectionError:
        pass
    else:
        pytest.fail("a failed delivery was taken for acknowledged")
    del deliveries, delivery
    gc.collect()
    assert "never retrieved" not in caplog.text  # asyncio's traceback for an exception nobody looked at


class Message:
    """Stands in for a Faust message: counts the references that keep it from being acknowledged."""

    def __init__(self) -> None:
        self.refcount = 0

    def incref(self) -> None:
        self.refcount += 1


async def test_a_stop_while_waiting_is_not_swallowed_and_withholds_the_input() -> None:
    topic = Topic()
    event = SimpleNamespace(message=Message())
    sending = asyncio.create_task(send_until_acknowledged([(topic, None, b"1")], what="test", input_events=[event]))
    while not topic.sent:
        await asyncio.sleep(0.01)
    sending.cancel()  # the worker stopping while the broker has not acknowledged
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert event.message.refcount == 1  # never acknowledged here: the next start reads it again
    # The delivery still belongs to the producer, which settles it later (Faust logs a traceback
    # when the future it settles was cancelled under it).
    assert not topic.deliveries[0].cancelled()


pytestmark = pytest.mark.timeout(30)


async def send_until_acknowledged(records: list[Record], *, what: str, input_events: list) -> None:
    """How the agents deliver: every record, again and again until the broker has acknowledged each."""
    await until_acknowledged(lambda: send_all(records), what=what, input_events=input_events)


class Batch:
    """One batch's events (each counts its references) and its two delivery steps, settled by the test."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.refs = 1  # the reference take_events releases once the agent moves on
        self.results: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.changelog: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        message = SimpleNamespace(incref=self._incref)
        self.events = [SimpleNamespace(message=message, ack=self._ack)]

    def _incref(self) -> None:
        self.refs += 1

    def _ack(self) -> None:
        self.refs -= 1
        self.log.append(f"release {self.name}")

    async def first(self) -> None:
        await self.results
        self.log.append(f"results {self.name}")

    async def then(self) -> None:
        self.log.append(f"changelog {self.name} sent")
        await self.changelog

    async def submit(self, deliveries: OrderedDeliveries) -> None:
        await deliveries.submit(self.events, self.first, self.then)
        self.refs -= 1  # take_events acknowledges the batch as the agent takes the next one


async def until_logged(log: list[str], entry: str) -> None:
    while entry not in log:
        await asyncio.sleep(0.001)


async def two_batches_submitted(limit: int = 4) -> tuple[OrderedDeliveries, Batch, Batch, list[str]]:
    """Two batches handed to one OrderedDeliveries, nothing acknowledged yet; and the shared log."""
    log: list[str] = []
    deliveries = OrderedDeliveries(limit)
    first, second = Batch("1", log), Batch("2", log)
    await first.submit(deliveries)
    await second.submit(deliveries)
    return deliveries, first, second, log


async def test_a_later_batch_waits_for_the_earlier_one_before_its_state_goes_out_and_its_input_is_released() -> None:
    deliveries, first, second, log = await two_batches_submitted()

    second.results.set_result(None)  # the later batch's windows are acknowledged first
    await until_logged(log, "results 2")
    first.results.set_result(None)
    await until_logged(log, "changelog 1 sent")
    second.changelog.set_result(None)  # no effect yet: the second changelog is not even sent
    first.changelog.set_result(None)
    await asyncio.wait_for(deliveries.settle(), timeout=5)

    assert log == ["results 2", "results 1", "changelog 1 sent", "release 1", "changelog 2 sent", "release 2"]
    assert first.refs == second.refs == 0


async def test_at_most_limit_batches_are_in_flight() -> None:
    log: list[str] = []
    deliveries = OrderedDeliveries(limit=2)
    first, second = Batch("1", log), Batch("2", log)
    await first.submit(deliveries)

    async def submit_second() -> None:
        log.append("submitting 2")
        await second.submit(deliveries)
        log.append("took more input")  # in the same step as "submitting 2", had submit() not waited

    submitting = asyncio.create_task(submit_second())
    await until_logged(log, "submitting 2")
    first.results.set_result(None)
    first.changelog.set_result(None)
    await asyncio.wait_for(submitting, timeout=5)
    # Two in flight: the agent took more input only once the first batch was done.
    assert log == ["submitting 2", "results 1", "changelog 1 sent", "release 1", "took more input"]
    await deliveries.abandon()


async def test_abandoned_batches_and_those_after_them_keep_their_input() -> None:
    deliveries, first, second, log = await two_batches_submitted()
    second.results.set_result(None)
    second.changelog.set_result(None)
    await until_logged(log, "results 2")

    await deliveries.abandon()  # the worker stops while the first batch waits for the broker

    assert "release 2" not in log and "release 1" not in log
    assert first.refs == second.refs == 1  # read again after the restart


async def test_a_batch_after_one_that_failed_keeps_its_input() -> None:
    deliveries, first, second, log = await two_batches_submitted()
    second.results.set_result(None)
    second.changelog.set_result(None)
    first.results.set_exception(RuntimeError("a bug"))

    with pytest.raises(RuntimeError, match="a bug"):
        await deliveries.settle()
    await deliveries.settle()  # the second batch's delivery ends too, without going on

    assert log == ["results 2"]  # neither changelog went out, no input was released
    assert first.refs == second.refs == 1
