// Touchline lifecycle ops dashboard: plain JS, no dependencies, served by the lifecycle service.
// The read token lives in sessionStorage (this tab only); it is sent as a bearer token.
"use strict";

// The channels come from the API (every report lists them all, in one order); each gets the
// colour of its place in that order.
const PALETTE = ["#2f6fed", "#e3a008", "#16a34a", "#db2777", "#6b7385"];
let channels = [];
const color = (channel) => PALETTE[channels.indexOf(channel)] || "#6b7385";
const REFRESH_MS = 15000;
const $ = (id) => document.getElementById(id);
let stages = [];
let liveBefore = null;
let generation = 0; // a refresh renders only if no newer one started (pickers change quickly)
let validatedFit = null; // the model fit the validation chart was drawn for (a fit is costly)

class Unauthorized extends Error {}

async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null));
  const response = await fetch(`${path}?${query}`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem("touchline-token")}` },
  });
  if (response.status === 401 || response.status === 403) throw new Unauthorized();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

const number = (v, digits = 0) =>
  v == null ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const percent = (v) => (v == null ? "–" : `${(100 * v).toFixed(1)}%`);
function duration(seconds) {
  if (seconds == null) return "–";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return `${(seconds / size).toFixed(1)}${unit}`;
  }
  return `${Math.round(seconds)}s`;
}

// A horizontal bar chart as SVG: rows of [label, value, color].
function bars(target, rows, format = (v) => number(v)) {
  const ns = "http://www.w3.org/2000/svg";
  const height = 22, width = 420, left = 130, right = 70;
  const max = Math.max(1e-9, ...rows.map((r) => r[1]));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * height + 4}`);
  svg.setAttribute("class", "bars");
  rows.forEach(([label, value, color], i) => {
    const y = i * height + 2;
    const name = document.createElementNS(ns, "text");
    name.setAttribute("x", 0); name.setAttribute("y", y + 14); name.textContent = label;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", left); bar.setAttribute("y", y + 3); bar.setAttribute("height", height - 8);
    bar.setAttribute("width", Math.max(0, ((width - left - right) * value) / max));
    bar.setAttribute("fill", color || "#2f6fed"); bar.setAttribute("rx", 3);
    const amount = document.createElementNS(ns, "text");
    amount.setAttribute("x", left + ((width - left - right) * value) / max + 6);
    amount.setAttribute("y", y + 14); amount.textContent = format(value);
    svg.append(name, bar, amount);
  });
  target.replaceChildren(svg);
}

function windowParams() {
  const until = new Date();
  const since = new Date(until.getTime() - Number($("window").value) * 86400e3);
  return { since: since.toISOString(), until: until.toISOString() };
}

async function loadConversion(range, mine) {
  const [from, to] = $("step").value.split(">");
  const model = $("model").value;
  const report = await api("/v1/conversion", { from, to, model, ...range });
  if (mine !== generation) return;
  $("conversion-title").textContent = `Conversion ${from} → ${to} by channel`;
  $("conversion-note").textContent =
    `Customers who entered ${from} between ${report.since.slice(0, 10)} and ${report.until.slice(0, 10)}; ` +
    `credit under the ${model.replace("_", " ")} model, ${report.lookback_days}-day lookback` +
    (report.unattributed ? `; ${number(report.unattributed, 2)} conversions had no touch in it.` : ".");
  const table = $("conversion-table");
  table.dataset.since = report.since; table.dataset.until = report.until;
  table.dataset.from = from; table.dataset.to = to; table.dataset.model = report.model;
  const row = (r, cls) => el("tr", { "data-channel": r.channel, class: cls || "" },
    el("td", {}, r.channel), el("td", {}, number(r.entered)), el("td", {}, number(r.converted)),
    el("td", {}, percent(r.rate)), el("td", {}, duration(r.median_seconds)), el("td", {}, duration(r.p90_seconds)),
    el("td", {}, number(r.credited_conversions, 2)), el("td", {}, number(r.credited_revenue, 2)));
  table.tBodies[0].replaceChildren(...report.channels.map((r) => row(r)), row(report.total, "total"));
  channels = report.channels.map((r) => r.channel);
  bars($("conversion-chart"), report.channels.map((r) => [`${r.channel} (credited)`, r.credited_conversions, color(r.channel)]),
    (v) => number(v, 1));
}

async function loadFunnel(range, mine) {
  const funnel = await api("/v1/conversion/funnel", { model: $("model").value, ...range });
  if (mine !== generation) return;
  $("funnel-model").textContent = `(entered → converted, rate; ${funnel.model.replace("_", " ")})`;
  const table = $("funnel-table");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "channel"),
    ...funnel.steps.map((s) => el("th", {}, `${s.from_stage} → ${s.to_stage}`))));
  const names = funnel.steps.length ? funnel.steps[0].channels.map((c) => c.channel) : [];
  const rows = [...names, "total"].map((channel) => el("tr", { "data-channel": channel, class: channel === "total" ? "total" : "" },
    el("td", {}, channel),
    ...funnel.steps.map((s) => {
      const r = channel === "total" ? s.total : s.channels.find((c) => c.channel === channel);
      return el("td", {}, `${number(r.entered)} → ${number(r.converted)} (${percent(r.rate)})`);
    })));
  table.tBodies[0].replaceChildren(...rows);
}

async function loadStages() {
  const data = await api("/v1/stages");
  bars($("stages-chart"), data.stages.map((s) => [s.stage, s.customers]));
  const colors = { active: "#16a34a", at_risk: "#e3a008", lapsed: "#c62828" };
  bars($("status-chart"), Object.entries(data.statuses).map(([k, v]) => [k.replace("_", " "), v, colors[k]]));
}

// The tracking plot: actual and predicted repeat purchases per week, calibration | holdout.
function tracking(target, report) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 900, height = 260, left = 44, right = 12, top = 12, bottom = 40;
  const weeks = report.weeks;
  const max = Math.max(1, ...weeks.flatMap((w) => [w.actual, w.predicted]));
  const px = (i) => left + ((width - left - right) * i) / Math.max(1, weeks.length - 1);
  const py = (v) => top + (height - top - bottom) * (1 - v / max);
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    return n;
  };
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, "data-weeks": weeks.length });
  svg.append(node("line", { x1: left, x2: width - right, y1: py(0), y2: py(0), stroke: "#e3e6ee" }));
  for (const v of [0, max / 2, max]) svg.append(node("text", { x: 0, y: py(v) + 4 }, number(v)));
  const split = weeks.findIndex((w) => w.start > report.calibration_end);
  if (split > 0) {
    svg.append(node("line", { x1: px(split), x2: px(split), y1: top, y2: py(0), stroke: "#6b7385", "stroke-dasharray": "4 3" }));
    svg.append(node("text", { x: px(split) + 4, y: top + 10 }, "holdout →"));
  }
  for (const [key, color, name] of [["actual", "#1d2433", "actual"], ["predicted", "#2f6fed", "predicted"]]) {
    const points = weeks.map((w, i) => `${px(i).toFixed(1)},${py(w[key]).toFixed(1)}`).join(" ");
    svg.append(node("polyline", { points, fill: "none", stroke: color, "stroke-width": 2, class: `series-${key}` }));
  }
  const legend = node("g", { class: "legend" });
  legend.append(node("text", { x: left, y: height - 8 }, `${weeks[0].start} … ${report.holdout_end}, repeat purchases per week:`));
  legend.append(node("rect", { x: left + 400, y: height - 13, width: 14, height: 3, fill: "#1d2433" }));
  legend.append(node("text", { x: left + 420, y: height - 8 }, "actual"));
  legend.append(node("rect", { x: left + 480, y: height - 13, width: 14, height: 3, fill: "#2f6fed" }));
  legend.append(node("text", { x: left + 500, y: height - 8 }, "predicted (BG/NBD)"));
  svg.append(legend);
  target.replaceChildren(svg);
}

const day = (iso) => iso.slice(0, 10);

async function loadModel() {
  let model = null;
  try {
    model = await api("/v1/scoring/model");
  } catch (error) {
    if (error instanceof Unauthorized || !error.message.includes(": 404 ")) throw error;
  }
  let text = "No value model: no refit yet (POST /v1/model/refit, or wait for the scheduled one).";
  if (model && model.status === "fitted") {
    text = `Model fitted ${day(model.fitted_at)} ${model.fitted_at.slice(11, 16)} UTC on purchases ${model.data_from} … ${model.observation_end}` +
      ` (${number(model.n_customers)} buyers, ${number(model.n_repeat_buyers)} repeat buyers)` +
      (model.boundary.length ? `; at the boundary ${model.boundary.join(", ")}` : "");
    if (model.last_attempt && model.last_attempt.status === "failed") {
      text += `. Last refit ${day(model.last_attempt.fitted_at)} failed: ${model.last_attempt.error}; this model stays in use.`;
    }
  } else if (model) {
    text = `No value model: the last refit (${day(model.fitted_at)}) failed: ${model.error}`;
  }
  $("value-model").textContent = text;
  if (!model || model.status !== "fitted") {
    validatedFit = null;
    $("validation-summary").textContent = "no value model yet";
    $("validation-chart").replaceChildren();
    return;
  }
  if (validatedFit === model.fitted_at) return;
  try {
    const report = await api("/v1/scoring/model/validation");
    const off = report.holdout_actual ? ` (${(100 * (report.holdout_predicted / report.holdout_actual - 1)).toFixed(1).replace(/^(?!-)/, "+")}%)` : "";
    $("validation-note").textContent = `(fitted on purchases to ${report.calibration_end}, compared with ${report.calibration_end} … ${report.holdout_end})`;
    $("validation-summary").textContent =
      `${number(report.customers)} customers. Holdout repeat purchases: actual ${number(report.holdout_actual)}, ` +
      `predicted ${number(report.holdout_predicted, 1)}${off}. Mean absolute error ${number(report.weekly_mae, 2)} ` +
      `purchases per week, ${number(report.customer_mae, 3)} per customer.`;
    $("validation-summary").dataset.weeklyMae = report.weekly_mae;
    tracking($("validation-chart"), report);
    validatedFit = model.fitted_at;
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    $("validation-summary").textContent = `Cannot validate: ${error.message}`;
    $("validation-chart").replaceChildren();
  }
}

async function loadScoring() {
  try {
    const segments = await api("/v1/scoring/segments");
    bars($("segments-chart"), Object.entries(segments.segments).map(([k, v]) => [k.replaceAll("_", " "), v, "#7c3aed"]));
    const value = await api("/v1/scoring/value/channels");
    $("value-note").textContent = value.model_status === "fitted"
      ? `(next ${value.horizon_days} days, BG/NBD + Gamma-Gamma)` : "(no value model: why below)";
    $("value-table").tBodies[0].replaceChildren(...value.channels.map((c) => el("tr", { "data-channel": c.channel },
      el("td", {}, c.channel), el("td", {}, number(c.buyers)),
      el("td", {}, number(c.historical_value, 2)), el("td", {}, number(c.expected_purchases, 1)),
      el("td", {}, number(c.predicted_clv, 2)),
      el("td", {}, c.buyers && c.predicted_clv != null ? number(c.predicted_clv / c.buyers, 2) : "–"))));
    await loadModel();
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    $("value-note").textContent = `(scoring service unavailable: ${error.message})`;
  }
}

async function loadLive() {
  const now = await api("/v1/live");
  if (liveBefore) {
    const seconds = (Date.parse(now.at) - Date.parse(liveBefore.at)) / 1000;
    bars($("live-chart"), Object.keys(now.applied).map((c) => [c, Math.max(0, (now.applied[c] - (liveBefore.applied[c] || 0)) / seconds), color(c)]),
      (v) => `${v.toFixed(1)}/s`);
    $("live-chart").classList.remove("muted");
  }
  liveBefore = now;
  $("live-backlog").textContent = now.behind
    ? `${now.behind.toLocaleString()} events not applied yet; the oldest was received ${now.oldest_unapplied_s.toFixed(0)} s ago`
    : "caught up: every event received so far is applied";
}

async function refresh() {
  if (!sessionStorage.getItem("touchline-token")) return askForToken();
  try {
    if (!stages.length) {
      stages = (await api("/v1/stages")).stages.map((s) => s.stage);
      const steps = stages.slice(1).map((to, i) => `${stages[i]}>${to}`);
      $("step").replaceChildren(...steps.map((s) => el("option", { value: s }, s.replace(">", " → "))));
      if (steps.includes("engaged>first_purchase")) $("step").value = "engaged>first_purchase";
    }
    const range = windowParams();
    const mine = ++generation;
    await Promise.all([loadConversion(range, mine), loadFunnel(range, mine), loadStages(), loadScoring(), loadLive()]);
    $("status").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000}s`;
    $("status").className = "muted";
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem("touchline-token");
      return askForToken("That token was refused.");
    }
    $("status").textContent = `Could not refresh: ${error.message}`;
    $("status").className = "error";
  }
}

function askForToken(message = "") {
  $("login-error").textContent = message;
  if (!$("login").open) $("login").showModal();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", () => {
    sessionStorage.setItem("touchline-token", $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem("touchline-token"); askForToken(); });
  for (const id of ["window", "step", "model"]) $(id).addEventListener("change", refresh);
  refresh();
  setInterval(() => { if (sessionStorage.getItem("touchline-token")) refresh(); }, REFRESH_MS);
});
