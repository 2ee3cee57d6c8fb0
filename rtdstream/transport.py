"""Faust's aiokafka transport, with the worker consumer's fetch wait taken from RTD_FETCH_MAX_WAIT.

Faust builds the worker's consumer with ``fetch_max_wait_ms=1500`` and offers
no setting for it. Apache Kafka answers a fetch as soon as one byte is there,
so the wait only matters when a partition is idle; but a broker that holds
every fetch until the wait is over (the embedded tansu does) adds up to that
wait to every hop: measured on tansu, one hop took 367 ms at the median and
731 ms at p99 with 1500 ms, 6 ms and 12 ms with 20 ms. The worker makes two
hops (rtd.readings, then rtd.validated), so this was most of its latency.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; there is no public setter.
        consumer._fetch_max_wait_ms = round(self.app.fetch_max_wait * 1000)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """``kafka://`` for rtdstream's worker (the app must have a ``fetch_max_wait`` in seconds)."""

    Consumer = _Consumer
