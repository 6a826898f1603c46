// The phoenix dashboard: hosts by rack, rollouts in progress, recent
// events, from the read-only part of /api/v1. Every value that reaches the
// page is set as text (textContent), never parsed as HTML: host names,
// labels, messages and BMC errors come from fleet files, hosts and BMCs.
"use strict";

const refreshMs = 5000;
// At most this many hosts' boot timelines are fetched per refresh: the
// hosts being reimaged, where "which phase is it in" is the question.
const maxBootFetches = 50;
const activeRollout = new Set(["running", "paused", "halted"]);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function state(s) {
  return el("span", { class: "state state-" + String(s).replace(/[^a-z-]/g, "") }, s);
}

function shortDigest(d) {
  return d ? String(d).replace(/^sha256:/, "").slice(0, 12) : "";
}

function ago(t) {
  if (!t) return "";
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 0 || isNaN(s)) return String(t);
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return r.json();
}

function renderSummary(hosts) {
  const counts = {};
  for (const h of hosts) counts[h.state] = (counts[h.state] || 0) + 1;
  const p = document.getElementById("summary");
  p.replaceChildren(hosts.length + " hosts");
  for (const [s, n] of Object.entries(counts).sort()) p.append(" · ", state(s), " " + n);
}

function renderRollouts(rollouts) {
  const box = document.getElementById("rollouts");
  const shown = rollouts.filter(r => activeRollout.has(r.state));
  if (shown.length === 0 && rollouts.length > 0) shown.push(rollouts.reduce((a, b) => (b.id > a.id ? b : a)));
  if (shown.length === 0) {
    box.replaceChildren(el("p", { class: "empty" }, "no rollouts yet"));
    return;
  }
  box.replaceChildren(...shown.map(r => el("div", { class: "rollout", id: "rollout-" + r.id },
    el("strong", {}, "#" + r.id), " ", state(r.state), " ",
    el("progress", { max: String(r.hosts || 1), value: String(r.done || 0) }),
    ` ${r.done}/${r.hosts} done, ${r.failures} failed · ${r.reason} · updated ${ago(r.updated)}`,
    r.halt ? el("div", {}, "halted: " + r.halt) : null)));
}

// lastPhase describes the newest boot of a MAC: its last phase reached
// and when, from GET /api/v1/boots/{mac}; "" when there is none.
function lastPhase(boots) {
  if (!boots || boots.length === 0 || !boots[0].steps || boots[0].steps.length === 0) return "";
  const b = boots[0];
  const st = b.steps[b.steps.length - 1];
  let s = `${st.phase} at ${(st.after_ns / 1e9).toFixed(1)} s`;
  if (b.failed) s += ", " + b.failed;
  return s;
}

function hostRow(h, phases) {
  const rep = h.last_report;
  let running = "no report";
  if (rep) {
    let what = shortDigest(rep.digest) + " (not desired)";
    if (rep.digest === h.digest) what = (h.desired_ref || shortDigest(rep.digest)) + " (desired)";
    else if (rep.digest === h.assigned) what = (h.assigned_ref || shortDigest(rep.digest)) + " (old, queued)";
    running = what + ", " + ago(rep.time);
  }
  let note = h.quarantine || h.last_failure || h.error || "";
  if (h.step) {
    const phase = phases.get(h.name);
    note = `reimaging to ${h.step.target_ref || shortDigest(h.step.target)}, attempt ${h.step.attempt}` +
      (phase ? "; boot: " + phase : "") + (note ? "; " + note : "");
  }
  return el("tr", { id: "host-" + h.name },
    el("td", { class: "mono" }, h.name),
    el("td", {}, state(h.state)),
    el("td", { class: "mono" }, h.desired_ref || h.image || ""),
    el("td", { class: "mono" }, running),
    el("td", { class: "mono" }, (h.macs || []).join(" ")),
    el("td", {}, note));
}

// bootPhases fetches the boot timelines of hosts with a step in flight.
async function bootPhases(hosts) {
  const busy = hosts.filter(h => h.step && h.macs && h.macs.length > 0).slice(0, maxBootFetches);
  const phases = new Map();
  await Promise.all(busy.map(async h => {
    try {
      const p = lastPhase(await getJSON("/api/v1/boots/" + encodeURIComponent(h.macs[0])));
      if (p) phases.set(h.name, p);
    } catch (_) { /* a timeline is a detail: the row shows without it */ }
  }));
  return phases;
}

function renderRacks(hosts, phases) {
  const racks = new Map();
  for (const h of hosts) {
    const rack = (h.labels && h.labels.rack) || "(no rack label)";
    if (!racks.has(rack)) racks.set(rack, []);
    racks.get(rack).push(h);
  }
  const box = document.getElementById("racks");
  if (racks.size === 0) {
    box.replaceChildren(el("p", { class: "empty" }, "no hosts: apply a fleet file (phoenix apply -f fleet.yaml)"));
    return;
  }
  const names = [...racks.keys()].sort();
  box.replaceChildren(...names.map(rack => {
    const list = racks.get(rack).sort((a, b) => (a.name < b.name ? -1 : 1));
    return el("div", { class: "rack" },
      el("h3", {}, "rack " + rack + " (" + list.length + ")"),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["host", "state", "image", "runs", "MACs", "step / failure"].map(t => el("th", {}, t)))),
        el("tbody", {}, ...list.map(h => hostRow(h, phases)))));
  }));
}

// renderDiscovered lists MACs that asked for a script but are in no fleet
// file, newest first; the section stays hidden while there are none.
function renderDiscovered(list) {
  const sorted = list.slice().sort((a, b) => (a.last_seen < b.last_seen ? 1 : -1));
  document.getElementById("discovered-section").hidden = sorted.length === 0;
  document.querySelector("#discovered tbody").replaceChildren(...sorted.map(d => el("tr", {},
    el("td", { class: "mono" }, d.mac),
    el("td", { class: "mono" }, String(d.remote_addr || "").replace(/:\d+$/, "")),
    el("td", { title: d.first_seen }, ago(d.first_seen)),
    el("td", { title: d.last_seen }, ago(d.last_seen)))));
}

function renderEvents(events) {
  const body = document.querySelector("#events tbody");
  body.replaceChildren(...events.map(e => el("tr", {},
    el("td", { title: e.time }, ago(e.time)),
    el("td", {}, e.kind),
    el("td", { class: "mono" }, e.host || ""),
    el("td", {}, e.rollout ? "#" + e.rollout : ""),
    el("td", {}, e.message))));
}

async function refresh() {
  const errBox = document.getElementById("error");
  try {
    const [hosts, rollouts, events, discovered] = await Promise.all([
      getJSON("/api/v1/hosts"), getJSON("/api/v1/rollouts"), getJSON("/api/v1/events?limit=50"),
      getJSON("/api/v1/discovered")]);
    const phases = await bootPhases(hosts || []);
    renderSummary(hosts || []);
    renderRollouts(rollouts || []);
    renderRacks(hosts || [], phases);
    renderDiscovered(discovered || []);
    renderEvents(events || []);
    errBox.hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    errBox.textContent = "phoenix is not answering: " + err.message;
    errBox.hidden = false;
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

refresh();
