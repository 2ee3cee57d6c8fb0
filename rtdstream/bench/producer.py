"""``python -m rtdstream.bench.producer``: readings straight into ``rtd.readings``, one per message, at a rate.

What devices, Kafka Connect or another service do instead of the bridge:
each reading its own message, ``{"time": "<ms>", "speed": "<n>", "source":
"sensor-N"}`` keyed by its source. ``rtdstream bench --producer kafka`` runs it
in place of the simulator and the bridge. Like the simulator, it logs on its
way out how many readings it emitted (here: how many the broker
acknowledged), which is what the benchmark's loss check counts against.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time

from rtdstream.config import get_settings
from rtdstream.producer import start_idempotent_producer
from rtdstream.runtime import configure_logging, run_main
from rtdstream.sim.server import Sensor
from rtdstream.topics import READINGS

log = logging.getLogger("rtdstream.bench.producer")

#: How often the producer catches up with its rate.
TICK = 0.005


async def produce(rate: float, sources: int) -> None:
    """Send ``rate`` readings a second over ``sources`` sensors until cancelled."""
    producer = await start_idempotent_producer(get_settings(), linger_ms=5)
    rng = random.Random(11)
    sensors = [Sensor(f"sensor-{n}", rng) for n in range(1, sources + 1)]
    acknowledged = failed = sent = 0

    def settled(delivery: asyncio.Future) -> None:
        nonlocal acknowledged, failed
        if delivery.cancelled() or delivery.exception() is not None:
            failed += 1
        else:
            acknowledged += 1

    log.info("producing %g readings/s over %d source(s) into %s, one reading per message", rate, sources, READINGS)
    started = time.monotonic()
    try:
        while True:
            now_ms = int(time.time() * 1000)
            for _ in range(int(rate * (time.monotonic() - started)) - sent):
                sensor = sensors[sent % sources]
                delivery = await producer.send(READINGS, sensor.next_record(now_ms).rstrip(b"\n"), key=sensor.key.encode())
                delivery.add_done_callback(settled)
                sent += 1
            await asyncio.sleep(TICK)
    finally:
        await asyncio.shield(producer.stop())  # flushes what was sent
        if failed:
            log.error("%d reading(s) were not acknowledged by the broker", failed)
        log.info("stream closed for %s after %d records (0 active)", READINGS, acknowledged)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rtdstream.bench.producer", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="readings per second in all")
    parser.add_argument("--sources", type=int, required=True, help="sensors, sensor-1 ... sensor-N")
    args = parser.parse_args()
    configure_logging("info")
    raise SystemExit(run_main(produce(args.rate, args.sources), name="producer"))


if __name__ == "__main__":
    main()
