"""Prometheus metrics of this process.

Each process (worker, bridge, web) counts what passes through it; ``/metrics``
on the worker's Faust web port and on the web view expose them. The web view
also counts the whole pipeline's readings and rejections from the topics it
reads, so one scrape of any web process gives cluster-wide totals.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

# No per-source labels: source ids come from input, and a hostile producer
# could otherwise grow the label set without bound.
READINGS_ACCEPTED = Counter("rtd_readings_accepted_total", "Readings that passed validation")
READINGS_REJECTED = Counter(
    "rtd_readings_rejected_total", "Records sent to rtd.dlq, by stage and reason", ["stage", "reason"]
)


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST



def snapshot(prefix: str = "rtd_") -> dict[str, float]:
    """Current values of this process's rtdstream counters, keyed like ``name{label="v"}``."""
    values: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if not metric.name.startswith(prefix):
            continue
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values
