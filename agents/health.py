"""``/healthz`` on the worker's Faust web port: liveness for container healthchecks, and ownership.

A worker is healthy while its app is running: a rebalance in progress is
normal and reported, not judged. Starting, stopping and crashed workers answer
503, so an orchestrator neither counts a worker that has not joined nor keeps
one that is going away. The body names the partitions this worker owns (of
``rtd.readings`` through the validation stage's own group, of the others
through Faust's), which is what ``rtdstream status`` shows per worker.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.web import Request, Response, View

from rtdstream.agents.validate import Validation
from rtdstream.app import app


def worker_health() -> tuple[bool, dict[str, Any]]:
    """(healthy, report) of this worker process."""
    state = app.state
    owned: dict[str, list[int]] = defaultdict(list)
    validation = Validation.running
    for tp in sorted(app.assignor.assigned_actives() | (validation.assignment() if validation else set())):
        owned[tp.topic].append(tp.partition)
    report = {
        "status": "ok" if state == "running" else "unavailable",
        "state": state,
        "rebalancing": bool(app.rebalancing),
        "url": str(app.conf.canonical_url),
        "assignment": dict(owned),
    }
    return state == "running", report


@app.page("/healthz")
class Health(View):
    """200 while this worker runs (even mid-rebalance), 503 while it starts, stops or has crashed."""

    async def get(self, request: Request) -> Response:
        healthy, report = worker_health()
        return self.json(report, status=200 if healthy else 503)
