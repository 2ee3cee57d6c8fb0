"""Keep CPython's cyclic garbage collector off the per-message path.

A running process holds a large heap that lives as long as it does: the
modules of Faust, aiokafka, SQLAlchemy and python-socketio, the app, its
settings. CPython's cyclic collector walks all of it on every collection of
its oldest generation, though none of it ever becomes garbage. Every process
freezes it once start-up is done (:func:`freeze_startup_heap`), which takes
it out of every collection.

The worker also lets the youngest generation grow to
:data:`WORKER_YOUNG_THRESHOLD` objects before collecting it (CPython's is
700): each message it consumes allocates container objects through Faust and
aiokafka, and it holds no connections whose cyclic garbage would then wait
longer to be freed. The web view does: with its youngest generation at 50,000
its RSS grew 1.7-2.1 MB under connection churn instead of 0.2-0.6 MB, so the
other processes keep CPython's thresholds.

Drains of one-reading messages by the worker (``rtdstream bench --drain
200000 --format single``, alternated; docs/performance.md), medians:
embedded broker 29,113/s untuned, 33,494/s frozen, 35,400/s frozen with the
larger youngest generation (six runs each); Apache Kafka 22,078/s, 24,316/s
and 27,200/s (two, three and three runs). The spreads overlap.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between two collections of the worker's youngest generation; CPython's is 700.
WORKER_YOUNG_THRESHOLD = 50_000


def freeze_startup_heap() -> None:
    """Free what start-up left as garbage, then move everything it kept out of the collector's reach."""
    gc.collect()  # garbage is freed, not frozen
    gc.freeze()


def collect_young_generation_less_often() -> None:
    """Collect the youngest generation every :data:`WORKER_YOUNG_THRESHOLD` allocations: the worker's setting."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(WORKER_YOUNG_THRESHOLD, middle, old)
