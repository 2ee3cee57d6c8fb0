"""until_acknowledged(send_all) returns only once the broker has every record, whatever failed on the way."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

from rtdstream.delivery import Record, acknowledged, send_all, until_acknowledged


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
