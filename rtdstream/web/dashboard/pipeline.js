// The pipeline's health (the server's `health` snapshot, about once a second, the same for every
// client) and the newest dead letters (`deadletters`). Everything from the server is shown with
// textContent: a dead letter's excerpt is whatever a producer sent.
import { $, el, formatAge, formatRate, frameBatcher } from "./dom.js";

const MAX_DEAD_LETTERS = 50;

export class PipelinePanel {
  constructor() {
    this.health = null;
    this.letters = []; // newest first
    this.counts = {};
    this.schedule = frameBatcher(() => this.render());
    this.lettersDirty = false;
  }

  showHealth(snapshot) {
    if (!snapshot) return;
    this.health = snapshot;
    this.schedule();
  }

  /** The ack's summary, or a `deadletters` event: newest first, merged, at most MAX_DEAD_LETTERS. */
  addDeadLetters({ latest, counts }) {
    const known = new Set(this.letters.map((entry) => entry.id));
    const fresh = latest.filter((entry) => !known.has(entry.id));
    this.letters = [...fresh, ...this.letters].sort((a, b) => b.id - a.id).slice(0, MAX_DEAD_LETTERS);
    this.counts = counts;
    this.lettersDirty = true;
    this.schedule();
  }

  render() {
    if (this.health) this.renderHealth(this.health);
    if (this.lettersDirty) {
      this.lettersDirty = false;
      this.renderDeadLetters();
    }
  }

  renderHealth(h) {
    $("health").dataset.status = h.status;
    setStat("h-in", formatRate(h.rate_in));
    setStat("h-stored", formatRate(h.rate_stored));
    setStat("h-rejected", `${formatRate(h.rejected_rate)} /s · ${h.rejected_total} in all`);
    setStat("h-lag", h.lag === null || h.lag === undefined ? "unknown" : String(h.lag));
    setCheck("h-broker", h.broker);
    setCheck("h-database", h.database);
    setCheck("h-feed", h.feed);
    setStat("h-clients", String(h.clients));
    $("h-reasons").replaceChildren(
      ...Object.entries(h.rejected).map(([reason, count]) => {
        const item = el("li", "reason");
        item.dataset.reason = reason;
        item.append(el("span", "reason-name", reason), el("span", "reason-count", count));
        return item;
      }),
    );
  }

  renderDeadLetters() {
    const body = $("dead-letters");
    if (!this.letters.length) {
      const row = el("tr", "empty");
      const cell = el("td", null, "no rejected reading seen since this page opened");
      cell.colSpan = 4;
      row.append(cell);
      body.replaceChildren(row);
      return;
    }
    const now = Date.now();
    body.replaceChildren(
      ...this.letters.map((entry) => {
        const row = el("tr");
        row.dataset.reason = entry.reason;
        const when = el("td", "dl-time", formatAge(now - entry.time));
        when.title = new Date(entry.time).toISOString();
        const reason = el("td", "dl-reason", entry.reason);
        if (entry.detail) reason.title = entry.detail;
        const raw = el("td", "dl-raw");
        raw.append(el("code", null, entry.excerpt));
        row.append(when, reason, el("td", "dl-source", entry.source ?? "–"), raw);
        return row;
      }),
    );
    $("dl-counts").textContent = Object.entries(this.counts)
      .sort((a, b) => b[1] - a[1])
      .map(([reason, count]) => `${reason}: ${count}`)
      .join(" · ");
  }
}

function setStat(id, text) {
  $(id).textContent = text;
}

function setCheck(id, check) {
  const node = $(id);
  node.textContent = check?.ok ? "ok" : "down";
  node.dataset.ok = String(Boolean(check?.ok));
  node.title = check?.error || check?.lag_error || "";
}
