// The overview: one tile per source (last value, sparkline of the last minute, readings/s, age; stale
// when silent for longer than RTD_IDLE_TIMEOUT). Built for 1 to 500+ sources: data comes from the
// server's compact `fleet` summary (about once a second, only changed sources), DOM work is batched
// per animation frame, and tiles off screen (IntersectionObserver) or filtered out are not touched
// until they show again.
import { el, formatAge, formatNumber, formatRate, frameBatcher } from "./dom.js";

const SPARK_MS = 60_000;
const SPARK_W = 120;
const SPARK_H = 28;
/** Tiles in natural order: sensor-2 before sensor-10. */
const byName = new Intl.Collator(undefined, { numeric: true }).compare;

export class Overview {
  constructor(container, { onOpen, onCounts }) {
    this.container = container;
    this.onOpen = onOpen;
    this.onCounts = onCounts;
    this.sources = new Map(); // source -> {time, speed, rate, sparkT: [], sparkV: [], tile, dirty, visible}
    this.order = []; // source ids, sorted: the tiles' order
    this.filter = "";
    this.idleMs = 10_000;
    this.clockSkew = 0; // local clock minus the server's, from the `now` of each event
    this.schedule = frameBatcher(() => this.render());
    this.observer = new IntersectionObserver((entries) => this.onVisibility(entries), { rootMargin: "200px" });
    container.addEventListener("click", (event) => {
      const tile = event.target.closest(".tile");
      if (tile) this.onOpen(tile.dataset.source);
    });
    container.addEventListener("keydown", (event) => {
      const tile = event.target.closest(".tile");
      if (tile && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        this.onOpen(tile.dataset.source);
      }
    });
    // Ages and staleness move on with the clock even when no event comes.
    setInterval(() => this.markVisibleDirty(), 1000);
  }

  /** The `overview` ack's fleet snapshot: everything to start from. */
  load(snapshot) {
    this.idleMs = snapshot.idle_timeout * 1000;
    this.clockSkew = Date.now() - snapshot.now;
    for (const entry of snapshot.sources) {
      const state = this.state(entry.source);
      Object.assign(state, { time: entry.time, speed: entry.speed, rate: entry.rate });
      state.sparkT = entry.spark_time.slice();
      state.sparkV = entry.spark.slice();
      state.dirty = true;
    }
    this.schedule();
  }

  /** A `fleet` event: columns of the sources that changed in the last tick. */
  update(event) {
    this.clockSkew = Date.now() - event.now;
    const n = event.source.length;
    for (let i = 0; i < n; i++) {
      const state = this.state(event.source[i]);
      state.time = event.time[i];
      state.speed = event.speed[i];
      state.rate = event.rate[i];
      const point = event.point[i];
      if (point !== null) {
        state.sparkT.push(event.now);
        state.sparkV.push(point);
        const oldest = event.now - SPARK_MS;
        let drop = 0;
        while (drop < state.sparkT.length && state.sparkT[drop] < oldest) drop++;
        if (drop) {
          state.sparkT.splice(0, drop);
          state.sparkV.splice(0, drop);
        }
      }
      state.dirty = true;
    }
    this.schedule();
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    for (const [source, state] of this.sources) state.tile.hidden = !this.matches(source);
    this.schedule();
  }

  matches(source) {
    return !this.filter || source.toLowerCase().includes(this.filter);
  }

  /** The tile of a new source, inserted in source order. */
  state(source) {
    let state = this.sources.get(source);
    if (state) return state;
    state = { time: null, speed: null, rate: 0, sparkT: [], sparkV: [], dirty: true, visible: false, stale: null };
    state.tile = this.makeTile(source);
    state.tile.hidden = !this.matches(source);
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byName(this.order[mid], source) < 0) lo = mid + 1;
      else hi = mid;
    }
    const before = this.order[lo];
    this.order.splice(lo, 0, source);
    this.container.insertBefore(state.tile, before ? this.sources.get(before).tile : null);
    this.sources.set(source, state);
    this.observer.observe(state.tile);
    return state;
  }

  makeTile(source) {
    const tile = el("article", "tile");
    tile.dataset.source = source;
    tile.tabIndex = 0;
    tile.setAttribute("role", "button");
    tile.setAttribute("aria-label", `open ${source}`);
    const head = el("div", "tile-head");
    head.append(el("span", "tile-name", source), el("span", "tile-value", "–"));
    const canvas = el("canvas", "spark");
    canvas.width = SPARK_W;
    canvas.height = SPARK_H;
    const foot = el("div", "tile-foot");
    foot.append(el("span", "tile-rate", "– /s"), el("span", "tile-age", "never"));
    tile.append(head, canvas, foot);
    return tile;
  }

  onVisibility(entries) {
    for (const entry of entries) {
      const state = this.sources.get(entry.target.dataset.source);
      if (state) state.visible = entry.isIntersecting;
    }
    this.schedule();
  }

  markVisibleDirty() {
    for (const state of this.sources.values()) if (state.visible) state.dirty = true;
    this.schedule();
  }

  /** One animation frame's DOM work: visible, shown tiles that changed; counts for all (no DOM). */
  render() {
    const now = Date.now() - this.clockSkew;
    let stale = 0;
    for (const state of this.sources.values()) {
      const isStale = state.time === null || now - state.time > this.idleMs;
      if (isStale) stale++;
      if (state.dirty && state.visible && !state.tile.hidden) {
        this.renderTile(state, now, isStale);
        state.dirty = false;
      }
    }
    this.onCounts({ total: this.sources.size, stale });
  }

  renderTile(state, now, isStale) {
    const tile = state.tile;
    if (state.stale !== isStale) {
      state.stale = isStale;
      tile.classList.toggle("stale", isStale);
      tile.dataset.state = isStale ? "stale" : "live";
    }
    tile.querySelector(".tile-value").textContent = formatNumber(state.speed);
    tile.querySelector(".tile-rate").textContent = `${formatRate(state.rate)} /s`;
    tile.querySelector(".tile-age").textContent = state.time === null ? "never" : formatAge(now - state.time);
    drawSpark(tile.querySelector("canvas"), state.sparkT, state.sparkV, now, isStale);
  }
}

function drawSpark(canvas, times, values, now, stale) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, SPARK_W, SPARK_H);
  if (values.length < 1) return;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const span = max - min || 1;
  ctx.beginPath();
  for (let i = 0; i < values.length; i++) {
    const x = SPARK_W - ((now - times[i]) / SPARK_MS) * SPARK_W;
    const y = SPARK_H - 2 - ((values[i] - min) / span) * (SPARK_H - 4);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  }
  ctx.strokeStyle = stale ? "#9aa5b1" : "#1f77b4";
  ctx.lineWidth = 1.5;
  ctx.stroke();
}
