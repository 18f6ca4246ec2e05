// Shoal's dashboard: reads the REST API from the browser and shows it.
//
// Every string that comes from the API (collection names, payloads, addresses)
// reaches the page as text only: through textContent and text nodes, never
// innerHTML. Payloads are user data. The server's Content-Security-Policy lets
// nothing but this file run, as a second guard.
"use strict";

const REFRESH_MS = 5000;
const KEY_ITEM = "shoal.apiKey"; // sessionStorage: the key lives as long as the tab
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- requests

function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

class ApiError extends Error {}

async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers["api-key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body, cache: "no-store" });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    let why = data && data.status && data.status.error ? data.status.error : text;
    if (resp.status === 401 || resp.status === 403) why = `${why || "refused"} (check the API key)`;
    throw new ApiError(`${method} ${path}: ${resp.status} ${why}`.trim());
  }
  return data ? data.result : null;
}

const enc = encodeURIComponent;

// ------------------------------------------------------------------ helpers

// An element with text children only: strings become text nodes.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
}

function showProblem(text) {
  const p = $("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

// ------------------------------------------------------------------ cluster

function renderCluster(c) {
  const raft = c.raft_info || {};
  $("peer-id").textContent = String(c.peer_id);
  $("role").textContent = raft.role || "–";
  $("leader").textContent = raft.leader === null || raft.leader === undefined ? "none" : String(raft.leader);
  $("term").textContent = String(raft.term);
  $("commit").textContent = String(raft.commit);
  const failing = c.message_send_failures || {};
  const rows = Object.entries(c.peers || {}).map(([id, peer]) => {
    const role = String(raft.leader) === id ? "leader" : "follower";
    const reachable = failing[peer.uri] ? "no" : "yes";
    return el("tr", { "data-peer": id }, el("td", { class: "peer" }, id), el("td", {}, peer.uri),
      el("td", { class: "peer-role" }, role + (String(c.peer_id) === id ? " (this gateway)" : "")),
      el("td", {}, reachable));
  });
  setRows($("peers").tBodies[0], rows);
}

// -------------------------------------------------------------- collections

function stateCounts(replicas) {
  const counts = {};
  for (const r of replicas) counts[r.state] = (counts[r.state] || 0) + 1;
  return Object.entries(counts).sort().map(([s, n]) => `${s} ${n}`).join(", ");
}

function renderCollections(items) {
  const rows = [];
  const shardRows = [];
  for (const { name, info, cluster, error } of items) {
    if (error) {
      rows.push(el("tr", { "data-collection": name }, el("td", { class: "name" }, name),
        el("td", { class: "status status-red", colSpan: 6 }, error)));
      continue;
    }
    const replicas = cluster ? [...cluster.local_shards.map((s) => ({ ...s, peer_id: cluster.peer_id })),
      ...cluster.remote_shards] : [];
    rows.push(el("tr", { "data-collection": name },
      el("td", { class: "name" }, name),
      el("td", { class: `status status-${info.status}` }, info.status),
      el("td", { class: "points num" }, fmt(info.points_count)),
      el("td", { class: "shards num" }, String(info.config.params.shard_number || 1)),
      el("td", { class: "replicas num" }, String(replicas.length)),
      el("td", { class: "states" }, stateCounts(replicas)),
      el("td", { class: "transfers num" }, String(cluster ? cluster.shard_transfers.length : 0))));
    replicas.sort((a, b) => a.shard_id - b.shard_id);
    for (const r of replicas) {
      const points = r.points_count !== undefined ? r.points_count : r.shoal_points_count;
      shardRows.push(el("tr", { "data-collection": name, "data-shard": String(r.shard_id) },
        el("td", { class: "collection" }, name), el("td", { class: "shard num" }, String(r.shard_id)),
        el("td", { class: "peer" }, String(r.peer_id)), el("td", { class: "replica" }, r.shoal_replica || ""),
        el("td", { class: `state state-${String(r.state).toLowerCase()}` }, r.state),
        el("td", { class: "points num" }, fmt(points))));
    }
  }
  setRows($("collections").tBodies[0], rows);
  setRows($("shards").tBodies[0], shardRows);
  const select = $("search-collection");
  const names = items.filter((i) => !i.error).map((i) => i.name);
  const current = [...select.options].map((o) => o.value);
  if (names.join("\n") !== current.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

async function loadCollections() {
  const list = await api("GET", "/collections");
  const names = list.collections.map((c) => c.name).sort();
  return Promise.all(names.map(async (name) => {
    try {
      const [info, cluster] = await Promise.all([
        api("GET", `/collections/${enc(name)}`),
        api("GET", `/collections/${enc(name)}/cluster`).catch(() => null),
      ]);
      return { name, info, cluster };
    } catch (e) {
      return { name, error: e.message };
    }
  }));
}

// ------------------------------------------------------------------- charts

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A line chart of one or two series over time, y from 0; null values are gaps.
function drawChart(svg, times, series, unit) {
  const W = 600, H = 160, left = 46, right = 8, top = 8, bottom = 20;
  const values = series.flat().filter((v) => v !== null && v !== undefined);
  const max = Math.max(...values, 0) || 1;
  const yMax = max * 1.15;
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
  const x = (t) => left + (W - left - right) * ((t - t0) / Math.max(t1 - t0, 1e-9));
  const y = (v) => top + (H - top - bottom) * (1 - v / yMax);
  const nodes = [
    svgEl("line", { class: "axis", x1: left, y1: y(0), x2: W - right, y2: y(0) }),
    svgEl("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }),
    svgEl("text", { class: "label", x: 4, y: top + 10 }, `${fmt(yMax, 2)} ${unit}`),
    svgEl("text", { class: "label", x: 4, y: y(0) }, "0"),
  ];
  if (!times.length) {
    nodes.push(svgEl("text", { class: "label", x: left + 12, y: top + 40 }, "collecting the first samples…"));
  }
  if (times.length > 1) {
    const span = t1 - t0;
    const ago = span < 120 ? `${Math.round(span)} s ago` : `${Math.round(span / 60)} min ago`;
    nodes.push(svgEl("text", { class: "label", x: left, y: H - 4 }, ago));
    nodes.push(svgEl("text", { class: "label", x: W - right - 24, y: H - 4 }, "now"));
  }
  series.forEach((values, i) => {
    let run = [];
    const flush = () => {
      if (run.length > 1) nodes.push(svgEl("polyline", { class: i ? "line second" : "line", points: run.join(" ") }));
      else if (run.length === 1) {  // a lone sample: a dot
        const [cx, cy] = run[0].split(",");
        nodes.push(svgEl("circle", { class: i ? "dot second" : "dot", cx, cy, r: 3 }));
      }
      run = [];
    };
    values.forEach((v, j) => {
      if (v === null || v === undefined) flush();
      else run.push(`${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`);
    });
    flush();
  });
  svg.setAttribute("data-max", String(max));
  svg.replaceChildren(...nodes);
}

function renderHistory(h) {
  const pts = h.points;
  const times = pts.map((p) => p.time);
  drawChart($("rate-chart"), times, [pts.map((p) => p.requests_per_s), pts.map((p) => p.errors_per_s)], "req/s");
  drawChart($("latency-chart"), times, [pts.map((p) => p.latency_mean_ms), pts.map((p) => p.latency_p95_ms)], "ms");
  const last = pts.length ? pts[pts.length - 1] : null;
  $("rate-now").textContent = last ? fmt(last.requests_per_s, 2) : "–";
  $("mean-now").textContent = last ? fmt(last.latency_mean_ms, 2) : "–";
  $("p95-now").textContent = last ? fmt(last.latency_p95_ms, 2) : "–";
  $("period").textContent = `(every ${h.period_s} s; errors and p95 in orange)`;
}

// ------------------------------------------------------------------- search

// The body of a query by point id, written by hand so that a large integer id
// keeps every digit (JavaScript numbers would round it).
function queryBody(id, limit) {
  const text = id.trim();
  const query = /^[0-9]+$/.test(text) ? text : JSON.stringify(text);
  return `{"query": ${query}, "limit": ${limit}, "with_payload": true}`;
}

async function search(event) {
  event.preventDefault();
  const name = $("search-collection").value;
  const id = $("search-id").value;
  const limit = Math.max(1, Math.min(100, parseInt($("search-limit").value, 10) || 10));
  const status = $("search-status");
  const body = $("results").tBodies[0];
  if (!name || !id.trim()) {
    status.textContent = "Choose a collection and give a point id.";
    return;
  }
  status.textContent = "Searching…";
  try {
    const result = await api("POST", `/collections/${enc(name)}/points/query`, queryBody(id, limit));
    const points = result.points || [];
    setRows(body, points.map((p, i) => el("tr", { "data-id": String(p.id) },
      el("td", { class: "rank num" }, String(i + 1)),
      el("td", { class: "id" }, String(p.id)),
      el("td", { class: "score num" }, String(p.score)),
      el("td", { class: "payload" }, JSON.stringify(p.payload === undefined ? null : p.payload)))));
    status.textContent = `${points.length} neighbours of ${id.trim()} in ${name}`;
  } catch (e) {
    setRows(body, []);
    status.textContent = e.message;
  }
}

// ------------------------------------------------------------------ refresh

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  const problems = [];
  const step = async (what, load, show) => {
    try { show(await load()); } catch (e) { problems.push(`${what}: ${e.message}`); }
  };
  try {
    await Promise.all([
      step("cluster", () => api("GET", "/cluster"), renderCluster),
      step("collections", loadCollections, renderCollections),
      step("requests", () => api("GET", "/metrics/history"), renderHistory),
    ]);
    showProblem(problems.join("\n"));
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    refreshing = false;
  }
}

function start() {
  const input = $("api-key");
  input.value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(KEY_ITEM, input.value);
    else sessionStorage.removeItem(KEY_ITEM);
    refresh();
  });
  $("search-form").addEventListener("submit", search);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
