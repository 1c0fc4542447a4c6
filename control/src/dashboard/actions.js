// ---- actions.js: the operator's buttons -------------------------------------------------------
// Each button is enabled only when the API would accept it, else disabled with the reason
// (the same rules as control/src/commands/); a change is confirmed in the page, then sent,
// and a 401 opens the token prompt and resends with the token typed there.

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
document.addEventListener("keydown", e => {
  if (e.key !== "Escape") return;
  document.getElementById("confirm").hidden = true;
  document.getElementById("auth").hidden = true;
  pending = null;
});
