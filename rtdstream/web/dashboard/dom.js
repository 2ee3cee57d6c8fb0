// Small DOM helpers shared by the dashboard's modules. Untrusted text only ever goes in through textContent.

export const $ = (id) => document.getElementById(id);

/** An element with a class and text (textContent: never parsed as HTML). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number.isInteger(value) ? String(value) : Number(value).toFixed(2);
}

export function formatRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? String(Math.round(value)) : Number(value).toFixed(1);
}

/** "3 s", "4 min", "2 h": how long ago, for tiles and the dead-letter table. */
export function formatAge(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "never";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

/** Run `fn` once in the next animation frame, however often this is called before it. */
export function frameBatcher(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}
