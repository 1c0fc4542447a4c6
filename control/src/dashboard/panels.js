// ---- panels.js: what wave 2 adds (SPEC §11, §13–§15), each drawn only when the API has it ----
// The sequential evidence, impact, safety-net and mirror panels of a service card, and the fleet
// card. They read only what `app.js` polled; absent fields draw nothing.

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
        el("span", {}, "failures ", el("b", { "data-k": "failures", text: evidenceText(ev.failures) })),
        el("span", {}, "slow ", el("b", { "data-k": "slow", text: evidenceText(ev.slow) })),
        el("span", {}, "limit ", el("b", { "data-k": "limit", text: fmt(ev.limit, 0) }))),
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
      impactLine(im)));
  }
  // Counters from the service document when it carries them (`rollout.safety_net.retries`,
  // `rollout.mirror`), else from `/metrics` (SPEC §15 names); drawn once there is something.
  const k = app.counters.get(svc.name) || {};
  const net = r.safety_net || {};
  const safety = net.retries || k.safety;
  const mirror = (r.mirror && typeof r.mirror.sent === "number" ? r.mirror : null) || k.mirror;
  const any = c => !!c && Object.values(c).some(n => n > 0);
  if (safety && (net.enabled || any(safety))) out.push(countsPanel("safety-net",
    "Safety net (retried on stable)" + (typeof net.budget_pct === "number" ? ` · budget ${net.budget_pct}%` : ""), safety,
    [["ok", "saved"], ["failed", "stable failed too"], ["budget", "over budget"], ["unsafe", "not replayable"]]));
  if (mirror && (any(mirror) || r.mode === "mirror")) out.push(countsPanel("mirror", "Mirror copies", mirror,
    [["sent", "sent"], ["dropped", "dropped"], ["failed", "failed"]]));
  return out;
}

/**
 * A rollout's impact on users (`rollout.impact`, or the rollback event's copy of it): users on
 * the canary of all users, users who received an error, requests that failed for users.
 */
function impactLine(im) {
  const n = (k, v) => el("b", { "data-k": k, text: String(v) });
  return el("div", { class: "kv impact" },
    el("span", {}, "on the canary ", n("users_on_canary", im.users_on_canary),
      typeof im.users_total === "number" ? [" of ", n("users_total", im.users_total), " users"] : " users"),
    el("span", { class: im.users_failed > 0 ? "fail" : null }, "saw an error ", n("users_failed", im.users_failed),
      typeof im.users_failed_pct === "number" ? [" (", el("span", { "data-k": "users_failed_pct", text: fmt(im.users_failed_pct, 2) }), "%)"] : ""),
    typeof im.requests_failed === "number" ? el("span", {}, "failed requests ", n("requests_failed", im.requests_failed)) : null);
}

/** An evidence value: 1 is none; past a million (after a rollback) in powers of ten. */
function evidenceText(v) {
  return typeof v === "number" && v >= 1e6 ? v.toExponential(2) : fmt(v, 2);
}

/** A panel of counters by result (`/metrics` label values → what to call them). */
function countsPanel(name, title, counts, results) {
  return el("div", { class: "panel", "data-panel": name }, el("h3", { text: title }),
    el("div", { class: "kv" }, ...results.map(([result, label]) =>
      el("span", {}, label + " ", el("b", { "data-k": result, text: String(counts[result] || 0) })))));
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
  // The service documents carry the counters themselves: no need to read `/metrics`.
  if (services.some(s => s.rollout && (s.rollout.safety_net || s.rollout.mirror))) return;
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
