// clue's dashboard: built from GET /api/v1/datasets (a new dataset needs no
// change here), answered by POST /api/v1/query, kept current by the
// Server-Sent Events of GET /api/v1/changes. Every view is its URL.
"use strict";

window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));

const PRESETS = [["7d", "Last 7 days"], ["30d", "Last 30 days"], ["90d", "Last 90 days"],
  ["month", "This month"], ["quarter", "This quarter"], ["ytd", "Year to date"], ["all", "All"]];
const TOP = 10;
const app = document.getElementById("app");
let datasets = [];
let live = null;
const charts = {};

// ---- the URL is the state -------------------------------------------------

function readState() {
  const q = new URLSearchParams(location.search);
  return {
    p: q.get("p"), path: q.get("path"), q: q.get("q"),
    d: q.get("d"), r: q.get("r"), from: q.get("from"), to: q.get("to"),
    g: q.get("g"), m: q.get("m"),
    f: q.getAll("f").map((x) => { const i = x.indexOf(":"); return [x.slice(0, i), x.slice(i + 1)]; })
      .filter(([k]) => k),
  };
}

function writeState(s, replace) {
  const q = new URLSearchParams();
  for (const k of ["p", "path", "q", "d", "r", "from", "to", "g", "m"]) if (s[k]) q.set(k, s[k]);
  for (const [k, v] of s.f) q.append("f", `${k}:${v}`);
  const url = `${location.pathname}?${q}`;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
}

// ---- dates ------------------------------------------------------------------

const day = (s) => new Date(`${s}T00:00:00Z`);
const iso = (d) => d.toISOString().slice(0, 10);
const addDays = (s, n) => { const d = day(s); d.setUTCDate(d.getUTCDate() + n); return iso(d); };
const daysBetween = (a, b) => Math.round((day(b) - day(a)) / 86400000) + 1;

/// The range a preset means, anchored at the last day holding data.
function presetRange(preset, ds) {
  const last = ds.last_day, d = day(last);
  const y = d.getUTCFullYear(), m = d.getUTCMonth();
  switch (preset) {
    case "7d": return [addDays(last, -6), last];
    case "30d": return [addDays(last, -29), last];
    case "90d": return [addDays(last, -89), last];
    case "month": return [iso(new Date(Date.UTC(y, m, 1))), last];
    case "quarter": return [iso(new Date(Date.UTC(y, m - (m % 3), 1))), last];
    case "ytd": return [iso(new Date(Date.UTC(y, 0, 1))), last];
    default: return [ds.first_day, last];
  }
}

function defaultGrain(ds, from, to) {
  const n = daysBetween(from, to);
  const want = n <= 2 ? "hour" : n <= 92 ? "day" : n <= 800 ? "month" : "quarter";
  return ds.grains.includes(want) ? want : ds.grains[0];
}

// ---- the API ----------------------------------------------------------------

window.__calls = [];

async function api(path, body) {
  window.__calls.push([path, body === undefined ? null : JSON.stringify(body)]);
  const r = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) {
    let p = { title: `HTTP ${r.status}` };
    try { p = await r.json(); } catch (_) { /* not a problem document */ }
    const err = new Error(p.detail || p.title);
    err.problem = p;
    if (r.status === 401) signIn(p.detail);
    throw err;
  }
  return r.json();
}

// ---- signing in -------------------------------------------------------------

/// The key form, shown when the server needs a key and this page has no
/// session: the key is sent once, the server answers with an HttpOnly
/// session cookie (the page never keeps the key).
function signIn(why) {
  if (document.getElementById("sign-in")) return;
  if (live) { live.close(); live = null; }
  const problem = el("div", { id: "sign-in-problem" });
  const input = el("input", { type: "password", id: "key", name: "key", autocomplete: "off",
    placeholder: "clue_…", required: true, size: 56 });
  const form = el("form", { id: "sign-in", class: "panel" },
    el("h1", {}, "Sign in"),
    el("p", { class: "note" }, why && !/needs an API key/.test(why) ? why :
      "This server needs an API key (ask for one, or run clue keys create --name NAME --scope read)."),
    el("label", { for: "key" }, "API key "), input, " ", el("button", { type: "submit" }, "Sign in"), problem);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/api/v1/session", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ key: input.value.trim() }) });
    if (!r.ok) {
      let p = { title: `HTTP ${r.status}` };
      try { p = await r.json(); } catch (_) { /* not a problem document */ }
      const err = new Error(p.detail || p.title); err.problem = p;
      problem.replaceChildren(problemBox(err));
      return;
    }
    input.value = "";
    showSignOut(true);
    refreshDatasets().then(route).catch((err) => app.replaceChildren(problemBox(err)));
  });
  app.replaceChildren(form);
  input.focus();
}

/// A sign-out button in the header while a session stands for a key.
function showSignOut(on) {
  const old = document.getElementById("sign-out");
  if (old) old.remove();
  if (!on) return;
  document.querySelector("header").append(el("button", { id: "sign-out", onclick: async () => {
    await fetch("/api/v1/session", { method: "DELETE" });
    showSignOut(false);
    signIn();
  } }, "Sign out"));
}

function filtersOf(s) {
  const by = {};
  for (const [k, v] of s.f) (by[k] = by[k] || []).push(v);
  return Object.entries(by).map(([dimension, values]) => ({ dimension, in: values }));
}

// ---- rendering helpers ------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
/// A value axis whose labels stay short (100K, not 100,000).
const valueAxis = () => ({ type: "value", axisLabel: { formatter: (v) => compact.format(v) } });
/// Identifiers and years are shown as they are, not as quantities.
const plain = (column) => /(^id$|_id$|^rank$|^year$|^month$)/.test(column);
const show = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? fmt.format(v) : String(v));

function problemBox(err) {
  const p = err.problem || {};
  return el("div", { class: "problem", role: "alert" },
    el("strong", {}, p.title || "Something went wrong"), el("div", {}, p.detail || String(err.message || err)),
    (p.invalid_params || []).map((i) => el("div", {}, `${i.name}: ${i.reason}`)));
}

function chart(id, option) {
  const node = document.getElementById(id);
  if (!node) return;
  const c = charts[id] || echarts.init(node, null, { renderer: "svg" });
  charts[id] = c;
  c.setOption(option, true);
  // For the benchmark: when the first chart was drawn.
  if (window.__firstChart === undefined) window.__firstChart = performance.now();
}

async function downloadCsv(query, name) {
  const r = await fetch("/api/v1/query?format=csv", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(query),
  });
  const blob = await r.blob();
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a); a.click(); a.remove();
}

// ---- pages ------------------------------------------------------------------

function nav(current) {
  const n = document.getElementById("datasets");
  n.replaceChildren(...datasets.map((d) => el("a", {
    href: `/?d=${encodeURIComponent(d.name)}`, "aria-current": d.name === current ? "page" : null,
    onclick: (e) => { e.preventDefault(); go({ d: d.name, f: [] }); },
  }, d.name)), el("a", { href: "/?p=reports", "aria-current": current === "reports" ? "page" : null,
    onclick: (e) => { e.preventDefault(); go({ p: "reports", d: null, f: [] }); } }, "Reports"),
  el("a", { href: "/?p=explore", "aria-current": current === "explore" ? "page" : null,
    onclick: (e) => { e.preventDefault(); go({ p: "explore", d: null, f: [] }); } }, "Explore"));
}

function go(next) {
  const blank = { p: null, path: null, q: null, r: null, from: null, to: null, g: null, m: null };
  history.pushState(null, "", "/");
  writeState({ ...readState(), ...blank, ...next });
  route();
}

function route() {
  Object.values(charts).forEach((c) => c.dispose());
  for (const k of Object.keys(charts)) delete charts[k];
  if (live) { live.close(); live = null; }
  const s = readState();
  if (s.p === "explore") { nav("explore"); return explorePage(s); }
  if (s.p === "reports" || s.p === "report") {
    nav("reports");
    return s.p === "report" && s.path ? reportPage(s) : reportsList();
  }
  const ds = datasets.find((d) => d.name === s.d) || datasets.find((d) => d.last_day) || datasets[0];
  if (!ds) { app.replaceChildren(el("p", { class: "note" }, "No dataset is declared.")); return; }
  nav(ds.name);
  datasetPage(ds, s);
}

function datasetPage(ds, s) {
  document.title = `${ds.name} · clue`;
  if (!ds.time_column) return referencePage(ds, s);
  if (!ds.last_day) {
    app.replaceChildren(el("h1", {}, ds.name), el("p", { class: "note", id: "empty" },
      `No data in ${ds.name} yet. Load some: clue import-data -c FILE.csv -t ${ds.name}, ` +
      `or POST records to /api/v1/datasets/${ds.name}/events; this page updates when they land.`));
    listen(ds, null, null, () => refreshDatasets().then(route));
    return;
  }
  const preset = s.from && s.to ? null : (s.r || "all");
  const [from, to] = preset ? presetRange(preset, ds) : [s.from, s.to];
  const grain = ds.grains.includes(s.g) ? s.g : defaultGrain(ds, from, to);
  const measures = ds.measures.map((m) => m.name);
  const firstSum = ds.measures.find((m) => m.agg === "sum");
  const measure = measures.includes(s.m) ? s.m : (firstSum || ds.measures[0]).name;
  const filters = filtersOf(s);
  const base = { dataset: ds.name, start_date: from, end_date: to, filters };
  const update = (patch) => { writeState({ ...s, ...patch }); route(); };

  const controls = el("div", { class: "controls" },
    PRESETS.map(([k, label]) => el("button", { "aria-pressed": String(k === preset), "data-preset": k,
      onclick: () => update({ r: k, from: null, to: null, g: null }) }, label)),
    el("input", { type: "date", id: "from", value: from, min: ds.first_day, max: ds.last_day,
      onchange: (e) => update({ r: null, from: e.target.value, to, g: null }) }),
    el("input", { type: "date", id: "to", value: to, min: ds.first_day, max: ds.last_day,
      onchange: (e) => update({ r: null, from, to: e.target.value, g: null }) }),
    el("select", { id: "grain", "aria-label": "Granularity", onchange: (e) => update({ g: e.target.value }) },
      ds.grains.map((g) => el("option", { value: g, selected: g === grain }, g))),
    el("select", { id: "measure", "aria-label": "Measure", onchange: (e) => update({ m: e.target.value }) },
      measures.map((m) => el("option", { value: m, selected: m === measure }, m))),
    filterPicker(ds, base, measure, (dim, value) => update({ f: [...s.f, [dim, value]] })));
  const chips = el("div", { class: "chips" }, s.f.map(([k, v]) => el("button", { class: "chip",
    title: "Remove this filter", onclick: () => update({ f: s.f.filter(([a, b]) => !(a === k && b === v)) }) },
    `${k} = ${v}`)));
  const panel = (id, title, query, file, wide) => el("section", { class: `panel${wide ? " wide" : ""}` },
    el("h2", {}, title, el("button", { onclick: () => downloadCsv(query, file) }, "CSV")),
    el("div", { class: "chart", id }));
  const series = { ...base, measures, granularity: grain, gap_fill: true };
  const tops = ds.dimensions.map((dim) => [dim, { ...base, measures: [measure], dimensions: [dim],
    order: [{ field: measure, desc: true }], limit: TOP }]);
  app.replaceChildren(
    el("h1", {}, ds.name), controls, chips,
    el("div", { class: "cards", id: "cards" }),
    el("div", { class: "grid" },
      panel("series", `${measure} by ${grain}`, series, `${ds.name}_${grain}.csv`, true),
      tops.map(([dim, q]) => panel(`top-${dim}`, `Top ${dim} by ${measure}`, q, `${ds.name}_top_${dim}.csv`)),
      el("section", { class: "panel wide" }, el("h2", {}, `${ds.name} by ${grain}`,
        el("button", { onclick: () => downloadCsv(series, `${ds.name}_${grain}.csv`) }, "CSV")),
        el("div", { class: "table-wrap", id: "table" }))));

  const load = async () => {
    const span = daysBetween(from, to);
    const prev = { ...base, measures, start_date: addDays(from, -span), end_date: addDays(from, -1) };
    try {
      const [now, before, timeline, ...top] = await Promise.all([
        api("/api/v1/query", { ...base, measures }), api("/api/v1/query", prev),
        api("/api/v1/query", series), ...tops.map(([, q]) => api("/api/v1/query", q))]);
      cards(ds, now.rows[0] || {}, before.rows[0] || {});
      chart("series", {
        tooltip: { trigger: "axis" }, grid: { left: 60, right: 20, top: 20, bottom: 40 },
        xAxis: { type: "category", data: timeline.rows.map((r) => r.period) },
        yAxis: valueAxis(),
        series: [{ name: measure, type: "line", showSymbol: false, data: timeline.rows.map((r) => r[measure]) }],
      });
      tops.forEach(([dim], i) => chart(`top-${dim}`, {
        tooltip: {}, grid: { left: 120, right: 20, top: 10, bottom: 30 },
        yAxis: { type: "category", inverse: true, data: top[i].rows.map((r) => String(r[dim])) },
        xAxis: valueAxis(),
        series: [{ type: "bar", name: measure, data: top[i].rows.map((r) => r[measure]) }],
      }));
      tops.forEach(([dim]) => charts[`top-${dim}`] && charts[`top-${dim}`].off("click"));
      tops.forEach(([dim]) => charts[`top-${dim}`] && charts[`top-${dim}`].on("click", (p) =>
        update({ f: [...s.f.filter(([k]) => k !== dim), [dim, p.name]] })));
      table(timeline.rows, ["period", ...measures]);
      if (!timeline.rows.some((r) => measures.some((m) => r[m]))) {
        document.getElementById("cards").replaceChildren(el("p", { class: "note", id: "empty" },
          "No data in this range: pick another, or remove a filter."));
      }
    } catch (err) {
      document.getElementById("cards").replaceChildren(problemBox(err));
    }
  };
  load();
  listen(ds, from, to, load);
}

/// A dimension, then one of its values in the range (offered from the
/// data), to filter by.
function filterPicker(ds, base, measure, add) {
  if (!ds.dimensions.length) return null;
  const values = el("select", { id: "filter-value", "aria-label": "Filter value", disabled: true,
    onchange: (e) => { if (e.target.value) add(dims.value, e.target.value); } });
  const dims = el("select", { id: "filter-dim", "aria-label": "Filter on", onchange: async (e) => {
    const dim = e.target.value;
    values.disabled = true;
    if (!dim) { values.replaceChildren(); return; }
    const answer = await api("/api/v1/query", { ...base, measures: [measure], dimensions: [dim],
      order: [{ field: dim }], limit: 1000 });
    values.replaceChildren(el("option", { value: "" }, `${dim} is…`),
      ...answer.rows.map((r) => el("option", { value: String(r[dim]) }, String(r[dim]))));
    values.disabled = false;
  } }, el("option", { value: "" }, "Filter on…"), ds.dimensions.map((d) => el("option", { value: d }, d)));
  return [dims, values];
}

function cards(ds, now, before) {
  document.getElementById("cards").replaceChildren(...ds.measures.map((m) => {
    const v = now[m.name], p = before[m.name];
    const change = typeof v === "number" && typeof p === "number" && p !== 0 ? (v - p) / Math.abs(p) : null;
    return el("div", { class: "card", "data-measure": m.name, "data-value": v === undefined ? "" : String(v) },
      el("div", { class: "label" }, m.name), el("div", { class: "value" }, show(v)),
      el("div", { class: `change ${change > 0 ? "up" : change < 0 ? "down" : ""}` },
        change === null ? "no earlier period to compare" :
          `${change > 0 ? "+" : ""}${fmt.format(change * 100)}% on the previous period`));
  }));
}

function table(rows, columns) {
  let key = columns[0], desc = false;
  const node = document.getElementById("table");
  const draw = () => {
    const sorted = [...rows].sort((a, b) => {
      const x = a[key], y = b[key];
      return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
    });
    node.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, columns.map((c) => el("th", {
      "aria-sort": c === key ? (desc ? "descending" : "ascending") : null,
      onclick: () => { desc = c === key ? !desc : false; key = c; draw(); } }, c)))),
    el("tbody", {}, sorted.map((r) => el("tr", {}, columns.map((c) => el("td", {}, plain(c) ? String(r[c] ?? "–") : show(r[c]))))))));
  };
  draw();
}

function referencePage(ds, s) {
  const measures = ds.measures.map((m) => m.name);
  const query = { dataset: ds.name, measures, dimensions: ds.dimensions, filters: filtersOf(s) };
  app.replaceChildren(el("h1", {}, ds.name), el("div", { class: "table-wrap", id: "table" }));
  api("/api/v1/query", query).then((a) => table(a.rows, [...ds.dimensions, ...measures]))
    .catch((err) => app.append(problemBox(err)));
  listen(ds, null, null, () => route());
}

/// Refetches when a write lands in the shown range (or anywhere, without
/// one), or when notices may have been missed.
function listen(ds, from, to, reload) {
  let timer = null;
  const soon = () => { clearTimeout(timer); timer = setTimeout(reload, 100); };
  live = new EventSource(`/api/v1/changes?datasets=${encodeURIComponent(ds.name)}`);
  live.addEventListener("write", (e) => {
    const w = JSON.parse(e.data);
    if (!from || !w.first || !(w.last < from || w.first > to)) soon();
  });
  live.addEventListener("resync", soon);
}

async function refreshDatasets() { datasets = await api("/api/v1/datasets"); }

// ---- saved reports: found in the served OpenAPI document ---------------------

let reports = null;

/// Every saved report: the GET operations of the API that answer a page of
/// rows (not the record reads, the stream or the health checks).
async function savedReports() {
  if (reports) return reports;
  const doc = await api("/openapi.json");
  reports = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    const op = ops.get;
    const tags = (op && op.tags) || [];
    if (!op || tags.some((t) => ["live", "health", "query"].includes(t)) || path.startsWith("/sales")) continue;
    const content = Object.keys(((op.responses || {})["200"] || {}).content || {});
    reports.push({ path, title: (op.summary || op.description || path).split("\n")[0], tag: tags[0] || "",
      params: (op.parameters || []).filter((p) => p.name !== "format"), csv: content.includes("text/csv") });
  }
  reports.sort((a, b) => a.tag.localeCompare(b.tag) || a.path.localeCompare(b.path));
  return reports;
}

async function reportsList() {
  document.title = "Reports · clue";
  const all = await savedReports();
  app.replaceChildren(el("h1", {}, "Reports"), el("div", { class: "grid" }, all.map((r) =>
    el("a", { class: "panel report-link", href: `/?p=report&path=${encodeURIComponent(r.path)}`,
      onclick: (e) => { e.preventDefault(); go({ p: "report", path: r.path }); } },
    el("h2", {}, r.title), el("div", { class: "note" }, `${r.tag} · GET ${r.path}`)))));
}

const dateLike = (v) => typeof v === "string" && /^\d{4}-\d{2}(-\d{2})?/.test(v);

async function reportPage(s) {
  const report = (await savedReports()).find((r) => r.path === s.path);
  if (!report) { app.replaceChildren(problemBox(new Error(`No report ${s.path}`))); return; }
  document.title = `${report.title} · clue`;
  const q = new URLSearchParams(location.search);
  const values = Object.fromEntries(report.params.map((p) => [p.name, q.get(`a.${p.name}`) || ""]));
  const missing = report.params.filter((p) => p.in === "path" && !values[p.name]);
  const url = (format) => {
    let path = report.path;
    const query = new URLSearchParams();
    for (const p of report.params) {
      if (p.in === "path") path = path.replace(`{${p.name}}`, encodeURIComponent(values[p.name]));
      else if (values[p.name]) query.set(p.name, values[p.name]);
    }
    if (format) query.set("format", format);
    const qs = query.toString();
    return qs ? `${path}?${qs}` : path;
  };
  const form = el("form", { class: "controls", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams(location.search);
    for (const p of report.params) {
      const v = e.target.elements[p.name].value;
      if (v) next.set(`a.${p.name}`, v); else next.delete(`a.${p.name}`);
    }
    history.pushState(null, "", `/?${next}`); route();
  } }, report.params.map((p) => el("label", {}, `${p.name} `, el("input", { name: p.name, value: values[p.name],
    type: (p.schema || {}).format === "date" ? "date" : "text", placeholder: p.description || "" }))),
  el("button", { type: "submit" }, "Show"),
  report.csv && !missing.length ? el("a", { class: "chip-link", href: url("csv"), download: "" }, "CSV") : null);
  app.replaceChildren(el("h1", {}, report.title), form, el("div", { id: "report" }));
  if (missing.length) {
    document.getElementById("report").replaceChildren(el("p", { class: "note" },
      `Give ${missing.map((p) => p.name).join(", ")} to see this report.`));
    return;
  }
  const load = async () => {
    const out = document.getElementById("report");
    try {
      const answer = await api(url(null));
      out.replaceChildren(...shapeReport(answer));
      drawReport(answer);
    } catch (err) { out.replaceChildren(problemBox(err)); }
  };
  load();
  // A report over dates refetches only for writes that land in them.
  const from = values.start_date || values.from || "0000-01-01";
  const to = values.end_date || values.to || "9999-12-31";
  let timer = null;
  live = new EventSource("/api/v1/changes");
  const soon = () => { clearTimeout(timer); timer = setTimeout(load, 100); };
  live.addEventListener("write", (e) => {
    const w = JSON.parse(e.data);
    if (!w.first || !(w.last < from.slice(0, 10) || w.first > to.slice(0, 10))) soon();
  });
  live.addEventListener("resync", soon);
}

/// The panels a report's answer needs: a chart chosen by its shape, a table.
function shapeReport(answer) {
  if (!Array.isArray(answer)) return [el("pre", { class: "panel" }, JSON.stringify(answer, null, 2))];
  if (!answer.length) return [el("p", { class: "note", id: "empty" }, "Nothing to show: no rows for these parameters.")];
  const wrap = el("div", { class: "table-wrap", id: "table" });
  return [el("div", { class: "panel" }, el("div", { class: "chart", id: "report-chart" })), el("div", { class: "panel" }, wrap)];
}

function drawReport(answer) {
  if (!Array.isArray(answer) || !answer.length) return;
  const columns = Object.keys(answer[0]);
  table(answer, columns);
  const numbers = columns.filter((c) => answer.some((r) => typeof r[c] === "number"));
  const labels = columns.filter((c) => !numbers.includes(c));
  const value = numbers.find((c) => !/(_id|^id|rank)$/.test(c)) || numbers[0];
  if (!value) return;
  const time = labels.find((c) => answer.every((r) => dateLike(r[c])));
  const others = labels.filter((c) => c !== time);
  if (time && others.length) {
    // A period × dimension heat table: a cell's shade is its share of the largest.
    const xs = [...new Set(answer.map((r) => r[time]))].sort();
    const key = (r) => others.map((c) => r[c]).join(" · ");
    const ys = [...new Set(answer.map(key))].sort();
    const cell = new Map(answer.map((r) => [`${key(r)}|${r[time]}`, r[value]]));
    const max = Math.max(...answer.map((r) => Math.abs(r[value] || 0))) || 1;
    document.getElementById("report-chart").replaceWith(el("div", { class: "table-wrap", id: "report-chart" },
      el("table", { class: "heat", "data-value": value }, el("thead", {}, el("tr", {}, el("th", {}, others.join(" · ")),
        xs.map((x) => el("th", {}, x)))),
      el("tbody", {}, ys.map((y) => el("tr", {}, el("td", {}, y), xs.map((x) => {
        const v = cell.get(`${y}|${x}`);
        return el("td", { style: v === undefined ? null :
          `background: rgba(47, 111, 237, ${(0.08 + 0.6 * Math.abs(v) / max).toFixed(3)})` }, show(v));
      })))))));
  } else if (time) {
    const rows = [...answer].sort((a, b) => (a[time] < b[time] ? -1 : 1));
    chart("report-chart", { tooltip: { trigger: "axis" }, grid: { left: 60, right: 20, top: 20, bottom: 40 },
      xAxis: { type: "category", data: rows.map((r) => r[time]) }, yAxis: { type: "value" },
      series: [{ type: "line", name: value, data: rows.map((r) => r[value]) }] });
  } else {
    const label = (r) => (labels.length ? labels : [columns[0]]).map((c) => r[c]).join(" · ");
    chart("report-chart", { tooltip: {}, grid: { left: 160, right: 20, top: 10, bottom: 30 },
      yAxis: { type: "category", inverse: true, data: answer.map(label) }, xAxis: valueAxis(),
      series: [{ type: "bar", name: value, data: answer.map((r) => r[value]) }] });
  }
}

window.addEventListener("popstate", route);
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
fetch("/api/v1/session").then((r) => (r.ok ? r.json() : null)).then((s) => showSignOut(!!(s && s.key)))
  .catch(() => {});
refreshDatasets().then(route).catch((err) => {
  if (!document.getElementById("sign-in")) app.replaceChildren(problemBox(err));
});

// ---- explore: any query, shown with what it asked and how it was answered --

function explorePage(s) {
  document.title = "Explore · clue";
  let query = null;
  try { query = s.q ? JSON.parse(s.q) : null; } catch (_) { query = null; }
  const ds = datasets.find((d) => d.name === (query && query.dataset)) ||
    datasets.find((d) => d.last_day) || datasets[0];
  if (!query || query.dataset !== ds.name) {
    const first = (ds.measures.find((m) => m.agg === "sum") || ds.measures[0]).name;
    query = { dataset: ds.name, measures: [first], dimensions: [], start_date: ds.first_day || undefined,
      end_date: ds.last_day || undefined, granularity: ds.grains.includes("month") ? "month" : undefined };
  }
  const set = (patch) => {
    const next = { ...query, ...patch };
    for (const k of Object.keys(next)) if (next[k] === undefined || next[k] === "" ||
      (Array.isArray(next[k]) && !next[k].length && k !== "measures")) delete next[k];
    writeState({ ...readState(), p: "explore", q: JSON.stringify(next) }); route();
  };
  const checks = (name, options, chosen) => el("fieldset", { class: "controls" }, el("legend", {}, name),
    options.map((o) => el("label", {}, el("input", { type: "checkbox", name, value: o, checked: chosen.includes(o),
      onchange: (e) => set({ [name]: e.target.checked ? [...chosen, o] : chosen.filter((x) => x !== o) }) }), ` ${o}`)));
  const filters = query.filters || [];
  app.replaceChildren(el("h1", {}, "Explore"),
    el("div", { class: "controls" },
      el("select", { id: "dataset", "aria-label": "Dataset", onchange: (e) => {
        writeState({ ...readState(), p: "explore", q: JSON.stringify({ dataset: e.target.value }) }); route(); } },
      datasets.map((d) => el("option", { value: d.name, selected: d.name === ds.name }, d.name))),
      ds.time_column ? [
        el("select", { id: "granularity", "aria-label": "Granularity", onchange: (e) => set({ granularity: e.target.value || undefined }) },
          el("option", { value: "" }, "whole range"), ds.grains.map((g) => el("option", { value: g, selected: g === query.granularity }, g))),
        el("input", { type: "date", id: "start", value: query.start_date || "", onchange: (e) => set({ start_date: e.target.value || undefined }) }),
        el("input", { type: "date", id: "end", value: query.end_date || "", onchange: (e) => set({ end_date: e.target.value || undefined }) }),
        el("input", { id: "tz", placeholder: "time zone (e.g. Europe/Paris)", value: query.time_zone || "",
          onchange: (e) => set({ time_zone: e.target.value.trim() || undefined }) })] : null,
      el("input", { id: "limit", type: "number", min: 1, max: 100000, placeholder: "limit", value: query.limit || "",
        onchange: (e) => set({ limit: e.target.value ? Number(e.target.value) : undefined }) })),
    checks("measures", ds.measures.map((m) => m.name), query.measures || []),
    checks("dimensions", ds.dimensions, query.dimensions || []),
    el("div", { class: "controls" }, el("label", {}, "Filter ",
      el("select", { id: "filter-dim" }, ds.dimensions.map((d) => el("option", { value: d }, d)))),
      el("input", { id: "filter-values", placeholder: "values, comma-separated" }),
      el("button", { onclick: () => {
        const dim = document.getElementById("filter-dim").value;
        const values = document.getElementById("filter-values").value.split(",").map((v) => v.trim()).filter(Boolean);
        if (values.length) set({ filters: [...filters.filter((f) => f.dimension !== dim), { dimension: dim, in: values }] });
      } }, "Add filter")),
    el("div", { class: "chips" }, filters.map((f) => el("button", { class: "chip",
      onclick: () => set({ filters: filters.filter((x) => x !== f) }) }, `${f.dimension} in ${(f.in || []).join(", ")}`))),
    el("section", { class: "panel" }, el("h2", {}, "Answer", el("span", { class: "note", id: "served" }),
      el("button", { onclick: () => downloadCsv(query, `${ds.name}.csv`) }, "CSV")),
      el("div", { class: "chart", id: "explore-chart" }), el("div", { class: "table-wrap", id: "table" })),
    el("section", { class: "panel" }, el("h2", {}, "The query"),
      el("pre", { id: "query-json" }, JSON.stringify(query, null, 2)),
      el("pre", { id: "curl" }, `curl -s ${location.origin}/api/v1/query -H 'content-type: application/json' -d '${JSON.stringify(query).replace(/'/g, "'\\''")}'`)));
  const load = async () => {
    const started = performance.now();
    try {
      const r = await fetch("/api/v1/query", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(query) });
      if (r.status === 401) { signIn(); return; }
      const answer = await r.json();
      if (!r.ok) { const err = new Error(answer.detail || answer.title); err.problem = answer; throw err; }
      const took = Math.round(performance.now() - started);
      document.getElementById("served").textContent = ` ${answer.rows.length} row(s) in ${took} ms · cache ${r.headers.get("clue-cache") || "n/a"} · served from ` +
        answer.served_from.map((x) => `${x.source}${x.name ? " " + x.name : ""}`).join(", ");
      const columns = answer.rows.length ? Object.keys(answer.rows[0]) : [];
      table(answer.rows, columns);
      const measure = (query.measures || [])[0];
      const dims = query.dimensions || [];
      if (!answer.rows.length) {
        document.getElementById("explore-chart").replaceChildren(el("p", { class: "note", id: "empty" }, "No rows: widen the range or remove a filter."));
      } else if (query.granularity) {
        const keys = [...new Set(answer.rows.map((r) => dims.map((d) => r[d]).join(" · ")))].slice(0, 12);
        const periods = [...new Set(answer.rows.map((r) => r.period))];
        chart("explore-chart", { tooltip: { trigger: "axis" }, legend: { type: "scroll", top: 0 },
          grid: { left: 60, right: 20, top: 40, bottom: 40 }, xAxis: { type: "category", data: periods }, yAxis: { type: "value" },
          series: keys.map((k) => ({ type: "line", name: k || measure, showSymbol: false, data: periods.map((p) => {
            const row = answer.rows.find((r) => r.period === p && dims.map((d) => r[d]).join(" · ") === k);
            return row ? row[measure] : null; }) })) });
      } else {
        chart("explore-chart", { tooltip: {}, grid: { left: 160, right: 20, top: 10, bottom: 30 },
          yAxis: { type: "category", inverse: true, data: answer.rows.map((r) => dims.map((d) => r[d]).join(" · ") || measure) },
          xAxis: valueAxis(), series: [{ type: "bar", name: measure, data: answer.rows.map((r) => r[measure]) }] });
      }
    } catch (err) {
      document.getElementById("explore-chart").replaceChildren(problemBox(err));
    }
  };
  load();
  listen(ds, query.start_date || null, query.end_date || null, load);
}
