"""Web views the worker serves on its Faust web port (``--web-port``, default 6066)."""

from __future__ import annotations

from faust.web import Request, Response, View

from rtdstream import metrics
from rtdstream.app import app


@app.page("/metrics")
class Metrics(View):
    """Prometheus text of this worker's counters."""

    async def get(self, request: Request) -> Response:
        body, content_type = metrics.render()
        return self.bytes(body, content_type=content_type.split(";")[0])


@app.page("/counters/")
class Counters(View):
    """This worker's counters as JSON, for a quick look without Prometheus."""

    async def get(self, request: Request) -> Response:
        return self.json(metrics.snapshot())
