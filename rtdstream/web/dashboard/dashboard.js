// The rtdstream dashboard: the fleet overview (a tile per source), the pipeline's health and the latest
// dead letters on one screen; a tile opens the detail view of its source (gauge, live chart, window
// table, stored history). The URL's hash holds the state (#source=…&range=…&from=…&to=…&q=…), so a
// view can be shared and survives a reload. Uses the official Socket.IO client (`io`) and uPlot
// (`uPlot`), both served from npm's node_modules.
import { $ } from "./dom.js";
import { Detail, RANGES } from "./detail.js";
import { Overview } from "./overview.js";
import { PipelinePanel } from "./pipeline.js";

const query = new URLSearchParams(location.search);
let token = query.get("token") || sessionStorage.getItem("rtd-token") || undefined;

// ---- URL state -------------------------------------------------------------
function readHash() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const range = hash.get("range");
  return {
    source: hash.get("source") || query.get("source") || null, // ?source= as before, for old links
    range: range === "custom" || range in RANGES ? range : "live",
    from: Number(hash.get("from")) || null,
    to: Number(hash.get("to")) || null,
    q: hash.get("q") || "",
  };
}

function writeHash(state) {
  const hash = new URLSearchParams();
  if (state.source) hash.set("source", state.source);
  if (state.source && state.range !== "live") hash.set("range", state.range);
  if (state.source && state.range === "custom") {
    if (state.from) hash.set("from", state.from);
    if (state.to) hash.set("to", state.to);
  }
  if (state.q) hash.set("q", state.q);
  const next = hash.toString() ? `#${hash}` : location.pathname + location.search;
  if (`#${hash}` !== location.hash) history.pushState(null, "", next);
}

let state = readHash();

// ---- panels ----------------------------------------------------------------
async function fetchJson(url) {
  const response = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

const overview = new Overview($("tiles"), {
  onOpen: (source) => navigate({ source, range: "live" }),
  onCounts: ({ total, stale }) => {
    $("fleet-count").textContent = `${total} sources, ${stale} stale`;
    $("fleet-count").dataset.stale = String(stale);
  },
});
const pipeline = new PipelinePanel();
const detail = new Detail({ fetchJson });
const knownSources = new Set();

function navigate(change) {
  state = { ...state, ...change };
  writeHash(state);
  apply();
}

/** Make the page show `state`: overview or detail, the range, the filter. */
function apply() {
  $("filter").value = state.q;
  overview.setFilter(state.q);
  const showing = state.source;
  $("overview").hidden = Boolean(showing);
  $("detail").hidden = !showing;
  if (showing && showing !== detail.source) openSource(showing);
  if (!showing && detail.source) closeSource();
  if (showing) {
    for (const button of document.querySelectorAll("#ranges button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === state.range));
    }
    $("custom-range").hidden = state.range !== "custom";
    if (state.range === "custom") {
      const to = state.to || Date.now();
      const from = state.from || to - 3600_000;
      $("range-from").value = toLocalInput(from);
      $("range-to").value = toLocalInput(to);
      detail.showRange("custom", { from, to });
    } else {
      detail.showRange(state.range);
    }
  }
}

function openSource(source) {
  if (detail.source) socket.emit("unsubscribe", { source: detail.source });
  detail.reset(source);
  addSourceOption(source);
  $("source").value = source;
  if (socket.connected) subscribe(source);
}

function closeSource() {
  socket.emit("unsubscribe", { source: detail.source });
  detail.source = null;
}

function subscribe(source) {
  socket.emit("subscribe", { source }, (ack) => detail.acknowledge(ack));
}

function addSourceOption(source) {
  if (knownSources.has(source)) return;
  knownSources.add(source);
  const select = $("source");
  const before = [...select.options].find((option) => option.value > source);
  select.add(new Option(source, source), before);
}

function toLocalInput(ms) {
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 16);
}

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

// ---- connection --------------------------------------------------------------
// newData is the original backend's broadcast; this page uses the typed events instead.
const socket = io({ auth: (send) => send({ newData: false, token }) });

socket.on("connect", () => {
  setStatus("live", `live (${socket.io.engine.transport.name})`);
  socket.io.engine.once("upgrade", (transport) => setStatus("live", `live (${transport.name})`));
  // Rooms do not survive a reconnect: watch the overview and the shown source again.
  socket.emit("overview", {}, (ack) => {
    if (!ack.ok) return;
    overview.load(ack.fleet);
    pipeline.showHealth(ack.health);
    pipeline.addDeadLetters(ack.deadletters);
  });
  if (detail.source) subscribe(detail.source);
});
socket.on("disconnect", () => setStatus("offline", "offline, reconnecting…"));
socket.on("connect_error", (error) => {
  if (String(error.message).startsWith("unauthorized")) {
    setStatus("unauthorized", "access token needed");
    $("token-form").hidden = false;
  } else {
    setStatus("offline", "offline, retrying…");
  }
});

socket.on("sources", (list) => list.forEach(({ source }) => addSourceOption(source)));
socket.on("fleet", (event) => {
  overview.update(event);
  event.source.forEach(addSourceOption);
});
socket.on("health", (snapshot) => pipeline.showHealth(snapshot));
socket.on("deadletters", (letters) => pipeline.addDeadLetters(letters));
socket.on("readings", (batch) => {
  if (batch.source === detail.source) detail.addReadings(batch.time, batch.speed);
});
socket.on("reading", (reading) => {
  if (reading.source === detail.source) detail.showLast(reading);
});
socket.on("window", (aggregate) => {
  if (aggregate.source === detail.source) detail.showWindow(aggregate);
});

// ---- controls ------------------------------------------------------------------
let filterTimer = null;
$("filter").addEventListener("input", (event) => {
  clearTimeout(filterTimer);
  const text = event.target.value;
  overview.setFilter(text);
  filterTimer = setTimeout(() => {
    state = { ...state, q: text };
    writeHash(state);
  }, 300);
});
$("back").addEventListener("click", () => navigate({ source: null, range: "live", from: null, to: null }));
$("source").addEventListener("change", (event) => navigate({ source: event.target.value, range: state.range }));
$("ranges").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-range]");
  if (!button) return;
  const range = button.dataset.range;
  if (range === "custom") {
    const to = state.to || Date.now();
    navigate({ range, from: state.from || to - 3600_000, to });
  } else {
    navigate({ range, from: null, to: null });
  }
});
$("custom-range").addEventListener("submit", (event) => {
  event.preventDefault();
  navigate({
    range: "custom",
    from: new Date($("range-from").value).getTime(),
    to: new Date($("range-to").value).getTime(),
  });
});
window.addEventListener("popstate", () => {
  state = readHash();
  apply();
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("rtd-token", token);
  $("token-form").hidden = true;
  socket.connect();
});

apply();
