"""The PNG chart of a run: throughput, latency, lag, CPU, memory and descriptors over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # after choosing the backend

from rtdstream.bench.report import RunRecord

PHASE_COLOURS = {"warmup": "#f2f2f2", "drain": "#e8eef7"}


def draw_chart(record: RunRecord, path: Path) -> None:
    samples = record.samples
    if not samples:
        return
    t0 = samples[0].t
    t = [s.t - t0 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(14, 11), sharex=True)
    throughput, latency, lag, cpu, rss, fds = axes.flat

    throughput.plot(t, [s.offered for s in samples], label="offered", color="black", linestyle="--")
    for key, label in (("validated", "validated"), ("stored", "stored in MySQL"),
                       ("web_feed", "web view feed"), ("delivered", "delivered per client")):
        throughput.plot(t, [s.rates.get(key, 0.0) for s in samples], label=label)
    throughput.set_ylabel("readings/s")
    throughput.set_title("throughput")

    _, mysql_by_second = record.mysql_latency
    latency.plot(t, [s.client_latency.percentile(50) for s in samples], label="client p50")
    latency.plot(t, [s.client_latency.percentile(99) for s in samples], label="client p99")
    latency.plot(t, [s.db_age_ms for s in samples], label="newest in MySQL (age)", alpha=0.6)
    mysql_p99 = [mysql_by_second[int(s.wall)].percentile(99) if int(s.wall) in mysql_by_second else None
                 for s in samples]
    latency.plot(t, mysql_p99, label="MySQL p99 (INSERT stamp)")
    latency.set_ylabel("ms")
    latency.set_yscale("symlog", linthresh=10)
    latency.set_title("latency from the reading's time")

    lag.plot(t, [s.lag for s in samples], label="total", color="black")
    for topic in dict.fromkeys(topic for s in samples for topic in s.lag_by_topic):
        lag.plot(t, [s.lag_by_topic.get(topic) for s in samples], label=topic)
    lag.set_ylabel("messages")
    lag.set_title("worker group lag")

    names = list(dict.fromkeys(name for s in samples for name in s.processes))
    for name in names:
        usage = [s.processes.get(name) for s in samples]
        cpu.plot(t, [u.cpu_percent if u else None for u in usage], label=name)
        rss.plot(t, [u.rss_mb if u else None for u in usage], label=name)
        fds.plot(t, [u.fds if u else None for u in usage], label=name)
    cpu.set_ylabel("% of one core")
    cpu.set_title("CPU per process (children included)")
    rss.set_ylabel("MB")
    rss.set_title("RSS per process")
    fds.set_ylabel("open descriptors")
    fds.set_title("file descriptors per process")

    for axis in axes.flat:
        _shade_phases(axis, samples, t)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("seconds")
    fig.suptitle(_title(record))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _shade_phases(axis: plt.Axes, samples: list, t: list[float]) -> None:
    start = 0
    for index in range(1, len(samples) + 1):
        if index == len(samples) or samples[index].phase != samples[start].phase:
            colour = PHASE_COLOURS.get(samples[start].phase)
            if colour:
                axis.axvspan(t[start] - 1, t[index - 1], color=colour, zorder=0)
            start = index


def _title(record: RunRecord) -> str:
    options = record.options
    kind = "ramp" if options.ramp else "soak" if options.soak else "run"
    return (f"rtdstream bench {kind} {record.started_at}: {options.rate:,.0f} readings/s offered, "
            f"{options.source_count} sources, {options.workers} worker(s), {options.clients} clients "
            "(grey: warm-up, blue: drain)")
