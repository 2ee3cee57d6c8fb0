"""Prometheus metrics of this process.

Each process (worker, bridge, web) counts what passes through it; ``/metrics``
on the worker's Faust web port and on the web view expose them. The web view
also counts the whole pipeline's readings and rejections from the topics it
reads, so one scrape of any web process gives cluster-wide totals.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

# No per-source labels: source ids come from input, and a hostile producer
# could otherwise grow the label set without bound.
READINGS_ACCEPTED = Counter("rtd_readings_accepted_total", "Readings that passed validation")
READINGS_REJECTED = Counter(
    "rtd_readings_rejected_total", "Records sent to rtd.dlq, by stage and reason", ["stage", "reason"]
)
WINDOWS_EMITTED = Counter(
    "rtd_windows_emitted_total", "Final window results sent to rtd.windows, by window label", ["window"]
)
LATE_READINGS = Counter(
    "rtd_late_readings_total",
    "Readings that arrived after one of their windows had closed (sent to rtd.dlq with reason late)",
)
WINDOW_REPLAYS_SKIPPED = Counter(
    "rtd_window_replays_skipped_total",
    "rtd.validated messages the window agent skipped as already applied (replays after a restart)",
)
SINK_ROWS_WRITTEN = Counter(
    "rtd_sink_rows_written_total", "Rows the sink committed to the database, by table", ["table"]
)
SINK_RETRIES = Counter(
    "rtd_sink_retries_total", "Sink transactions that failed and were retried (database outages)"
)
SINK_REPLAYED = Counter(
    "rtd_sink_replayed_messages_total",
    "Consumed messages the sink skipped because the database already held them (replays after a crash)",
)

# The web view: what it saw on the topics (cluster-wide, since it started) and what it pushed.
WEB_HEALTH_CHECKS = Counter(
    "rtd_web_health_checks_total",
    "Checks of the broker and the database made for /healthz (at most one a second, shared by all requests)",
)
WEB_FEED_READINGS = Counter(
    "rtd_web_feed_readings_total", "Validated readings the web view saw on rtd.validated since it started"
)
WEB_FEED_REJECTED = Counter(
    "rtd_web_feed_rejected_total", "rtd.dlq records the web view saw since it started, by reason", ["reason"]
)
WEB_FEED_UNDECODABLE = Counter(
    "rtd_web_feed_undecodable_total", "Records of rtd.windows/rtd.partials/rtd.dlq the web view skipped", ["topic"]
)
WEB_CLIENTS = Gauge("rtd_web_clients", "Connected Socket.IO clients")
WEB_DROPPED = Counter(
    "rtd_web_live_dropped_total",
    "Live pushes not delivered: coalesced (rate limit), slow_client (queue full), too_slow (disconnected)",
    ["event", "reason"],
)
WEB_SLOW_DISCONNECTS = Counter(
    "rtd_web_slow_disconnects_total", "Clients disconnected because their queue stayed full"
)
WEB_REFUSED_MESSAGES = Counter(
    "rtd_web_refused_messages_total",
    "Socket.IO messages from clients the web view did not handle: rate_limited or invalid_packet",
    ["reason"],
)
WEB_ABUSE_DISCONNECTS = Counter(
    "rtd_web_abuse_disconnects_total",
    "Clients disconnected for flooding (flood) or for sending what is not Socket.IO (invalid_packet)",
    ["reason"],
)
WEB_SESSIONS = Gauge("rtd_web_sessions", "Engine.IO sessions (client connections) the web view holds")
WEB_ROOMS = Gauge("rtd_web_rooms", "Socket.IO rooms with members (one per client, per subscribed source, newData)")
WEB_LATENCY = Histogram(
    "rtd_web_latency_seconds",
    "Reading time to the moment the web view hands it to its clients (live: each reading/newData; "
    "batch: each readings batch, its oldest reading)",
    ["path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
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
