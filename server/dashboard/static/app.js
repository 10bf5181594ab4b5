// The hubtune dashboard: a small single-page app over the public REST API (/v1), authenticated by the
// session cookie that /dashboard/login sets. Everything it shows comes from the database through the
// API, so a refresh shows the same page again; it polls to stay live.
"use strict";

const LIVE = new Set(["validating_files", "queued", "running", "paused"]);
const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const POLL_MS = 2000;
const state = { session: null, gen: 0, pageStack: [], progress: new Map() };

// --- helpers -----------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const main = () => document.getElementById("main");

function setMain(...nodes) {
  main().replaceChildren(...nodes);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.session ? state.session.csrf_token : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && state.session) {  // the session expired or the key was revoked
    state.session = null;
    route();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function fmtTime(ts) {
  return ts ? new Date(ts * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "";
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  seconds = Math.max(0, Math.round(seconds));
  const hh = Math.floor(seconds / 3600), mm = Math.floor((seconds % 3600) / 60), ss = seconds % 60;
  if (hh) return `${hh}h ${String(mm).padStart(2, "0")}m`;
  if (mm) return `${mm}m ${String(ss).padStart(2, "0")}s`;
  return `${ss}s`;
}

function fmtBytes(n) {
  if (typeof n !== "number") return String(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(ts) {
  return `${fmtDuration(Date.now() / 1000 - ts)} ago`;
}

// A finished job has no stage to show (jobs finished before the lifecycle cleared it may still carry one).
function stageOf(job) {
  return LIVE.has(job.status) ? job.stage || "" : "";
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status, text: status });
}

// job.result.warnings (worker/engine/verdict.py): [{code, message}]; "below_baseline" and
// "unreliable_evaluation" on a job that succeeded all the same. A badge each, the message on hover.
const WARNING_NAMES = { below_baseline: "below baseline", unreliable_evaluation: "unreliable evaluation" };

function warningBadges(job) {
  const warnings = (job.result && Array.isArray(job.result.warnings)) ? job.result.warnings : [];
  return warnings.map((w) => h("span", { class: `badge quality-warning ${w.code}`, "data-warning": w.code,
    title: w.message, text: `⚠ ${WARNING_NAMES[w.code] || w.code}` }));
}

function methodOf(job) {
  const tuning = (job.tuning && job.tuning.type) || "lora";
  return job.task ? `${tuning} · ${job.task}` : tuning;
}

// Repeats fn every POLL_MS until the view changes (state.gen moves on).
function poll(fn) {
  const gen = ++state.gen;
  const tick = async () => {
    if (gen !== state.gen) return;
    try {
      await fn();
    } catch (err) {
      if (gen === state.gen && !(err instanceof ApiError && err.status === 401)) console.error(err);
    }
    if (gen === state.gen) setTimeout(tick, POLL_MS);
  };
  return tick();
}

// --- progress ------------------------------------------------------------------------------------------

function metricsEvents(events) {
  return events.filter((e) => e.type === "metrics" && e.data && e.data.total_steps);
}

// {frac, step, total, eta} from the newest metrics events (newest first) and job.estimated_finish.
function progressFrom(job, newestFirst) {
  if (job.status === "succeeded") return { frac: 1, eta: 0 };
  const m = metricsEvents(newestFirst);
  if (!m.length) return null;
  const step = Number(m[0].data.step || 0), total = Number(m[0].data.total_steps);
  let eta = null;
  if (job.estimated_finish) eta = job.estimated_finish - Date.now() / 1000;
  else if (m.length > 1) {
    const last = m[m.length - 1];
    const rate = (step - last.data.step) / Math.max(1e-9, m[0].created_at - last.created_at);
    if (rate > 0) eta = (total - step) / rate;
  }
  return { frac: Math.min(1, step / total), step, total, eta: LIVE.has(job.status) ? eta : null };
}

async function jobProgress(job) {
  const cached = state.progress.get(job.id);
  if (cached && cached.status === job.status && !LIVE.has(job.status)) return cached.value;
  if (job.status === "validating_files") return null;
  const page = job.status === "succeeded" ? { data: [] } : await api(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/events?limit=30`);
  const value = progressFrom(job, page.data);
  state.progress.set(job.id, { status: job.status, value });
  return value;
}

function progressBar(job, p) {
  const frac = p ? p.frac : 0;
  const pct = Math.floor(frac * 1000) / 10;
  const bar = h("span");
  bar.style.width = `${pct}%`;
  const eta = p && p.eta !== null && p.eta !== undefined && frac < 1 ? `ETA ${fmtDuration(p.eta)}` : "";
  const steps = p && p.total ? `${p.step}/${p.total}` : "";
  return h("div", {
    class: `progress${frac >= 1 ? " done" : ""}`, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": pct, "data-percent": pct, title: steps ? `step ${steps}` : "",
  }, h("div", { class: "bar" }, bar), h("span", { class: "pct", text: p ? `${pct.toFixed(1)}%` : "–" }),
  h("span", { class: "eta", text: eta }));
}

// --- login -----------------------------------------------------------------------------------------

function showLogin(message) {
  state.gen++;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  const error = h("p", { class: "error", id: "login-error", text: message || "" });
  const input = h("input", { type: "password", name: "api_key", id: "api-key", autocomplete: "current-password", placeholder: "ht-…", required: true });
  const form = h("form", { class: "card login", id: "login-form" },
    h("h1", { text: "Log in to hubtune" }),
    h("label", { for: "api-key", text: "API key" }), input,
    h("button", { class: "primary", type: "submit", text: "Log in" }), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      state.session = await api("/dashboard/login", { method: "POST", body: { api_key: input.value } });
      input.value = "";
      if (!location.hash || location.hash === "#/login") location.hash = "#/jobs";
      route();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  setMain(form);
  input.focus();
}

async function logout() {
  try { await api("/dashboard/logout", { method: "POST" }); } catch (err) { /* the cookie may be gone already */ }
  state.session = null;
  showLogin("Logged out.");
}

// --- jobs ------------------------------------------------------------------------------------------

function jobsQuery(params) {
  const q = new URLSearchParams({ limit: "20" });
  for (const k of ["status", "owner", "model", "after"]) if (params.get(k)) q.set(k, params.get(k));
  return q;
}

function jobsView(params) {
  const admin = state.session.is_admin;
  const status = h("select", { name: "status", id: "filter-status" }, h("option", { value: "", text: "any" }),
    STATUSES.map((s) => h("option", { value: s, text: s, selected: params.get("status") === s })));
  const owner = admin ? h("input", { name: "owner", id: "filter-owner", value: params.get("owner") || "", placeholder: "any owner" }) : null;
  const model = h("input", { name: "model", id: "filter-model", value: params.get("model") || "", placeholder: "any model" });
  const form = h("form", { class: "filters", id: "job-filters" },
    h("label", {}, "Status", status), owner && h("label", {}, "Owner", owner), h("label", {}, "Model", model),
    h("button", { class: "primary", type: "submit", text: "Filter" }),
    h("button", { class: "secondary", type: "button", text: "Clear", onclick: () => { state.pageStack = []; location.hash = "#/jobs"; } }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (owner && owner.value.trim()) q.set("owner", owner.value.trim());
    if (model.value.trim()) q.set("model", model.value.trim());
    state.pageStack = [];
    location.hash = `#/jobs?${q}`;
  });
  const tbody = h("tbody");
  const table = h("table", { id: "jobs-table" }, h("thead", {}, h("tr", {},
    ["Job", "Status", "Stage", "Progress", "Owner", "Model", "Method", "Created"].map((t) => h("th", { text: t })))), tbody);
  const newer = h("button", { class: "secondary", type: "button", id: "page-newer", text: "← Newer", disabled: !params.get("after") });
  const older = h("button", { class: "secondary", type: "button", id: "page-older", text: "Older →", disabled: true });
  const error = h("p", { class: "error" });
  setMain(h("h1", { text: admin ? "Jobs (all owners)" : "My jobs" }), h("div", { class: "card" }, form, error, table,
    h("div", { class: "pager" }, newer, older)));
  let last = null;
  newer.addEventListener("click", () => {
    const prev = state.pageStack.pop();
    const q = jobsQuery(params); q.delete("limit"); q.delete("after");
    if (prev) q.set("after", prev);
    location.hash = `#/jobs?${q}`;
  });
  older.addEventListener("click", () => {
    state.pageStack.push(params.get("after") || "");
    const q = jobsQuery(params); q.delete("limit"); q.set("after", last);
    location.hash = `#/jobs?${q}`;
  });
  return poll(async () => {
    let page;
    try {
      page = await api(`/v1/fine_tuning/jobs?${jobsQuery(params)}`);
      error.textContent = "";
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const progress = await Promise.all(page.data.map((j) => jobProgress(j).catch(() => null)));
    tbody.replaceChildren(...page.data.map((job, i) => jobRow(job, progress[i])));
    if (!page.data.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "notice", text: "No jobs match." })));
    last = page.data.length ? page.data[page.data.length - 1].id : null;
    older.disabled = !page.has_more;
  });
}

function jobRow(job, p) {
  return h("tr", { "data-job-id": job.id },
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono", text: job.id })),
    h("td", {}, badge(job.status), ...warningBadges(job)),
    h("td", { text: stageOf(job) }),
    h("td", {}, progressBar(job, p)),
    h("td", { text: job.organization_id }),
    h("td", { class: "mono", text: job.model }),
    h("td", { text: methodOf(job) }),
    h("td", { text: fmtTime(job.created_at) }));
}

// --- job detail ------------------------------------------------------------------------------------

async function allEvents(jobId, known) {
  // Newest-first pages; stop at the first event already known.
  const fresh = [];
  let after = null;
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams({ limit: "100" });
    if (after) q.set("after", after);
    const page = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?${q}`);
    let stop = !page.has_more;
    for (const e of page.data) {
      if (known.has(e.id)) { stop = true; break; }
      fresh.push(e);
    }
    if (stop || !page.data.length) break;
    after = page.data[page.data.length - 1].id;
  }
  return fresh;
}

function eventNumber(e) {
  return Number(String(e.id).replace(/\D/g, ""));
}

// The job's whole metrics series, oldest first: new points are fetched after the last one known. The
// events show a long run's steps thinned (hubtune/step_events.py); the charts draw every step.
async function newPoints(jobId, known) {
  const fresh = [];
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams({ limit: "1000" });
    const last = fresh.length ? fresh[fresh.length - 1] : known[known.length - 1];
    if (last) q.set("after", last.id);
    const page = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/metrics?${q}`);
    fresh.push(...page.data);
    if (!page.has_more || !page.data.length) break;
  }
  return fresh;
}

// DPO's rewards and preference accuracy (worker/engine/dpo.py), on training steps and evaluations.
const PREFERENCE_KEY = /^(train|valid)_(rewards_|preference_accuracy)/;

function curves(points) {
  const train = [], evalLoss = [], other = {}, preference = {};
  for (const p of points) {
    const d = p.data || {}, step = Number(d.step || 0);
    if (typeof d.train_loss === "number") train.push([step, d.train_loss]);
    for (const [k, v] of Object.entries(d)) {
      if (typeof v === "number" && PREFERENCE_KEY.test(k)) { (preference[k] = preference[k] || []).push([step, v]); continue; }
      if (typeof v !== "number" || !/^(valid|eval)_/.test(k) || /runtime|per_second/.test(k)) continue;
      if (/_loss$/.test(k)) evalLoss.push([step, v]);
      else (other[k] = other[k] || []).push([step, v]);
    }
  }
  return { train, evalLoss, other, preference };
}

// The first value under a key matching `re`, searching nested objects.
function findKey(obj, re, depth = 0) {
  if (!obj || typeof obj !== "object" || depth > 4) return undefined;
  for (const [k, v] of Object.entries(obj)) if (re.test(k) && v !== null && v !== undefined) return v;
  for (const v of Object.values(obj)) {
    const found = findKey(v, re, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Counts (parameters, tokens) get thousands separators; ids, seeds and settings are shown as written.
function fmtValue(v, key = "") {
  if (typeof v === "number") {
    if (!Number.isInteger(v)) return String(Number(v.toPrecision(6)));
    return /params|tokens|positions/.test(key) ? v.toLocaleString("en-US") : String(v);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) {
    if (!v.length) return "none";
    const shown = v.slice(0, 8).map((x) => (isPlainObject(x) || Array.isArray(x) ? `${Array.isArray(x) ? "list" : "object"} of ${Object.keys(x).length}` : fmtValue(x)));
    return shown.join(", ") + (v.length > 8 ? `, … (${v.length} in all)` : "");
  }
  return String(v);
}

// [[key, value], ...] with nested objects' keys joined by dots ("timings_s.load_s"), nulls left out.
function flatten(obj, prefix = "", depth = 0) {
  const rows = [];
  for (const [k, v] of Object.entries(obj || {})) {
    if (v === null || v === undefined) continue;
    const key = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v) && depth < 4) rows.push(...flatten(v, key, depth + 1));
    else rows.push([key, v]);
  }
  return rows;
}

// Key/value tables: one of the plain values, then one per nested object (its keys flattened), side by
// side where the card is wide enough.
function kv(obj, { skip = [] } = {}) {
  const entries = Object.entries(obj || {}).filter(([k, v]) => v !== null && v !== undefined && !skip.includes(k));
  const table = (caption, rows) => h("table", { class: "kv" }, caption ? h("caption", { text: caption }) : null,
    h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row", text: k }), h("td", { text: fmtValue(v, k) })))));
  const plain = entries.filter(([, v]) => !isPlainObject(v));
  const tables = plain.length ? [table(null, plain)] : [];
  for (const [k, v] of entries.filter(([, v]) => isPlainObject(v))) {
    const rows = flatten(v);
    if (rows.length) tables.push(table(k, rows));
  }
  return tables.length ? h("div", { class: "kv-groups" }, tables) : h("p", { class: "notice", text: "none" });
}

function memoryCard(job, events) {
  const sources = [job.result, job.data_report, ...events.map((e) => e.data)];
  let estimate, peak;
  for (const s of sources) {
    if (estimate === undefined) estimate = findKey(s, /estimate/i);
    if (peak === undefined) peak = findKey(s, /peak/i);
  }
  const estBytes = typeof estimate === "object" && estimate ? estimate.total_bytes : estimate;
  const rows = [];
  if (estBytes !== undefined) rows.push(["estimate", typeof estBytes === "number" ? fmtBytes(estBytes) : String(estBytes)]);
  if (peak !== undefined) rows.push(["measured peak", typeof peak === "number" ? fmtBytes(peak) : String(peak)]);
  if (typeof estBytes === "number" && typeof peak === "number" && estBytes > 0) rows.push(["peak / estimate", `${((100 * peak) / estBytes).toFixed(0)}%`]);
  const body = rows.length ? kv(Object.fromEntries(rows)) : h("p", { class: "notice", text: "No memory estimate or measurement yet." });
  const parts = typeof estimate === "object" && estimate ? Object.fromEntries(Object.entries(estimate).filter(([k, v]) => /_bytes$/.test(k) && typeof v === "number").map(([k, v]) => [k, fmtBytes(v)])) : null;
  return h("div", { class: "card", id: "memory" }, h("h2", { text: "Memory: estimate vs measured peak" }), body, parts && Object.keys(parts).length ? kv(parts) : null);
}

// The "base" column's name by the record's base_kind: a classifier's baseline is a linear probe.
const BASE_TITLES = { linear_probe: "linear probe (base model embeddings)", base_model: "base model" };

function samplesTable(samples) {
  // Greedy completions of the base and the tuned model on evaluation prompts; text nodes only (h's text).
  const cols = [["prompt", "prompt"], ["reference", "reference"], ["base", "base model"], ["tuned", "fine-tuned"]];
  return h("div", { class: "table-wrap" }, h("h3", { text: "Sample completions" }),
    h("table", { id: "samples-table", class: "samples" }, h("thead", {}, h("tr", {}, cols.map(([, title]) => h("th", { text: title })))),
      h("tbody", {}, samples.map((s) => h("tr", {}, cols.map(([key]) => h("td", { text: String((s && s[key]) ?? "") })))))));
}

function evaluationCard(job) {
  // job.result.evaluation (worker/engine/evaluate.py): {split, primary_metric, base, tuned, base_kind, majority_baseline, beat_baseline, goal, samples}
  const ev = job.result && job.result.evaluation;
  const card = h("div", { class: "card", id: "evaluation" }, h("h2", { text: "Baseline vs fine-tuned" }));
  if (!ev) {
    card.append(h("p", { class: "notice", text: "No evaluation yet." }));
    return card;
  }
  const base = ev.base || ev.baseline, tuned = ev.tuned || ev.fine_tuned, majority = ev.majority_baseline;
  if (ev.base_kind === "linear_probe") card.append(h("p", { class: "notice", text: "Baseline: logistic regression on the frozen base model's embeddings, fitted on the training split." }));
  if (base && tuned && typeof base === "object" && typeof tuned === "object") {
    // Nested metrics (recall_per_class: {label: value}) become a row per label.
    const flat = (o) => Object.fromEntries(flatten(o || {}).map(([k, v]) => [k.replace(/^recall_per_class\./, "recall: "), v]));
    const [b, t, m] = [flat(base), flat(tuned), majority ? flat(majority) : null];
    const names = [...new Set([...Object.keys(b), ...Object.keys(t)])];
    const fmt = (v) => (typeof v === "number" ? v.toFixed(4) : v === undefined || v === null ? "" : fmtValue(v));
    const cols = ["metric", BASE_TITLES[ev.base_kind] || "base model", "fine-tuned", ...(m ? ["majority class"] : [])];
    card.append(h("div", { class: "table-wrap" }, h("table", { id: "evaluation-table" }, h("thead", {}, h("tr", {}, cols.map((c, i) => h("th", { class: i ? "num" : "", text: c })))),
      h("tbody", {}, names.map((n) => h("tr", {}, h("td", { text: n === ev.primary_metric ? `${n} (primary)` : n }),
        h("td", { class: "num", text: fmt(b[n]) }), h("td", { class: "num", text: fmt(t[n]) }),
        m ? h("td", { class: "num", text: fmt(m[n]) }) : null))))));
    const rest = {};
    if (ev.split) rest.split = `${ev.split.source}, ${ev.split.examples} examples` +
      (ev.split.reliable === false ? ` (unreliable: ${ev.split.unreliable_reason})` : "");
    if (ev.beat_baseline !== undefined) rest["beat baseline"] = ev.beat_baseline ? "yes" : "no";
    if (ev.goal) rest.goal = ev.goal;
    card.append(kv(rest));
    if (Array.isArray(ev.samples) && ev.samples.length) card.append(samplesTable(ev.samples));
  } else card.append(kv(ev));
  return card;
}

function warningCard(job) {
  const warnings = (job.result && Array.isArray(job.result.warnings)) ? job.result.warnings : [];
  if (!warnings.length) return null;
  return h("div", { class: "card wide warnings", id: "quality-warnings" }, h("h2", { text: "Warnings" }),
    ...warnings.map((w) => h("p", { "data-warning": w.code, text: w.message })));
}

function hubCard(job) {
  const card = h("div", { class: "card", id: "hub" }, h("h2", { text: "Hub" }));
  let url = (job.result && (job.result.hub_url || job.result.url)) || null;
  if (!url && job.fine_tuned_model && state.session.hub_base_url) {
    const [repo, commit] = job.fine_tuned_model.split("@");
    url = `${state.session.hub_base_url}/${repo}${commit ? `/tree/${commit}` : ""}`;
  }
  if (job.fine_tuned_model) {
    card.append(url && /^https?:\/\//.test(url) ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: job.fine_tuned_model })
      : h("span", { class: "mono", text: job.fine_tuned_model }));
  } else card.append(h("p", { class: "notice", text: job.hub && job.hub.repo_id ? `will publish to ${job.hub.repo_id}` : "not published yet" }));
  return card;
}

function configOf(job) {
  return {
    model: job.model, model_revision: job.model_revision, task: job.task, hyperparameters: job.hyperparameters,
    tuning: job.tuning, training: job.training, hub: job.hub, seed: job.seed, suffix: job.suffix,
    training_file: job.training_file, validation_file: job.validation_file, queue: job.queue,
    attempts: `${job.attempts} of ${job.max_attempts}`, metadata: job.metadata,
    continued_from: continuedFrom(job.lineage), integrations: (job.integrations || []).map((i) => i.type).join(", ") || null,
  };
}

// The earlier job, checkpoint or hub adapter a continued job trains further (hubtune/lineage.py).
function continuedFrom(lineage) {
  if (!lineage || !lineage.parent) return null;
  const p = lineage.parent;
  const what = p.type === "hub" ? `${p.repo_id}@${p.commit}` : p.type === "checkpoint" ? `${p.checkpoint_id} (step ${p.step} of ${p.job_id})` : p.job_id;
  return `${what}, ${lineage.kind === "full" ? "a full fine-tune as the new base" : `its adapter on ${lineage.base_model}`}`;
}

function isPublishError(job) {
  // worker/publish.py fails a job with param "hub" and a hub_* (or publish_failed) code; the artifact is kept.
  return job.status === "failed" && !!job.error && (job.error.param === "hub" || /publish|^hub_/i.test(`${job.error.code}`));
}

// memo keeps the last action's answer across the re-renders that follow it.
function actions(job, refresh, memo) {
  const note = h("span", { class: "muted", id: "action-note", text: memo.note || "" });
  const act = (name, label, cls) => h("button", {
    type: "button", class: cls || "", "data-action": name, text: label,
    onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        await api(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/${name}`, { method: "POST" });
        memo.note = "";
      } catch (err) {
        memo.note = err.status === 404 || err.status === 405 ? `${label} is not available on this server.` : err.message;
      }
      note.textContent = memo.note;
      refresh();
    },
  });
  const buttons = [];
  if (LIVE.has(job.status)) buttons.push(act("cancel", "Cancel", "danger"));
  if (job.status === "queued" || job.status === "running") buttons.push(act("pause", "Pause"));
  if (job.status === "paused") buttons.push(act("resume", "Resume"));
  if (isPublishError(job)) buttons.push(act("publish", "Retry publish"));
  return h("div", { class: "actions", id: "actions" }, buttons, note);
}

function jobView(jobId) {
  const known = new Map();
  const points = [];
  const memo = { note: "" };
  const head = h("div", { class: "head" });
  const charts = h("div", { class: "card", id: "charts" });
  const log = h("div", { class: "log", id: "event-log" });
  const rest = h("div", { class: "grid", id: "job-panels" });
  setMain(h("p", {}, h("a", { href: "#/jobs", text: "← all jobs" })), head, charts,
    h("div", { class: "card" }, h("h2", { text: "Events" }), log), rest);
  let lastStatus = null;
  const refresh = async () => {
    let job;
    try {
      job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      state.gen++;  // nothing more to poll
      setMain(h("h1", { text: "Job not found" }), h("p", { class: "notice", text: `No job ${jobId} is visible to you.` }),
        h("p", {}, h("a", { href: "#/jobs", text: "← all jobs" })));
      return;
    }
    for (const e of await allEvents(jobId, known)) known.set(e.id, e);
    points.push(...await newPoints(jobId, points));
    const events = [...known.values()].sort((a, b) => eventNumber(a) - eventNumber(b));
    const newest = [...events].reverse();
    // Progress from the newest step logged, shown as an event or not.
    const p = progressFrom(job, points.slice(-30).reverse().map((x) => ({ type: "metrics", data: x.data, created_at: x.created_at })));
    head.replaceChildren(h("h1", { class: "mono", text: job.id }), badge(job.status), ...warningBadges(job),
      h("span", { class: "muted", id: "job-stage", text: stageOf(job) }), progressBar(job, p), actions(job, refresh, memo));
    const c = curves(points);
    const series = [{ name: "train_loss", points: c.train }];
    if (c.evalLoss.length) series.push({ name: "eval loss", points: c.evalLoss });
    const otherNames = Object.keys(c.other);
    const width = Math.max(360, Math.round(charts.clientWidth - 34));  // drawn at the card's size: text stays legible
    charts.replaceChildren(...[h("h2", { text: "Loss" }), charts_legend(series), window.charts.lineChart(series, { id: "loss-chart", width }),
      otherNames.length ? h("h2", { text: "Evaluation" }) : null,
      otherNames.length ? charts_legend(otherNames.map((n) => ({ name: n }))) : null,
      otherNames.length ? window.charts.lineChart(otherNames.slice(0, 3).map((n) => ({ name: n, points: c.other[n] })), { id: "eval-chart", height: 200, width }) : null,
      ...preferenceCharts(c.preference, width)].filter(Boolean));
    const stick = log.scrollTop === 0;
    log.replaceChildren(...newest.slice(0, 500).map((e) => h("div", { class: `lvl-${e.level} ${e.type}` },
      `${new Date(e.created_at * 1000).toLocaleTimeString()}  ${e.message}${metricsText(e)}`)));
    if (stick) log.scrollTop = 0;
    if (lastStatus !== job.status || LIVE.has(job.status)) {
      const error = job.error ? h("div", { class: "card", id: "job-error" }, h("h2", { text: "Error" }), kv(job.error)) : null;
      // The evaluation has its own card; the Result table shows the rest.
      rest.replaceChildren(...[error, evaluationCard(job), hubCard(job), memoryCard(job, newest),
        warningCard(job),
        job.result ? h("div", { class: "card wide", id: "result" }, h("h2", { text: "Result" }), kv(job.result, { skip: ["evaluation", "warnings"] })) : null,
        h("div", { class: "card wide", id: "config" }, h("h2", { text: "Configuration" }), kv(configOf(job))),
        h("div", { class: "card wide", id: "data-report" }, h("h2", { text: "Data report" }), kv(job.data_report))].filter(Boolean));
    }
    lastStatus = job.status;
  };
  return poll(refresh);
}

// Two charts for a DPO job: the rewards (chosen, rejected, margin) and the preference accuracy, each
// on training steps and evaluations. Nothing for other jobs.
function preferenceCharts(preference, width) {
  const names = Object.keys(preference).sort();
  if (!names.length) return [];
  const rewards = names.filter((n) => /_rewards_/.test(n)), accuracy = names.filter((n) => /preference_accuracy/.test(n));
  const out = [h("h2", { text: "Preference (DPO)" })];
  for (const [group, id] of [[rewards, "rewards-chart"], [accuracy, "preference-chart"]]) {
    if (!group.length) continue;
    out.push(charts_legend(group.map((n) => ({ name: n }))),
      window.charts.lineChart(group.slice(0, 6).map((n) => ({ name: n, points: preference[n] })), { id, height: 200, width }));
  }
  return out;
}

function metricsText(e) {
  if (e.type !== "metrics" || !e.data || e.message.includes("=")) return "";  // "Step 5/42: training loss=0.123"
  return Object.entries(e.data).filter(([k, v]) => /loss|accuracy|f1/.test(k) && typeof v === "number")
    .map(([k, v]) => `  ${k} ${v.toFixed(4)}`).join("");
}

function charts_legend(series) {
  return h("div", { class: "legend" }, series.map((s, i) => h("span", {}, h("i", { class: `s${i}` }), s.name)));
}

// --- queues and workers ----------------------------------------------------------------------------

function gpuLine(gpu) {
  const used = typeof gpu.memory_used_bytes === "number" ? gpu.memory_used_bytes : null;
  const bar = h("span");
  if (used !== null && gpu.memory_bytes) bar.style.width = `${(100 * used) / gpu.memory_bytes}%`;
  return h("div", { class: "gpu" }, gpu.name || "GPU",
    used !== null ? h("span", { class: "bar" }, bar) : " ",
    used !== null ? `${fmtBytes(used)} / ${fmtBytes(gpu.memory_bytes)}` : fmtBytes(gpu.memory_bytes),
    typeof gpu.utilization === "number" ? ` · ${(100 * gpu.utilization).toFixed(0)}% busy` : "");
}

function workerRow(w) {
  const r = w.resources || {};
  const gpus = r.gpus || [];
  const machine = gpus.length ? gpus.map(gpuLine) : `${r.cpu_count || "?"} CPU · ${r.ram_bytes ? fmtBytes(r.ram_bytes) : "? RAM"}`;
  const job = w.current_job ? h("span", {}, h("a", { href: `#/jobs/${w.current_job.id}`, class: "mono", text: w.current_job.id }), " ",
    w.current_job.status ? badge(w.current_job.status) : "") : h("span", { class: "muted", text: "idle" });
  return h("tr", { "data-worker-id": w.id },
    h("td", { class: "mono", text: w.id }), h("td", { text: w.hostname }), h("td", {}, machine),
    h("td", { text: (w.queues || []).join(", ") }), h("td", {}, job), h("td", { text: ago(w.last_heartbeat) }));
}

function queuesView() {
  const queueBody = h("tbody");
  const workers = h("div", { id: "workers" });
  const chart = h("div", { id: "finished" });
  setMain(h("h1", { text: "Queues" }),
    h("div", { class: "card" }, h("table", { id: "queues-table" }, h("thead", {}, h("tr", {},
      ["Queue", "Waiting", "Running", "Paused", "Workers"].map((t, i) => h("th", { class: i ? "num" : "", text: t })))), queueBody)),
    h("div", { class: "card" }, h("h2", { text: "Workers online" }), workers),
    h("div", { class: "card" }, h("h2", { text: "Jobs finished per hour (last 24 h)" }), chart,
      h("div", { class: "legend" }, h("span", {}, h("i", { class: "bar-ok" }), "succeeded"), h("span", {}, h("i", { class: "bar-failed" }), "failed"),
        h("span", {}, h("i", { class: "bar-cancelled" }), "cancelled"))));
  return poll(async () => {
    const q = await api("/v1/queues");
    queueBody.replaceChildren(...q.data.map((x) => h("tr", { "data-queue": x.name },
      h("td", { class: "mono", text: x.name }), h("td", { class: "num", text: x.waiting }), h("td", { class: "num", text: x.running }),
      h("td", { class: "num", text: x.paused }), h("td", { class: "num", title: (x.workers || []).join("\n"), text: x.worker_count }))));
    chart.replaceChildren(window.charts.hourBars(q.finished_per_hour, { width: Math.max(360, Math.round(chart.clientWidth)) }));
    if (!state.session.is_admin) {
      workers.replaceChildren(h("p", { class: "notice", text: `${q.workers_online} worker(s) online. Details are shown to admins.` }));
      return;
    }
    const w = await api("/v1/workers");
    workers.replaceChildren(w.data.length ? h("table", { id: "workers-table" }, h("thead", {}, h("tr", {},
      ["Worker", "Host", "GPUs / CPU", "Queues", "Current job", "Last heartbeat"].map((t) => h("th", { text: t })))),
    h("tbody", {}, w.data.map(workerRow))) : h("p", { class: "notice", text: "No worker is online." }));
  });
}

// --- routing -------------------------------------------------------------------------------------

function route() {
  if (!state.session) return showLogin();
  const [path, query] = (location.hash || "#/jobs").slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `${state.session.owner}${state.session.is_admin ? " (admin)" : ""}`;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === (parts[0] || "jobs"));
  if (parts[0] === "queues") return queuesView();
  if (parts[0] === "jobs" && parts[1]) return jobView(decodeURIComponent(parts[1]));
  return jobsView(new URLSearchParams(query || ""));
}

async function start() {
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    state.session = await api("/dashboard/session");
  } catch (err) {
    state.session = null;
  }
  route();
}

start();
