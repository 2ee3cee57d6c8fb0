"""The start-up heap is frozen (rtdstream.collector), and cycles made later are still freed unasked, in the worker too.

Run in a fresh interpreter: the freeze is process-wide and must not leak into the test session.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json, weakref
from rtdstream.collector import WORKER_YOUNG_THRESHOLD, collect_young_generation_less_often, freeze_startup_heap

class Node:
    pass

def cycle():
    node = Node()
    node.itself = node  # only the cyclic collector frees this
    return weakref.ref(node)

startup_kept = [[] for _ in range(20_000)]  # what start-up builds and keeps (modules, app, settings)
startup_garbage = cycle()
freeze_startup_heap()
collect_young_generation_less_often()  # the worker's setting: the slowest to free a cycle
running_garbage = cycle()
held = [[] for _ in range(3 * WORKER_YOUNG_THRESHOLD)]  # what a running process allocates and keeps a while
print(json.dumps({
    "startup_garbage_freed": startup_garbage() is None,
    "running_garbage_freed": running_garbage() is None,
    "frozen": gc.get_freeze_count(),
}))
"""


def test_the_start_up_heap_is_frozen_and_later_cycles_are_still_collected_automatically() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    probe = json.loads(done.stdout)
    assert probe["startup_garbage_freed"], "start-up garbage must be freed, not frozen"
    assert probe["running_garbage_freed"], "a cycle made after the freeze must be freed without an explicit collect"
    assert probe["frozen"] > 20_000, "what start-up kept must be out of every collection"
