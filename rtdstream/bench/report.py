"""From samples to figures: sustained rates, latency percentiles, per-stage throughput and CPU, the bottleneck.

Rates over the measured window are differences of cumulative counters between
the sample before the window and its last sample, so a hiccup in one sample
does not skew them. "Sustained" is what was stored in MySQL and what reached a
client per second; the lower of the two is the pipeline's figure.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtdstream.bench.histogram import Histogram
from rtdstream.bench.limits import RawLimits
from rtdstream.bench.options import BenchOptions, RampOptions
from rtdstream.bench.probes import Sample
from rtdstream.config import Settings

#: A stage that passes on less than this share of what it gets is where the pipeline falls behind.
KEEP_UP = 0.95
#: A ramp step is sustainable when stored and delivered readings reach this share of the offered rate.
RAMP_KEEP_UP = 0.9
#: Knobs that shape throughput and latency, recorded with every report.
KNOBS = (
    "partitions", "bridge_batch", "bridge_linger", "sink_batch", "sink_within", "window_batch", "window_within",
    "live_batch_interval", "session_timeout",
)
#: Peak RSS may grow this much (percent, last fifth of the window against the first) and still be flat.
MEMORY_GROWTH_LIMIT = 10.0
#: rtdstream's own processes (the broker, the database and the benchmark's clients are not judged).
PIPELINE_PROCESSES = ("worker", "web", "bridge", "sim")
#: A lag that grows by more than this (in seconds of input) over the window means the workers fall behind.
LAG_GROWTH_SECONDS = 5.0


@dataclass
class RunRecord:
    """Everything a run measured, as the runner collected it."""

    options: BenchOptions
    settings: Settings
    machine: dict[str, Any]
    started_at: str
    database: str
    samples: list[Sample]
    emitted: int
    load_seconds: float
    integrity: dict[str, Any]
    mysql_latency: tuple[Histogram, dict[int, Histogram]]
    exit_codes: dict[str, int]
    limits: RawLimits | None
    steps: list[dict[str, Any]] = field(default_factory=list)


def measured(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.phase == "measure"]


def window_rate(samples: list[Sample], window: list[Sample], key: str) -> float | None:
    """Per-second increase of a cumulative counter over ``window`` (a run of consecutive samples)."""
    if not window:
        return None
    index = samples.index(window[0])
    before = samples[index - 1] if index else window[0]
    last = window[-1]
    if key not in last.totals or key not in before.totals or last.t <= before.t:
        return None
    return (last.totals[key] - before.totals[key]) / (last.t - before.t)


def summarize_window(
    samples: list[Sample], window: list[Sample], mysql_by_second: dict[int, Histogram] | None = None
) -> dict[str, Any]:
    """Rates, latencies, lag and process usage over one measured window."""
    rates = {key: window_rate(samples, window, key) for key in
             ("stored", "delivered", "validated", "web_feed", "readings_messages", "windows")}
    client = Histogram()
    for sample in window:
        client.merge(sample.client_latency)
    mysql = Histogram()
    if mysql_by_second and window:
        first, last = int(window[0].wall) - 1, int(window[-1].wall)
        for second, histogram in mysql_by_second.items():
            if first <= second <= last:
                mysql.merge(histogram)
    ages = Histogram()
    ages.update([s.db_age_ms for s in window if s.db_age_ms is not None])
    lags = [s.lag for s in window if s.lag is not None]
    stored, delivered = rates["stored"], rates["delivered"]
    return {
        "seconds": round(window[-1].t - window[0].t + 1, 1) if window else 0,
        "offered_per_s": statistics.fmean(s.offered for s in window) if window else 0.0,
        "stored_per_s": stored,
        "delivered_per_s": delivered,
        "sustained_per_s": min(stored, delivered) if stored is not None and delivered is not None else None,
        "stage_rates": rates,
        "latency_ms": {"client": client.summary(), "mysql": mysql.summary(), "db_age": ages.summary()},
        "lag": {
            "start": lags[0] if lags else None, "end": lags[-1] if lags else None, "max": max(lags, default=None),
        },
        "processes": process_usage(window),
        "steal_percent": _mean_steal(window),
    }


def _mean_steal(window: list[Sample]) -> float | None:
    steals = [s.steal_percent for s in window if s.steal_percent is not None]
    return round(statistics.fmean(steals), 1) if steals else None


def process_usage(window: list[Sample]) -> dict[str, dict[str, float]]:
    names = dict.fromkeys(name for s in window for name in s.processes)
    usage = {}
    for name in names:
        seen = [s.processes[name] for s in window if name in s.processes]
        usage[name] = {
            "cpu_percent": round(statistics.fmean(u.cpu_percent for u in seen), 1),
            "cpu_percent_max": round(max(u.cpu_percent for u in seen), 1),
            "peak_rss_mb": round(max(u.rss_mb for u in seen), 1),
            "rss_start_mb": round(seen[0].rss_mb, 1),
            "rss_end_mb": round(seen[-1].rss_mb, 1),
            "fds_start": seen[0].fds,
            "fds_end": seen[-1].fds,
            "fds_max": max(u.fds for u in seen),
        }
    return usage


def memory_growth(window: list[Sample]) -> dict[str, float | None]:
    """Per process, how much higher peak RSS is in the last fifth of the window than in the first (percent)."""
    if len(window) < 10:
        return {}
    fifth = len(window) // 5
    early, late = window[:fifth], window[-fifth:]
    growth: dict[str, float | None] = {}
    for name in window[-1].processes:
        before = [s.processes[name].rss_mb for s in early if name in s.processes]
        after = [s.processes[name].rss_mb for s in late if name in s.processes]
        growth[name] = round(100 * (max(after) / max(before) - 1), 1) if before and after else None
    return growth


def bottleneck(summary: dict[str, Any], offered: float, cpus: int, readings_per_message: float | None) -> str:
    """Name the first stage that passes on clearly less than it is given, with its process's CPU."""
    rates = summary["stage_rates"]
    messages = rates.get("readings_messages")
    bridged = messages * readings_per_message if messages is not None and readings_per_message else None
    usage = summary["processes"]

    def cpu(name: str) -> str:
        found = [(n, u["cpu_percent"]) for n, u in usage.items() if n == name or n.startswith(f"{name}-")]
        return ", ".join(f"{n} at {c:.0f}% of a core" for n, c in found) or "no CPU figure"

    chain = [
        ("bridge into rtd.readings", bridged, offered, "bridge"),
        ("validation (worker)", rates.get("validated"), bridged or offered, "worker"),
        ("sink into MySQL (worker)", rates.get("stored"), rates.get("validated"), "worker"),
        ("web view feed", rates.get("web_feed"), rates.get("validated"), "web"),
        ("web view push to clients", rates.get("delivered"), rates.get("web_feed"), "web"),
    ]
    total_cpu = sum(u["cpu_percent"] for u in usage.values())
    saturated = total_cpu >= 85 * cpus
    machine = f"; the machine's {cpus} cores are saturated ({total_cpu:.0f}% of {100 * cpus}%)" if saturated else ""
    steal = summary.get("steal_percent")
    if steal is not None and steal >= 1:
        machine += f"; the hypervisor took {steal:.0f}% more (steal)"
    for stage, out_rate, in_rate, process in chain:
        if out_rate is not None and in_rate and out_rate < KEEP_UP * in_rate:
            return f"{stage}: {out_rate:,.0f}/s of {in_rate:,.0f}/s in ({cpu(process)}){machine}"
    # In seconds of input: in messages the lag saws up and down with Faust's commit interval (2.8 s).
    start, end = summary["lag"]["start"], summary["lag"]["end"]
    if messages and start is not None and end is not None and (end - start) / messages > LAG_GROWTH_SECONDS:
        return (f"the worker group: its lag grew by {(end - start) / messages:.1f}s of input "
                f"({start} -> {end} messages; {cpu('worker')}){machine}")
    return "none: every stage kept up with the offered rate" + machine


def evaluate_step(taken: list[Sample], rate: float, ramp: RampOptions) -> dict[str, Any]:
    """A ramp step's figures and whether it stayed within the bounds."""
    window = measured(taken)
    summary = summarize_window(taken, window)
    p99 = summary["latency_ms"]["client"]["p99_ms"]
    lag_end = summary["lag"]["end"]
    messages_per_s = summary["stage_rates"]["readings_messages"]
    # Lag in messages depends on the envelope size and on Faust's commit interval; in seconds of input it does not.
    lag_seconds = lag_end / messages_per_s if lag_end is not None and messages_per_s else None
    stored, delivered = summary["stored_per_s"] or 0.0, summary["delivered_per_s"] or 0.0
    problems = []
    if p99 is None or p99 > ramp.max_p99_ms:
        problems.append(f"client p99 {p99} ms > {ramp.max_p99_ms:g} ms")
    if lag_seconds is not None and lag_seconds > ramp.max_lag_s:
        problems.append(f"lag {lag_seconds:.1f}s of input > {ramp.max_lag_s:g}s")
    if min(stored, delivered) < RAMP_KEEP_UP * rate:
        problems.append(f"sustained {min(stored, delivered):,.0f}/s < {RAMP_KEEP_UP:.0%} of offered")
    return {
        "offered_per_s": rate,
        "stored_per_s": stored,
        "delivered_per_s": delivered,
        "client_p99_ms": p99,
        "lag_end": lag_end,
        "lag_seconds": round(lag_seconds, 2) if lag_seconds is not None else None,
        "processes": {name: u["cpu_percent"] for name, u in summary["processes"].items()},
        "sustainable": not problems,
        "verdict": "within bounds" if not problems else "; ".join(problems),
    }


def build_report(record: RunRecord) -> dict[str, Any]:
    options, samples = record.options, record.samples
    mysql_all, mysql_by_second = record.mysql_latency
    window = measured(samples) if not options.ramp else []
    summary = summarize_window(samples, window, mysql_by_second) if window else None
    actual_offered = record.emitted / record.load_seconds if record.load_seconds else 0.0
    report: dict[str, Any] = {
        "kind": "ramp" if options.ramp else "soak" if options.soak else "run",
        "started_at": record.started_at,
        "machine": record.machine,
        "config": {
            "rate": options.rate, "sources": options.source_count, "duration_s": options.duration,
            "warmup_s": options.warmup, "clients": options.clients, "measuring_clients": options.measuring,
            "workers": options.workers, "producer": options.producer, "broker": record.settings.broker_url, "database": record.database,
            **{knob: getattr(record.settings, knob) for knob in KNOBS},
        },
        "offered": {"emitted": record.emitted, "seconds": round(record.load_seconds, 1),
                    "actual_per_s": round(actual_offered, 1)},
        "integrity": record.integrity,
        "exit_codes": record.exit_codes,
        "latency_method": {
            "client": "arrival at a measuring Socket.IO client minus the reading's time (same clock)",
            "mysql": "readings.ingested_at (the database's clock when the INSERT ran) minus time, from a sample "
                     "of rows; it misses the rest of the transaction (offsets upsert and COMMIT, a few ms)",
            "db_age": "once a second, now minus the newest committed time of one source: an upper bound "
                      "that adds up to one sink batch interval to the latency",
        },
        "mysql_latency_all_ms": mysql_all.summary(),
    }
    if summary is not None:
        report["measured"] = summary
        messages = samples[-1].totals.get("readings_messages")
        per_message = record.emitted / messages if messages else None
        report["bottleneck"] = bottleneck(summary, summary["offered_per_s"], record.machine["cpus"] or 1, per_message)
        report["memory_growth_percent"] = growth = memory_growth(window)
        ours = {name: value for name, value in growth.items() if name in PIPELINE_PROCESSES or name.startswith("worker")}
        report["memory_flat"] = all(value is not None and value < MEMORY_GROWTH_LIMIT for value in ours.values())
    if record.steps:
        passing = [step for step in record.steps if step["sustainable"]]
        report["ramp"] = {
            "steps": record.steps,
            "highest_sustainable_per_s": passing[-1]["offered_per_s"] if passing else None,
            "bounds": vars(options.ramp),
        }
    if record.limits is not None:
        report["limits"] = record.limits.as_dict()
        report["ratios"] = ratios(report, record.limits)
    report["series"] = [sample.as_dict() for sample in samples]
    report["table"] = render_table(report)
    return report


def ratios(report: dict[str, Any], limits: RawLimits) -> dict[str, float | None]:
    """Our figures as fractions of the raw limits."""
    if "measured" in report:
        sustained = report["measured"]["sustained_per_s"]
        stored = report["measured"]["stored_per_s"]
    else:
        top = report.get("ramp", {}).get("highest_sustainable_per_s")
        sustained = stored = top
    return {
        "sustained_vs_kafka_produce": _ratio(sustained, limits.kafka_produce_per_s),
        "sustained_vs_kafka_consume": _ratio(sustained, limits.kafka_consume_per_s),
        "sink_vs_executemany": _ratio(stored, limits.mysql_executemany_per_s),
    }


def _ratio(value: float | None, limit: float) -> float | None:
    return round(value / limit, 3) if value is not None and limit else None


def render_table(report: dict[str, Any]) -> str:
    """The report as a terminal table."""
    machine = report["machine"]
    lines = [f"rtdstream bench ({report['kind']}) {report['started_at']} on {machine['cpus']} cpus, {machine['cpu_model']}"]
    if machine.get("python_loop_ms") is not None:
        lines.append(f"machine speed: a 1M-step Python loop took {machine['python_loop_ms']:.0f} ms, after the run")
    config = report["config"]
    lines.append(
        f"offered {config['rate']:,.0f}/s over {config['sources']} sources, {config['workers']} worker(s), "
        f"{config['clients']} clients ({config['measuring_clients']} measuring), partitions {config['partitions']}"
    )
    offered = report["offered"]
    lines.append(f"simulator emitted {offered['emitted']:,} readings in {offered['seconds']}s "
                 f"({offered['actual_per_s']:,.0f}/s)")
    if "measured" in report:
        lines += _window_table(report)
    if "ramp" in report:
        lines.append("")
        lines.append(f"{'offered/s':>10} {'sources':>8} {'stored/s':>10} {'delivered/s':>12} {'p99 ms':>7} {'lag s':>7}  verdict")
        for step in report["ramp"]["steps"]:
            lines.append(
                f"{step['offered_per_s']:>10,.0f} {step['sources']:>8} {step['stored_per_s']:>10,.0f} "
                f"{step['delivered_per_s']:>12,.0f} "
                f"{_num(step['client_p99_ms']):>7} {_secs(step['lag_seconds']):>7}  {step['verdict']}"
            )
        top = report["ramp"]["highest_sustainable_per_s"]
        lines.append(f"highest sustainable rate: {f'{top:,.0f}/s' if top else 'none of the steps'}")
    integrity = report["integrity"]
    lines.append("")
    lost = integrity["lost"] if integrity["drained"] else f"not verified ({integrity['not_stored']:,} not stored yet)"
    lines.append(
        f"integrity: emitted {integrity['emitted']:,}, stored {integrity['stored_rows']:,}, lost {lost}, "
        f"unexpected {integrity['unexpected_rows']}, written twice {integrity['written_twice']}, "
        f"rejected {integrity['rejected']}; clients: missing {integrity['client_missing']}, "
        f"duplicates {integrity['client_duplicates']}"
    )
    if "limits" in report:
        limits, ratio = report["limits"], report["ratios"]
        lines.append(
            f"raw limits ({limits['readings']:,} readings, {limits['readings_per_message']} per message, "
            f"{limits['rows_per_transaction']} rows per commit): aiokafka produce {limits['kafka_produce_per_s']:,.0f}/s, "
            f"consume {limits['kafka_consume_per_s']:,.0f}/s, executemany {limits['mysql_executemany_per_s']:,.0f} rows/s"
        )
        lines.append(
            f"ours as a share of them: sustained/produce {_pct(ratio['sustained_vs_kafka_produce'])}, "
            f"sustained/consume {_pct(ratio['sustained_vs_kafka_consume'])}, "
            f"sink/executemany {_pct(ratio['sink_vs_executemany'])}"
        )
    return "\n".join(lines)


def _window_table(report: dict[str, Any]) -> list[str]:
    m = report["measured"]
    lat = m["latency_ms"]
    rates = m["stage_rates"]
    sustained = (
        f"  sustained {_rate(m['sustained_per_s'])} (stored {_rate(m['stored_per_s'])}, "
        f"delivered per client {_rate(m['delivered_per_s'])}) of {m['offered_per_s']:,.0f}/s offered"
    )
    lines = ["", f"measured window: {m['seconds']}s after warm-up", sustained,
             "", f"  {'latency ms':<28}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'count':>10}"]
    for label, key in (("to a Socket.IO client", "client"), ("to MySQL (INSERT stamp)", "mysql"),
                       ("newest in MySQL (age)", "db_age")):
        h = lat[key]
        lines.append(f"  {label:<28}{_num(h['p50_ms']):>8}{_num(h['p95_ms']):>8}{_num(h['p99_ms']):>8}"
                     f"{_num(h['max_ms']):>8}{h['count']:>10}")
    lines += ["", f"  {'stage':<30}{'per second':>12}"]
    for label, key in (("bridge -> rtd.readings (msgs)", "readings_messages"), ("validation (readings)", "validated"),
                       ("sink -> MySQL", "stored"), ("window results", "windows"), ("web view feed", "web_feed"),
                       ("each measuring client", "delivered")):
        lines.append(f"  {label:<30}{_rate(rates.get(key)):>12}")
    lines += ["", f"  {'process':<12}{'cpu avg':>9}{'cpu max':>9}{'peak RSS MB':>13}{'RSS growth':>12}{'fds':>10}"]
    growth = report.get("memory_growth_percent", {})
    for name, u in m["processes"].items():
        fds = f"{u['fds_start']}->{u['fds_end']}"
        grown = growth.get(name)
        lines.append(f"  {name:<12}{u['cpu_percent']:>8.0f}%{u['cpu_percent_max']:>8.0f}%{u['peak_rss_mb']:>13.0f}"
                     f"{(f'{grown:+.1f}%' if grown is not None else '-'):>12}{fds:>10}")
    if growth:
        verdict = "flat" if report["memory_flat"] else "growing"
        lines.append(f"  rtdstream's processes' memory: {verdict} (peak RSS growth < {MEMORY_GROWTH_LIMIT:g}% "
                     "from the first fifth of the window to the last)")
    steal = m.get("steal_percent")
    if steal is not None:
        lines.append(f"  host: the hypervisor took {steal:.0f}% of a core on average for other guests (steal)")
    lines.append(f"  lag (messages): start {m['lag']['start']}, end {m['lag']['end']}, max {m['lag']['max']}")
    lines.append(f"  bottleneck: {report['bottleneck']}")
    return lines


def _rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value is not None else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def write_outputs(report: dict[str, Any], record: RunRecord, run_dir: Path) -> dict[str, Path]:
    """The JSON report and the PNG chart in ``run_dir``; their paths."""
    from rtdstream.bench.chart import draw_chart  # matplotlib loads slowly; only here

    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    chart_path = run_dir / "chart.png"
    draw_chart(record, chart_path)
    return {"report": json_path, "chart": chart_path, "logs": run_dir / "logs"}
