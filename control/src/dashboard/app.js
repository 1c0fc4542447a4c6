// ---- the page --------------------------------------------------------------------------------
// Everything here reads the JSON API (SPEC §7, §15) once a second; nothing is stored in the
// browser. Costly reads are rare: a service's history only when its revision changed and its
// card is on screen, the fleet every few seconds (never again after a 404: no `cluster`),
// `/metrics` (safety-net and mirror counters) every few seconds only while a rollout runs.
const POLL_MS = 1000;
const MAX_EVENTS = 300;
const WINDOW_S = 300;
const FLEET_EVERY_MS = 3000;
const METRICS_EVERY_MS = 5000;
const METRICS_MAX_SERVICES = 200;
const EVIDENCE_KEPT = 600;
const COLORS = ["#2563eb", "#d97706", "#7c3aed", "#0d9488", "#db2777", "#65a30d"];
const app = {
  token: "", since: 0, eventCount: 0, cards: new Map(),
  marks: new Map(),       // service → [{ t, kind, label }] from the events
  ceilings: new Map(),    // service → { metric name → threshold } from the newest check
  history: new Map(),     // service → { revision, revisions, loading }
  evidence: new Map(),    // service → [{ t, failures, slow, limit }] seen while polling
  counters: new Map(),    // service → { safety: {result: n}, mirror: {result: n} } from /metrics
  fleetNext: 0, metricsNext: 0, visible: new Set(), busy: false,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmt(n, digits) { return (typeof n === "number" && isFinite(n)) ? n.toFixed(digits) : "–"; }
function stateLabel(s) { return String(s || "idle").replace("_", " "); }
function secondsOf(at) { const ms = Date.parse(at); return isNaN(ms) ? null : ms / 1000; }
function isActive(r) { return !!r && (r.state === "progressing" || r.state === "paused"); }
function unitOf(metric) { return metric === "error-rate" ? "%" : "ms"; }
function api(path) { return "/api/v1" + path; }
function svcPath(name) { return api("/services/" + encodeURIComponent(name)); }

async function errorOf(response) {
  let text = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && body.error) text = response.status + ": " + body.error + (body.field ? " (field " + body.field + ")" : "");
  } catch (_) { /* not JSON */ }
  const e = new Error(text);
  e.status = response.status;
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

function notice(text, kind) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = text ? "show " + kind : "";
}

// ---- services --------------------------------------------------------------------------------
const seen = new IntersectionObserver(entries => {
  for (const e of entries) {
    const name = e.target.dataset.service;
    if (e.isIntersecting) app.visible.add(name); else app.visible.delete(name);
  }
});

function card(svc) {
  let c = app.cards.get(svc.name);
  if (c) return c;
  c = {
    root: el("article", { class: "card service", "data-service": svc.name }),
    head: el("div", { class: "svc-head" }),
    rollout: el("div", { class: "rollout" }),
    panels: el("div", { class: "panels" }),
    weights: el("div", { class: "weights-chart" }),
    versions: el("div", { class: "versions" }),
    actions: el("div", { class: "actions" }),
  };
  c.root.append(c.head, c.rollout, c.panels, c.weights, c.versions, c.actions);
  app.cards.set(svc.name, c);
  seen.observe(c.root);
  app.visible.add(svc.name);
  return c;
}

function renderServices(services) {
  const box = document.getElementById("services");
  if (services.length === 0) { box.replaceChildren(el("div", { class: "card empty", text: "No services configured." })); return; }
  const names = new Set(services.map(s => s.name));
  for (const name of [...app.cards.keys()]) if (!names.has(name)) { seen.unobserve(app.cards.get(name).root); app.cards.delete(name); }
  const cards = services.map(svc => card(svc));
  if (box.children.length !== cards.length || cards.some((c, i) => box.children[i] !== c.root)) box.replaceChildren(...cards.map(c => c.root));
  services.forEach((svc, i) => update(cards[i], svc));
}

/**
 * The clock window of a service's charts: the series' last five minutes, starting shortly
 * before the rollout when it started within them, so its story fills the charts.
 */
function windowOf(svc) {
  const ts = svc.versions.flatMap(v => (v.series || []).map(p => p.t));
  const t1 = ts.length ? Math.max(...ts) : Date.now() / 1000;
  let t0 = Math.max(t1 - WINDOW_S, ts.length ? Math.min(...ts) : t1 - 60);
  const started = svc.rollout && svc.rollout.started_at ? secondsOf(svc.rollout.started_at) : null;
  if (started !== null && started - 10 > t0) t0 = started - 10;
  return { t0: Math.min(t0, t1 - 60), t1 };
}

function update(c, svc) {
  const r = svc.rollout;
  if (r && r.evidence) keepEvidence(svc.name, r.evidence);
  if (r && r.last_analysis) keepCeilings(svc.name, r.last_analysis);
  c.head.replaceChildren(...[
    el("h2", { text: svc.name }),
    el("span", { class: "muted", text: "revision " + svc.revision }),
    r ? el("span", { class: "pill st-" + r.state, "data-state": r.state, text: stateLabel(r.state) }) : null,
    isActive(r) ? el("span", { class: "muted", text: `step ${r.step} of ${r.steps}` }) : null,
    isActive(r) && r.mode === "mirror" ? el("span", { class: "pill mirror", "data-mode": "mirror",
      title: "Dark phase: users are served by the stable only; the canary gets copies",
      text: `mirror ${fmt(r.mirror_pct, 0)}% · copies only` }) : null,
    r && r.judge ? el("span", { class: "tag", text: "judge: " + r.judge }) : null,
  ].filter(Boolean));
  c.rollout.replaceChildren(...rolloutLines(r));
  // Off-screen cards keep their last drawing: with many services only what is seen is drawn.
  if (c.drawn && !app.visible.has(svc.name)) return;
  c.drawn = true;
  c.panels.replaceChildren(...panels(svc));
  const style = getComputedStyle(c.root);
  const width = Math.max(200, c.root.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight));
  const win = windowOf(svc);
  c.weights.replaceChildren(...weightChart(svc, width, win));
  const cols = NARROW.matches ? 1 : 3;
  const cw = Math.floor((width - (cols - 1) * 10) / cols);
  c.versions.replaceChildren(...svc.versions.map(v => versionRow(svc, v, cw, win)));
  maybeLoadHistory(svc);
  c.actions.replaceChildren(...actions(svc));
}

/** Where the CSS puts the three metric charts of a version under each other. */
const NARROW = window.matchMedia("(max-width: 700px)");

function rolloutLines(r) {
  if (!r) return [el("div", { class: "muted", text: "No rollout configured." })];
  const lines = [el("div", {},
    `canary `, el("strong", { text: r.canary }), r.release ? ` (release ${r.release})` : "",
    ` over stable `, el("strong", { text: r.stable }),
    r.threshold != null ? ` · failed checks ${r.failed_checks}/${r.threshold}` : "",
    r.awaiting_gate ? " · waiting for the gate webhook" : "")];
  if (r.reason) lines.push(el("div", { class: r.state === "rolled_back" ? "fail" : "muted" }, "reason: ", el("span", { "data-k": "reason", text: r.reason })));
  const a = r.last_analysis;
  if (a) {
    lines.push(el("div", { class: "checks" },
      el("span", { class: a.verdict }, `last check: ${a.verdict}`),
      el("span", { class: "muted", text: `${a.requests} requests in ${fmt(a.window_s, 1)} s` }),
      ...(a.metrics || []).map(m => el("span", { class: m.result },
        `${m.name} ${m.value == null ? "n/a" : fmt(m.value, 1) + " " + unitOf(m.name)} / ceiling ${m.threshold} ${unitOf(m.name)}`))));
  }
  return lines;
}

// ---- charts of one service --------------------------------------------------------------------
function colorOf(svc, v) { return COLORS[Math.max(0, svc.versions.findIndex(x => x.name === v)) % COLORS.length]; }

/** Each version's share over time, from the revision history (weights are relative). */
function weightChart(svc, width, win) {
  const h = app.history.get(svc.name);
  const revisions = (h && h.revisions) || [];
  const r = svc.rollout;
  const started = r && r.started_at ? secondsOf(r.started_at) : null;
  const t1 = win.t1;
  let t0 = win.t0;
  if (started !== null && started < t0) t0 = Math.max(started - 10, t1 - 24 * 3600);
  const points = new Map(svc.versions.map(v => [v.name, []]));
  for (const rev of revisions) {
    const t = secondsOf(rev.at);
    const total = Object.values(rev.weights || {}).reduce((a, b) => a + b, 0) || 1;
    for (const [name, list] of points) list.push([Math.max(t, t0), ((rev.weights || {})[name] || 0) * 100 / total]);
  }
  for (const v of svc.versions) points.get(v.name).push([t1, v.weight]);
  const lines = svc.versions.map(v => ({ points: points.get(v.name), color: colorOf(svc, v.name), step: true }));
  return [
    el("div", { class: "legend" }, el("span", { class: "muted", text: "weight over time" }),
      ...svc.versions.map(v => el("span", {}, el("i", { style: `background:${colorOf(svc, v.name)}` }), v.name))),
    chart({ width, height: 110, t0, t1, unit: "%", fixedMax: 100, label: `${svc.name}: each version's share of traffic over time`,
            lines, marks: app.marks.get(svc.name) || [], ticks: failTicks(svc.name) }),
  ];
}

function failTicks(name) { return (app.marks.get(name) || []).filter(m => m.kind === "fail").map(m => m.t); }

function versionRow(svc, v, width, win) {
  // The API names every version's role (stable, canary, standby): one rule, shared with ctl.
  const role = v.role || null;
  const healthy = v.backends.filter(b => b.healthy).length;
  const live = v.live || {};
  const series = v.series || [];
  const w = Math.round(v.weight * 100) / 100;
  const idle = !(live.rps > 0);
  const isCanary = role === "canary" && svc.rollout;
  const ceilings = isCanary ? (app.ceilings.get(svc.name) || {}) : {};
  const marks = (app.marks.get(svc.name) || []).filter(m => m.kind !== "fail" && m.kind !== "other");
  const ticks = isCanary ? failTicks(svc.name) : [];
  // A second without requests has no error rate and no latency: a gap, not a zero.
  const pts = key => series.map(p => [p.t, key === "rps" ? p.rps : (p.rps > 0 ? p[key] : null)]);
  const common = { width, height: 92, t0: win.t0, t1: win.t1, marks, ticks, strongLabelsOnly: true };
  const ceiling = (name, unit) => typeof ceilings[name] === "number" ? { value: ceilings[name], label: `ceiling ${ceilings[name]} ${unit}` } : null;
  return el("div", { class: "version", "data-version": v.name },
    el("div", { class: "v-head" },
      el("strong", { text: v.name }),
      el("span", { class: "muted", text: "release " + v.release }),
      role ? el("span", { class: "tag", text: role }) : null,
      v.rolled_back ? el("span", { class: "tag bad", text: "rolled back" }) : null,
      el("span", { class: "backends", title: `${healthy} of ${v.backends.length} backends healthy` },
        ...v.backends.map(b => el("span", { class: "backend " + (b.healthy ? "up" : "down"), text: b.name ? `${b.address} (${b.name})` : b.address })))),
    el("div", { class: "weight" + (role === "canary" ? " canary" : "") + (v.rolled_back ? " rolledback" : ""),
                "data-version": v.name, "data-weight": w, role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
                "aria-valuenow": w, "aria-label": `${v.name} weight` },
      el("div", { class: "fill", style: `width:${Math.min(100, Math.max(0, w))}%` }),
      el("span", { class: "label", text: `${w}% of traffic` })),
    el("div", { class: "metrics" },
      metric("req/s", fmt(live.rps, 1), false, chart({ ...common, unit: "req/s", floor: 1, label: `${v.name} requests per second`,
        lines: [{ points: pts("rps"), color: "#2563eb" }] })),
      metric("errors", idle ? "no traffic" : fmt(live.error_rate, 1) + " %", idle, chart({ ...common, unit: "%", floor: 1,
        label: `${v.name} error rate in percent`, lines: [{ points: pts("error_rate"), color: "#dc2626" }],
        ceiling: ceiling("error-rate", "%") })),
      metric("p99", idle ? "no traffic" : fmt(live.p99_ms, 1) + " ms", idle, chart({ ...common, unit: "ms", floor: 10,
        label: `${v.name} 99th percentile latency in milliseconds`, lines: [{ points: pts("p99_ms"), color: "#d97706" }],
        ceiling: ceiling("latency-p99", "ms") }))));
}

function metric(label, value, none, svg) {
  return el("div", { class: "metric" }, label + " ", el("b", { class: none ? "none" : null, text: value }), svg);
}

// ---- history (for the weight chart and Undo) ---------------------------------------------------
async function maybeLoadHistory(svc) {
  const h = app.history.get(svc.name);
  if (h && (h.revision === svc.revision || h.loading)) return;
  if (!app.visible.has(svc.name)) return;
  app.history.set(svc.name, { ...(h || {}), loading: true });
  try {
    const body = await getJSON(svcPath(svc.name) + "/history?limit=100");
    app.history.set(svc.name, { revision: svc.revision, revisions: body.revisions || [], loading: false });
  } catch (_) {
    app.history.set(svc.name, { ...(h || {}), loading: false });
  }
}

// ---- timeline and marks -------------------------------------------------------------------------
const MARK_KINDS = { step: "step", rolled_back: "rolled_back", promoted: "promoted", aborted: "other", paused: "other",
                     resumed: "other", rollout_started: "step", switched: "other", undo: "other", weights: "other" };

function markOf(e) {
  const t = secondsOf(e.at);
  if (t === null) return null;
  const d = e.details || {};
  if (e.kind === "analysis") return d.verdict === "fail" ? { t, kind: "fail" } : null;
  const kind = MARK_KINDS[e.kind];
  if (!kind) return null;
  const share = d.mode === "mirror" && typeof d.mirror_pct === "number" ? ` mirror ${d.mirror_pct}%`
    : typeof d.traffic === "number" ? ` ${d.traffic}%` : "";
  const label = e.kind === "step" ? `step ${d.step ?? ""}`.trim() + share
    : e.kind === "rolled_back" ? "rollback" : e.kind === "rollout_started" ? null : e.kind.replace("_", " ");
  return { t, kind, label };
}

function addEvents(events) {
  if (events.length === 0) return;
  const list = document.getElementById("events");
  if (app.eventCount === 0) list.replaceChildren();
  for (const e of events) {
    app.since = Math.max(app.since, e.id);
    app.eventCount++;
    const m = markOf(e);
    if (m) {
      const marks = app.marks.get(e.service) || [];
      marks.push(m);
      if (marks.length > 400) marks.shift();
      app.marks.set(e.service, marks);
    }
    if (e.kind === "analysis" && e.details) keepCeilings(e.service, e.details);
    const failed = e.kind === "analysis" && e.details && e.details.verdict === "fail";
    const when = new Date(e.at);
    let extra = null;
    if (e.kind === "rolled_back" && e.details) {
      const d = e.details, im = d.impact;
      // The sequential judge fails no check: its decision is the evidence reaching its limit.
      const decided = d.reason === "sequential" ? "the evidence reached its limit" : "the first failed check";
      extra = el("div", {},
        typeof d.detection_s === "number" ? `canary at 0% ${d.detection_s.toFixed(2)} s after ${decided}` : "",
        im && typeof im.users_on_canary === "number" ? impactLine(im) : null);
    }
    list.prepend(el("li", { class: `event k-${e.kind}` + (failed ? " fail" : ""), "data-kind": e.kind, "data-id": e.id },
      el("span", { class: "when", title: e.at, text: isNaN(when) ? e.at : when.toLocaleTimeString([], { hour12: false }) }),
      el("span", { class: "kind", text: e.kind.replace("_", " ") }),
      el("span", { class: "muted", text: e.service + " · " }),
      el("span", { text: e.message }),
      extra));
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

// ---- the loop --------------------------------------------------------------------------------
let lastError = "";
async function refresh() {
  if (app.busy) return;
  app.busy = true;
  const conn = document.getElementById("conn");
  try {
    const [services, events, status] = await Promise.all([
      getJSON(api("/services")), getJSON(api("/events?since=" + app.since)), getJSON(api("/status"))]);
    const list = services.services || [];
    addEvents(events.events || []);
    renderServices(list);
    pollFleet(list);
    pollCounters(list);
    const p = status.persistence;
    conn.className = "ok";
    conn.textContent = `live · v${status.version} · up ${status.uptime_s} s · ${new Date().toLocaleTimeString([], { hour12: false })}`
      + (status.last_reload_error ? " · last reload failed: " + status.last_reload_error : "")
      + (p && p.healthy === false ? ` · state not persisted: ${p.error || "store unavailable"} (${p.pending} pending)` : "");
    if (lastError) { notice("", ""); lastError = ""; }
  } catch (e) {
    conn.className = "down";
    conn.textContent = "disconnected";
    lastError = "Cannot read the admin API: " + e.message;
    notice(lastError, "error");
  } finally {
    app.busy = false;
  }
}

(function loop() { refresh().finally(() => setTimeout(loop, POLL_MS)); })();
