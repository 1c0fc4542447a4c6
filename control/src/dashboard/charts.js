"use strict";
// ---- charts ----------------------------------------------------------------------------------
// Inline SVG drawn at the pixel width of its box (so text never scales): a time axis with
// clock labels, a value axis with its unit, the rollout's ceiling as a dashed line, and the
// rollout's story (steps, failed checks, the rollback) as vertical marks on the same clock.
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clockOf(t, seconds) {
  const d = new Date(t * 1000);
  const two = n => String(n).padStart(2, "0");
  return two(d.getHours()) + ":" + two(d.getMinutes()) + (seconds ? ":" + two(d.getSeconds()) : "");
}

/** The smallest 1, 2 or 5 × 10^k at or above `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v * 0.999) return m * p;
  return 10 * p;
}

function num(v) { return String(Number(v.toPrecision(3))); }

const TICK_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/**
 * spec: { width, height, t0, t1, unit, floor, log, label,
 *         lines: [{ points: [[t, v|null]], color, step, fill }],
 *         ceiling: { value, label } | null, marks: [{ t, kind, label }], ticks: [t],
 *         strongLabelsOnly, fixedMax }
 */
function chart(spec) {
  const W = Math.max(180, Math.round(spec.width || 300)), H = spec.height || 96;
  const L = 40, R = 8, T = 13, B = 16;
  const pw = W - L - R, ph = H - T - B;
  const t0 = spec.t0, t1 = Math.max(spec.t1, spec.t0 + 1);
  const svg = svgEl("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "aria-label": spec.label, "data-unit": spec.unit });
  svg.append(svgEl("title", {}, spec.label));
  const values = spec.lines.flatMap(l => l.points.map(p => p[1]).filter(v => typeof v === "number" && isFinite(v)));
  const ceiling = spec.ceiling && typeof spec.ceiling.value === "number" ? spec.ceiling : null;
  const top = spec.fixedMax || niceMax(Math.max(spec.floor || 1, ...values, ceiling ? ceiling.value * 1.25 : 0));
  const x = t => L + ((t - t0) / (t1 - t0)) * pw;
  const y = spec.log
    ? v => T + ph - (Math.log(Math.max(1, v)) / Math.log(Math.max(2, top))) * ph
    : v => T + ph - (Math.max(0, v) / top) * ph;

  // Value axis: 0, half and top, the unit on the top label.
  const levels = spec.log ? [1, Math.sqrt(top), top] : [0, top / 2, top];
  levels.forEach((v, i) => {
    const yy = y(v);
    svg.append(svgEl("line", { class: i === 0 ? "axis" : "grid", x1: L, x2: L + pw, y1: yy, y2: yy }));
    svg.append(svgEl("text", { x: L - 4, y: yy + 3.5, "text-anchor": "end", class: i === 2 ? "y-top" : null },
      num(v) + (i === 2 && spec.unit ? " " + spec.unit : "")));
  });

  // Time axis: clock labels at round seconds/minutes, as many as fit.
  const span = t1 - t0;
  const step = TICK_STEPS.find(s => span / s <= Math.max(1, Math.floor(pw / 64))) || 86400;
  const axis = svgEl("g", { class: "time-axis" });
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const xx = x(t);
    axis.append(svgEl("line", { class: "axis", x1: xx, x2: xx, y1: T + ph, y2: T + ph + 3 }));
    const edge = xx > W - 26 ? "end" : xx < L + 4 ? "start" : "middle";
    axis.append(svgEl("text", { x: edge === "end" ? W - 1 : xx, y: H - 3, "text-anchor": edge, "data-t": t }, clockOf(t, step < 60)));
  }
  svg.append(axis);

  // The rollout's marks behind the data; labels where they fit, the rollback's first.
  const marks = (spec.marks || []).filter(m => m.t >= t0 && m.t <= t1);
  const taken = [];
  const strong = m => m.kind === "rolled_back" || m.kind === "promoted";
  for (const m of marks) svg.append(svgEl("line", { class: "mark m-" + m.kind, x1: x(m.t), x2: x(m.t), y1: T - 2, y2: T + ph, "data-kind": m.kind }));
  const labelled = marks.filter(m => m.label && (strong(m) || !spec.strongLabelsOnly))
    .sort((a, b) => (strong(b) - strong(a)) || (b.t - a.t));
  for (const m of labelled) {
    const xx = x(m.t), w = m.label.length * 5.6 + 4;
    const spans = [[xx + 2, xx + 2 + w, "start"], [xx - 2 - w, xx - 2, "end"]]
      .filter(([a, b]) => a >= L - 2 && b <= W)
      .filter(([a, b]) => taken.every(([c, d]) => b < c || a > d));
    if (!spans.length) continue;
    const [a, b, anchor] = spans[0];
    taken.push([a, b]);
    svg.append(svgEl("text", { x: anchor === "start" ? a : b, y: T - 3, class: "m-" + m.kind, "text-anchor": anchor }, m.label));
  }
  for (const t of (spec.ticks || []).filter(t => t >= t0 && t <= t1)) {
    const xx = x(t);
    svg.append(svgEl("path", { class: "failtick", d: `M${xx - 3.5},${T + ph} L${xx + 3.5},${T + ph} L${xx},${T + ph - 6} Z` }));
  }

  // The data: a gap wherever there is no value (no traffic that second, or no reading).
  for (const line of spec.lines) {
    let d = "", open = false, prev = null;
    for (const [t, v] of line.points) {
      if (typeof v !== "number" || !isFinite(v)) { open = false; prev = null; continue; }
      if (prev && !line.step && t - prev > 2.5) open = false;
      prev = t;
      const xx = Math.min(L + pw, Math.max(L, x(t))), yy = y(v);
      if (!open) { d += `M${xx.toFixed(1)},${yy.toFixed(1)}`; open = true; }
      else if (line.step) d += `H${xx.toFixed(1)}V${yy.toFixed(1)}`;
      else d += `L${xx.toFixed(1)},${yy.toFixed(1)}`;
    }
    if (d) svg.append(svgEl("path", { d, fill: "none", stroke: line.color, "stroke-width": line.step ? 2 : 1.6,
                                      "stroke-linejoin": "round", class: "data" }));
  }

  if (ceiling) {
    const yy = y(ceiling.value);
    svg.append(svgEl("line", { class: "ceiling", x1: L, x2: L + pw, y1: yy, y2: yy, "data-value": ceiling.value }));
    svg.append(svgEl("text", { x: L + pw - 2, y: yy - 3, "text-anchor": "end", class: "ceiling-label" }, ceiling.label));
  }
  return svg;
}
