// The rtdstream dashboard: one source at a time, live chart + gauge + window table.
// Uses the official Socket.IO client (`io`) and uPlot (`uPlot`), both served from npm's node_modules.
"use strict";

(() => {
  const CHART_SECONDS = 120; // the chart shows this much recent history
  const CHART_HEIGHT = 260;
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);

  let token = params.get("token") || sessionStorage.getItem("rtd-token") || undefined;
  let current = null; // the source shown
  let times = []; // chart x: seconds
  let speeds = []; // chart y
  let gaugeMax = 50;
  let redrawQueued = false;
  const windows = new Map(); // window name -> latest final aggregate

  // ---- chart -------------------------------------------------------------
  const chart = new uPlot(
    {
      width: $("chart").clientWidth,
      height: CHART_HEIGHT,
      scales: { x: { time: true } },
      series: [{}, { label: "speed", stroke: "#1f77b4", width: 2, points: { show: false } }],
      axes: [{}, { label: "speed" }],
      legend: { live: false },
    },
    [times, speeds],
    $("chart"),
  );
  new ResizeObserver(() => chart.setSize({ width: $("chart").clientWidth, height: CHART_HEIGHT })).observe($("chart"));

  function addReadings(newTimes, newSpeeds) {
    for (let i = 0; i < newTimes.length; i++) {
      times.push(newTimes[i] / 1000);
      speeds.push(newSpeeds[i]);
    }
    const oldest = times[times.length - 1] - CHART_SECONDS;
    let drop = 0;
    while (drop < times.length && times[drop] < oldest) drop++;
    if (drop) {
      times = times.slice(drop);
      speeds = speeds.slice(drop);
    }
    if (!redrawQueued) {
      redrawQueued = true;
      requestAnimationFrame(() => {
        redrawQueued = false;
        chart.setData([times, speeds]);
      });
    }
  }

  // ---- gauge and table ---------------------------------------------------
  function showLast(reading) {
    if (!reading) return;
    gaugeMax = Math.max(gaugeMax, Math.ceil(reading.speed / 10) * 10);
    const share = Math.min(100, Math.max(0, (100 * reading.speed) / gaugeMax));
    $("gauge-value").setAttribute("stroke-dasharray", `${share} 100`);
    $("gauge-number").textContent = formatNumber(reading.speed);
    $("gauge-max").textContent = gaugeMax;
    $("last-time").textContent = `at ${new Date(reading.time).toLocaleTimeString()}`;
  }

  function showWindow(aggregate) {
    const known = windows.get(aggregate.window);
    if (known && known.start > aggregate.start) return;
    windows.set(aggregate.window, aggregate);
    const rows = [...windows.values()].sort((a, b) => a.size - b.size || a.window.localeCompare(b.window));
    $("windows").replaceChildren(
      ...rows.map((w) => {
        const tr = document.createElement("tr");
        const cells = [
          w.window, new Date(w.start).toLocaleTimeString(), w.count,
          formatNumber(w.min), formatNumber(w.mean), formatNumber(w.max), formatNumber(w.last_speed),
        ];
        for (const value of cells) {
          const td = document.createElement("td");
          td.textContent = value;
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  function formatNumber(value) {
    return Number.isInteger(value) ? String(value) : value.toFixed(2);
  }

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  // ---- sources -----------------------------------------------------------
  function addSources(list) {
    const select = $("source");
    const present = new Set([...select.options].map((o) => o.value));
    for (const { source } of list) {
      if (!present.has(source)) select.add(new Option(source, source));
    }
    if (!current && select.options.length) {
      const wanted = params.get("source") || localStorage.getItem("rtd-source");
      show(present.has(wanted) || list.some((s) => s.source === wanted) ? wanted : select.options[0].value);
    }
  }

  function show(source) {
    if (current && current !== source) socket.emit("unsubscribe", { source: current });
    current = source;
    $("source").value = source;
    localStorage.setItem("rtd-source", source);
    times = [];
    speeds = [];
    windows.clear();
    socket.emit("subscribe", { source }, (ack) => {
      if (!ack.ok || ack.source !== current) return;
      for (const reading of ack.history) addReadings([reading.time], [reading.speed]);
      chart.setData([times, speeds]);
      showLast(ack.last);
      ack.windows.forEach(showWindow);
    });
  }

  // ---- connection --------------------------------------------------------
  // newData is the original backend's broadcast; this page uses the typed events instead.
  const socket = io({ auth: (send) => send({ newData: false, token }) });

  socket.on("connect", () => {
    setStatus("live", `live (${socket.io.engine.transport.name})`);
    socket.io.engine.once("upgrade", (transport) => setStatus("live", `live (${transport.name})`));
    if (current) show(current); // rooms do not survive a reconnect
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

  socket.on("sources", addSources);
  socket.on("readings", (batch) => {
    if (batch.source === current) addReadings(batch.time, batch.speed);
  });
  socket.on("reading", (reading) => {
    if (reading.source === current) showLast(reading);
  });
  socket.on("window", (aggregate) => {
    if (aggregate.source === current) showWindow(aggregate);
  });

  $("source").addEventListener("change", (event) => show(event.target.value));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("rtd-token", token);
    $("token-form").hidden = true;
    socket.connect();
  });
})();
