// The detail view of one source: the gauge of its latest value, the live chart of the last two minutes,
// its latest window aggregates (all from `subscribe` and the source's live events), and its stored
// history over a chosen range: raw readings for short ranges, min/mean/max buckets of the window
// aggregates (/api/windows?step=) for long ones.
import { $, el, formatNumber, frameBatcher } from "./dom.js";

const CHART_SECONDS = 120;
const CHART_HEIGHT = 260;
/** Ranges up to this long chart raw readings; longer ones chart buckets of window aggregates. */
const RAW_RANGE_MS = 10 * 60_000;
const MAX_RAW_PAGES = 20;
/** About this many buckets across a long range. */
const BUCKETS = 600;
export const RANGES = { live: null, "5m": 5 * 60_000, "1h": 3600_000, "24h": 24 * 3600_000 };

export class Detail {
  constructor({ fetchJson }) {
    this.fetchJson = fetchJson;
    this.source = null;
    this.times = [];
    this.speeds = [];
    this.gaugeMax = 50;
    this.windows = new Map();
    this.historyRequest = 0;
    this.redraw = frameBatcher(() => this.chart.setData([this.times, this.speeds]));
    this.chart = new uPlot(
      {
        width: $("chart").clientWidth,
        height: CHART_HEIGHT,
        scales: { x: { time: true } },
        series: [{}, { label: "speed", stroke: "#1f77b4", width: 2, points: { show: false } }],
        axes: [{}, { label: "speed" }],
        legend: { live: false },
      },
      [[], []],
      $("chart"),
    );
    this.history = null;
    new ResizeObserver(() => {
      const width = $("chart").clientWidth;
      if (width) this.chart.setSize({ width, height: CHART_HEIGHT });
      if (this.history && $("history").clientWidth) {
        this.history.setSize({ width: $("history").clientWidth, height: CHART_HEIGHT });
      }
    }).observe($("detail"));
  }

  /** Start showing `source` (its subscribe ack fills the view). */
  reset(source) {
    this.source = source;
    this.times = [];
    this.speeds = [];
    this.windows.clear();
    $("detail-name").textContent = source;
    $("gauge-number").textContent = "–";
    $("gauge-value").setAttribute("stroke-dasharray", "0 100");
    $("last-time").textContent = "no reading yet";
    const row = el("tr", "empty");
    const cell = el("td", null, "no closed window yet");
    cell.colSpan = 7;
    row.append(cell);
    $("windows").replaceChildren(row);
    this.chart.setData([[], []]);
  }

  acknowledge(ack) {
    if (!ack.ok || ack.source !== this.source) return;
    for (const reading of ack.history) this.addReadings([reading.time], [reading.speed]);
    this.showLast(ack.last);
    ack.windows.forEach((w) => this.showWindow(w));
  }

  addReadings(newTimes, newSpeeds) {
    for (let i = 0; i < newTimes.length; i++) {
      this.times.push(newTimes[i] / 1000);
      this.speeds.push(newSpeeds[i]);
    }
    const oldest = this.times[this.times.length - 1] - CHART_SECONDS;
    let drop = 0;
    while (drop < this.times.length && this.times[drop] < oldest) drop++;
    if (drop) {
      this.times = this.times.slice(drop);
      this.speeds = this.speeds.slice(drop);
    }
    this.redraw();
  }

  showLast(reading) {
    if (!reading) return;
    this.gaugeMax = Math.max(this.gaugeMax, Math.ceil(reading.speed / 10) * 10);
    const share = Math.min(100, Math.max(0, (100 * reading.speed) / this.gaugeMax));
    $("gauge-value").setAttribute("stroke-dasharray", `${share} 100`);
    $("gauge-number").textContent = formatNumber(reading.speed);
    $("gauge-max").textContent = this.gaugeMax;
    $("last-time").textContent = `at ${new Date(reading.time).toLocaleTimeString()}`;
  }

  showWindow(aggregate) {
    const known = this.windows.get(aggregate.window);
    if (known && known.start > aggregate.start) return;
    this.windows.set(aggregate.window, aggregate);
    const rows = [...this.windows.values()].sort((a, b) => a.size - b.size || a.window.localeCompare(b.window));
    $("windows").replaceChildren(
      ...rows.map((w) => {
        const tr = el("tr");
        const cells = [
          w.window, new Date(w.start).toLocaleTimeString(), w.count,
          formatNumber(w.min), formatNumber(w.mean), formatNumber(w.max), formatNumber(w.last_speed),
        ];
        for (const value of cells) tr.append(el("td", null, value));
        return tr;
      }),
    );
  }

  /** Show the stored history of the range (`live`: the live chart only). */
  async showRange(range, custom) {
    const live = range === "live";
    $("chart-card").hidden = !live;
    $("history-card").hidden = live;
    if (live || !this.source) return;
    let from;
    let to;
    if (range === "custom") {
      ({ from, to } = custom);
      if (!(from < to)) {
        this.historyStatus("error", "choose a start before the end");
        return;
      }
    } else {
      to = Date.now();
      from = to - RANGES[range];
    }
    const request = ++this.historyRequest;
    const source = this.source;
    delete $("history").dataset.kind; // until this range's data is drawn
    delete $("history").dataset.points;
    this.historyStatus("loading", "loading…");
    try {
      const data = to - from <= RAW_RANGE_MS
        ? await this.rawHistory(source, from, to)
        : await this.bucketHistory(source, from, to);
      if (request !== this.historyRequest) return; // a newer choice superseded this one
      this.drawHistory(data);
      const count = data.kind === "raw" ? `${data.x.length} readings` : `${data.x.length} buckets of ${data.window} windows`;
      this.historyStatus(data.x.length ? "ready" : "empty", data.x.length ? count : "nothing stored in this range");
      $("history").dataset.kind = data.kind;
      $("history").dataset.points = String(data.x.length);
    } catch (error) {
      if (request === this.historyRequest) this.historyStatus("error", String(error.message || error));
    }
  }

  async rawHistory(source, from, to) {
    const x = [];
    const y = [];
    let url = `/api/readings?${new URLSearchParams({ source, from, to, order: "asc", limit: 1000 })}`;
    for (let page = 0; url && page < MAX_RAW_PAGES; page++) {
      const body = await this.fetchJson(url);
      for (const row of body.readings) {
        x.push(row.time / 1000);
        y.push(row.speed);
      }
      url = body.next;
    }
    return { kind: "raw", x, series: [y] };
  }

  async bucketHistory(source, from, to) {
    const step = Math.max(1000, Math.ceil((to - from) / BUCKETS / 1000) * 1000);
    const body = await this.fetchJson(`/api/windows?${new URLSearchParams({ source, from, to, step })}`);
    const x = body.buckets.map((b) => b.start / 1000);
    const series = ["min", "mean", "max"].map((key) => body.buckets.map((b) => b[key]));
    return { kind: "buckets", window: body.window, x, series };
  }

  drawHistory(data) {
    if (this.history) this.history.destroy();
    const raw = data.kind === "raw";
    const series = raw
      ? [{}, { label: "speed", stroke: "#1f77b4", width: 1.5, points: { show: false } }]
      : [
          {},
          { label: "min", stroke: "#9ecae1", width: 1, points: { show: false } },
          { label: "mean", stroke: "#1f77b4", width: 2, points: { show: false } },
          { label: "max", stroke: "#9ecae1", width: 1, points: { show: false } },
        ];
    this.history = new uPlot(
      {
        width: $("history").clientWidth || 600,
        height: CHART_HEIGHT,
        scales: { x: { time: true } },
        series,
        bands: raw ? [] : [{ series: [3, 1], fill: "#1f77b422" }],
        axes: [{}, { label: "speed" }],
        legend: { live: false },
      },
      [data.x, ...data.series],
      $("history"),
    );
  }

  historyStatus(state, text) {
    $("history-status").dataset.state = state;
    $("history-status").textContent = text;
  }
}
