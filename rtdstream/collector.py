"""Keep CPython's cyclic garbage collector off the per-reading path.

Every reading allocates short-lived objects (orjson's dict, a tuple, ints),
which reference counting frees at once; but each allocation also counts
towards the cyclic collector, which by default runs every 700 of them and,
every tenth and hundredth time, walks older generations that hold the whole
heap of imported modules (Faust, aiokafka, SQLAlchemy, python-socketio). At
tens of thousands of readings a second that walk took a third of the time
of the bridge's line framer and of the validation of an envelope (measured
with a 300,000-object heap: 1.6-1.75 us a reading, 1.0 us with this). With
this, the worker drains one-reading messages 20-37% faster, and envelopes up
to 15% faster (``rtdstream bench --drain``, alternated; docs/performance.md).

So once a process has started, :func:`tune_collector` freezes what start-up
allocated (modules, the app, settings: they live as long as the process, and
no collection walks them again) and lets the youngest generation grow to
:data:`YOUNG_THRESHOLD` objects before it is collected. Collection stays
automatic: a reference cycle made while running is freed within that many
allocations, so memory stays bounded.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between two collections of the youngest generation; CPython's is 700.
YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Freeze the start-up heap and collect the youngest generation every :data:`YOUNG_THRESHOLD` allocations."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
