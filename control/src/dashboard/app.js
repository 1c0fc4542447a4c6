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
  if (r.reason) lines.push(el("div", { class: r.state === "rolled_back" ? "fail" : "muted", text: "reason: " + r.reason }));
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

// ---- what this wave adds: shown only when the API has it (SPEC §13–§15) -------------------------
function panels(svc) {
  const r = svc.rollout || {};
  const out = [];
  const ev = r.evidence;
  if (ev && typeof ev.limit === "number") {
    const worst = Math.max(ev.failures || 1, ev.slow || 1);
    const pct = Math.min(100, (Math.log(Math.max(1, worst)) / Math.log(Math.max(2, ev.limit))) * 100);
    const points = app.evidence.get(svc.name) || [];
    const t1 = points.length ? points[points.length - 1].t : Date.now() / 1000;
    const t0 = Math.min(t1 - 30, points.length ? points[0].t : t1);
    out.push(el("div", { class: "panel", "data-panel": "evidence" },
      el("h3", { text: "Sequential evidence" }),
      el("div", { class: "kv" },
        el("span", {}, "failures ", el("b", { text: fmt(ev.failures, 2) })),
        el("span", {}, "slow ", el("b", { text: fmt(ev.slow, 2) })),
        el("span", {}, "limit ", el("b", { text: fmt(ev.limit, 0) }))),
      el("div", { class: "gauge" + (pct >= 100 ? " hot" : ""), title: "log scale: 1 = no evidence, the limit rolls back" },
        el("div", { style: `width:${pct.toFixed(1)}%` })),
      points.length > 1 ? chart({ width: 260, height: 80, t0, t1, unit: "×", log: true, fixedMax: ev.limit,
        label: "evidence against the canary over time (log scale), with its limit",
        lines: [{ points: points.map(p => [p.t, p.failures]), color: "#dc2626" },
                { points: points.map(p => [p.t, p.slow]), color: "#d97706" }],
        ceiling: { value: ev.limit, label: "limit " + num(ev.limit) } }) : null));
  }
  const im = r.impact;
  if (im && typeof im.users_on_canary === "number") {
    out.push(el("div", { class: "panel", "data-panel": "impact" },
      el("h3", { text: "Impact on users" }),
      el("div", { class: "kv" },
        el("span", {}, "on the canary ", el("b", { text: String(im.users_on_canary) }),
          typeof im.users_total === "number" ? ` of ${im.users_total}` : ""),
        el("span", { class: im.users_failed > 0 ? "fail" : null }, "saw an error ", el("b", { text: String(im.users_failed) }),
          typeof im.users_failed_pct === "number" ? ` (${fmt(im.users_failed_pct, 2)}%)` : ""),
        typeof im.requests_failed === "number" ? el("span", {}, "failed requests ", el("b", { text: String(im.requests_failed) })) : null)));
  }
  const k = app.counters.get(svc.name);
  if (k && k.safety) out.push(countsPanel("safety-net", "Safety net (retried on stable)", k.safety,
    [["ok", "saved"], ["failed", "stable failed too"], ["budget", "over budget"], ["unsafe", "not replayable"]]));
  if (k && k.mirror) out.push(countsPanel("mirror", "Mirror copies", k.mirror,
    [["sent", "sent"], ["dropped", "dropped"], ["failed", "failed"]]));
  return out;
}

/** A panel of counters by result (`/metrics` label values → what to call them). */
function countsPanel(name, title, counts, results) {
  return el("div", { class: "panel", "data-panel": name }, el("h3", { text: title }),
    el("div", { class: "kv" }, ...results.map(([result, label]) => el("span", {}, label + " ", el("b", { text: String(counts[result] || 0) })))));
}

function keepEvidence(name, ev) {
  const list = app.evidence.get(name) || [];
  const t = Date.now() / 1000;
  if (list.length && t - list[list.length - 1].t < 0.5) return;
  list.push({ t, failures: ev.failures, slow: ev.slow, limit: ev.limit });
  if (list.length > EVIDENCE_KEPT) list.shift();
  app.evidence.set(name, list);
}

function keepCeilings(name, analysis) {
  const c = {};
  for (const m of analysis.metrics || []) if (typeof m.threshold === "number") c[m.name] = m.threshold;
  app.ceilings.set(name, c);
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

// ---- actions: what the API would refuse is disabled, with the reason ---------------------------
function actions(svc) {
  const r = svc.rollout;
  const base = svcPath(svc.name);
  const running = isActive(r) ? `a rollout of ${r.canary} is ${stateLabel(r.state)} — promote, abort or roll back first` : null;
  const state = r ? stateLabel(r.state) : "";
  const out = svc.versions.map(v => button({
    action: "switch", to: v.name, label: `Switch to ${v.name}`,
    title: `Blue/green: send 100% of ${svc.name} to ${v.name} at once`,
    why: running || (v.rolled_back ? "rolled back — resume the rollout first" : null)
      || (v.weight >= 100 ? "already has 100%" : null),
    run: () => act(`switch ${svc.name} to ${v.name}`, base + "/switch", { to: v.name }),
  }));
  if (r) {
    const canary = svc.versions.find(v => v.name === r.canary);
    out.push(button({ action: "rollback", label: "Rollback", danger: true, title: "Take the canary out of traffic now",
      why: !isActive(r) && canary && canary.weight === 0 ? `nothing to roll back: ${r.canary} has 0%` : null,
      run: () => act(`roll back ${svc.name}`, base + "/rollback", { reason: "manual rollback from the dashboard" }) }));
    out.push(button({ action: "pause", label: "Pause", title: "Hold the current step",
      why: r.state === "progressing" ? null : `only a progressing rollout can pause (this one is ${state})`,
      run: () => act(`pause the rollout of ${svc.name}`, base + "/rollout/pause") }));
    out.push(button({ action: "resume", label: "Resume", title: "Continue a paused or rolled-back rollout",
      why: r.state === "paused" || r.state === "rolled_back" ? null : `nothing to resume (the rollout is ${state})`,
      run: () => act(`resume the rollout of ${svc.name}`, base + "/rollout/resume") }));
    out.push(button({ action: "promote", label: "Promote", title: "Skip the remaining steps and make the canary stable",
      why: isActive(r) ? null : `no rollout is running (${state})`,
      run: () => act(`promote ${r.canary} in ${svc.name}`, base + "/rollout/promote") }));
    out.push(button({ action: "abort", label: "Abort", danger: true, title: "Stop the rollout and go back to the stable version",
      why: isActive(r) ? null : `no rollout is running (${state})`,
      run: () => act(`abort the rollout of ${svc.name}`, base + "/rollout/abort") }));
    out.push(button({ action: "start", label: "Start rollout", title: `Start a rollout of ${r.canary} from step 1`,
      why: isActive(r) ? `a rollout is already ${state}` : null,
      run: () => act(`start a rollout of ${r.canary} in ${svc.name}`, base + "/rollout/start") }));
  }
  out.push(undoButton(svc, running));
  return out;
}

function undoButton(svc, running) {
  const h = app.history.get(svc.name);
  const target = svc.revision - 1;
  const old = h && h.revisions ? h.revisions.find(x => x.id === target) : null;
  const rolledBack = new Set(svc.versions.filter(v => v.rolled_back).map(v => v.name));
  const share = old ? Object.entries(old.weights || {}).map(([k, w]) => `${k} ${w}`).join(", ") : "";
  let why = null;
  if (svc.revision <= 1) why = "no earlier revision";
  else if (running) why = running;
  else if (!h || !h.revisions) why = "reading the history…";
  else if (!old) why = `revision ${target} is not in the history kept`;
  else {
    const bad = Object.entries(old.weights || {}).find(([k, w]) => w > 0 && rolledBack.has(k));
    if (bad) why = `revision ${target} gives ${bad[0]} traffic, which was rolled back — resume first`;
  }
  return button({ action: "undo", label: `Undo to revision ${target > 0 ? target : "–"}`, why,
    title: old ? `Restore revision ${target}'s weights (${share}) as a new revision` : "Restore the previous revision's weights",
    run: () => act(`undo ${svc.name} to revision ${target} (${share})`, svcPath(svc.name) + "/undo", { to_revision: target }) });
}

function button(b) {
  return el("button", { class: b.danger ? "danger" : null, disabled: !!b.why, "data-action": b.action, "data-to": b.to,
                        title: b.why ? `${b.label}: ${b.why}` : b.title, onclick: b.why ? null : b.run },
    b.label, b.why ? el("span", { class: "why", text: b.why }) : null);
}

// One change at a time: confirm in the page, then send; a 401 asks for the token and resends.
let pending = null;
function act(what, path, body) {
  pending = { what, path, body };
  document.getElementById("confirm-text").textContent = `Really ${what}?`;
  document.getElementById("confirm").hidden = false;
  document.getElementById("confirm-yes").focus();
}

async function send(p) {
  const headers = { "content-type": "application/json" };
  if (app.token) headers.authorization = "Bearer " + app.token;
  try {
    const r = await fetch(p.path, { method: "POST", headers, body: JSON.stringify(p.body || {}) });
    if (!r.ok) throw await errorOf(r);
    const svc = await r.json();
    notice(`Done: ${p.what} (revision ${svc.revision}).`, "ok");
    document.getElementById("auth").hidden = true;
  } catch (e) {
    if (e.status === 401) {
      pending = p;
      document.getElementById("auth-text").textContent = app.token
        ? `The admin refused the token (${e.message.replace(/^401: /, "")}). Enter the right one to ${p.what}.`
        : `This admin needs its bearer token to ${p.what}.`;
      document.getElementById("auth").hidden = false;
      document.getElementById("auth-token").focus();
      notice(`Not done: ${p.what} — ${e.message}`, "error");
    } else {
      notice(`Could not ${p.what}: ${e.message}`, "error");
    }
  }
  refresh();
}

document.getElementById("confirm-yes").addEventListener("click", () => {
  document.getElementById("confirm").hidden = true;
  const p = pending; pending = null;
  if (p) send(p);
});
document.getElementById("confirm-no").addEventListener("click", () => { document.getElementById("confirm").hidden = true; pending = null; });
document.getElementById("auth").addEventListener("submit", e => {
  e.preventDefault();
  const token = document.getElementById("auth-token").value.trim();
  if (!token) return;
  app.token = token;
  document.getElementById("token").value = token;
  document.getElementById("auth-token").value = "";
  document.getElementById("auth").hidden = true;
  const p = pending; pending = null;
  if (p) send(p);
});
document.getElementById("auth-cancel").addEventListener("click", () => { document.getElementById("auth").hidden = true; pending = null; });
document.getElementById("token").addEventListener("input", e => { app.token = e.target.value.trim(); });

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
  const label = e.kind === "step" ? `step ${d.step ?? ""}`.trim() + (typeof d.traffic === "number" ? ` ${d.traffic}%` : "")
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
      extra = el("div", {},
        typeof d.detection_s === "number" ? `detected in ${d.detection_s.toFixed(2)} s (first failed check → canary at 0%)` : "",
        im && typeof im.users_failed === "number"
          ? el("div", { text: `users who saw an error: ${im.users_failed}` + (typeof im.users_total === "number" ? ` of ${im.users_total}` : "")
                              + (typeof im.users_failed_pct === "number" ? ` (${fmt(im.users_failed_pct, 2)}%)` : "") }) : null);
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

// ---- fleet (SPEC §11): only when this replica is in one ---------------------------------------
async function pollFleet(services) {
  if (Date.now() < app.fleetNext) return;
  app.fleetNext = Date.now() + FLEET_EVERY_MS;
  const box = document.getElementById("fleet");
  try {
    renderFleet(box, await getJSON(api("/fleet")), services);
  } catch (e) {
    box.hidden = true;
    // 404: no `cluster` block; that only changes with a restart, so ask again rarely.
    if (e.status === 404) app.fleetNext = Date.now() + 60000;
  }
}

function renderFleet(box, f, services) {
  const current = new Map(services.map(s => [s.name, s.revision]));
  const store = f.store || {};
  const rows = (f.replicas || []).map(rep => {
    const applied = Object.entries(rep.applied_revision || {}).map(([svc, n]) => {
      const behind = current.has(svc) && n < current.get(svc);
      return el("span", { class: behind ? "behind" : null, title: behind ? `behind: this replica shows revision ${current.get(svc)}` : null },
        `${svc} r${n}`);
    });
    const mismatch = rep.config_mismatch || [];
    return el("tr", { "data-replica": rep.name },
      el("td", {}, el("strong", { text: rep.name }), rep.name === f.leader || rep.leader ? el("span", { class: "pill st-promoted", text: "leader" }) : null,
        rep.name === f.replica ? el("span", { class: "muted", text: " (this one)" }) : null),
      el("td", { class: "muted", text: rep.admin || "" }),
      el("td", {}, ...applied.flatMap((a, i) => i ? [" ", a] : [a]),
        mismatch.length ? el("div", { class: "fail", text: "config differs: " + mismatch.join(", ") }) : null),
      el("td", { class: "muted", title: rep.last_seen, text: ago(rep.last_seen) }));
  });
  box.replaceChildren(
    el("h2", { text: `Fleet · ${(f.replicas || []).length} replicas` }),
    el("div", { class: "kv" },
      el("span", {}, "leader ", el("b", { text: f.leader || "none" })),
      el("span", { class: store.healthy ? "pass" : "fail", text: "etcd " + (store.healthy ? "healthy" : "unreachable" + (store.error ? ": " + store.error : "")) }),
      el("span", { class: "muted", text: (store.endpoints || []).join(", ") })),
    el("table", { class: "replicas" },
      el("tr", {}, el("th", { text: "replica" }), el("th", { text: "admin" }), el("th", { text: "applied" }), el("th", { text: "seen" })),
      ...rows));
  box.hidden = false;
}

function ago(at) {
  const t = secondsOf(at);
  if (t === null) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  return s < 60 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

// ---- safety-net retries and mirror copies (SPEC §13, §15 metrics) ----------------------------
async function pollCounters(services) {
  const active = services.some(s => isActive(s.rollout));
  if (Date.now() < app.metricsNext || services.length > METRICS_MAX_SERVICES) return;
  app.metricsNext = Date.now() + (active ? METRICS_EVERY_MS : 6 * METRICS_EVERY_MS);
  try {
    const r = await fetch("/metrics", { cache: "no-store" });
    if (!r.ok) return;
    const counters = new Map();
    for (const line of (await r.text()).split("\n")) {
      const m = /^switchyard_(safety_net_retries|mirror_requests)_total\{([^}]*)\}\s+([0-9.eE+]+)/.exec(line);
      if (!m) continue;
      const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]));
      const c = counters.get(labels.service) || {};
      const kind = m[1] === "safety_net_retries" ? "safety" : "mirror";
      c[kind] = c[kind] || {};
      c[kind][labels.result] = (c[kind][labels.result] || 0) + Number(m[3]);
      counters.set(labels.service, c);
    }
    app.counters = counters;
  } catch (_) { /* counters are extras; the loop reports the API's health */ }
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
