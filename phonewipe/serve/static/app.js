// phonewipe dashboard. Every value from the server is data (device strings are hostile):
// it is set with textContent or as an attribute value, never parsed as HTML.
"use strict";

const state = { jobs: new Map(), view: "live", batch: null, refreshTimer: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function resultClass(result) {
  return { "PASS": "pass", "FAIL": "fail", "NOT ERASED": "blocked",
           "ERASED, NOT VERIFIED": "unverified" }[result] || "";
}

function badge(result) {
  return result ? el("span", { class: `badge ${resultClass(result)}` }, result) : "";
}

function time(ts) {
  return ts ? el("time", { datetime: ts, title: ts }, ts.replace("T", " ").slice(0, 19)) : "";
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows :
    [el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty))]));
}

const OUTCOME_LABELS = { other: "NOT ERASED or NOT VERIFIED" };

function outcomes(counts) {
  return Object.entries(counts || {}).map(([k, v]) => el("span", { class: `badge ${resultClass(k)}` },
                                                          `${OUTCOME_LABELS[k] || k} ${v}`));
}

// -- live ------------------------------------------------------------------------------
function jobRow(job) {
  return el("tr", { "data-job": job.job_id, class: job.running ? "running" : "" },
    el("td", { class: "nowrap" }, job.station), el("td", { class: "nowrap" }, job.batch_id),
    el("td", { class: "mono" }, job.serial),
    el("td", { class: "text" }, job.model),
    el("td", { class: "mono nowrap" }, job.imeis.map((imei) => el("div", {}, imei))),
    el("td", { class: "nowrap" }, job.asset_tag), el("td", { class: "stage nowrap" }, job.running ? job.stage : "done"),
    el("td", { class: "result" }, badge(job.result)), el("td", { class: "nowrap" }, time(job.updated)));
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) =>
    (b.updated || "").localeCompare(a.updated || "") ||
    (b.started || "").localeCompare(a.started || "")).slice(0, 200);
  if (state.jobs.size > 1000) {  // a page left open all week keeps only what it can show
    state.jobs = new Map(jobs.map((j) => [j.station + "/" + j.job_id, j]));
  }
  fill(document.querySelector("#jobs tbody"), jobs.map(jobRow), "no jobs yet", 9);
}

function renderStations(data) {
  const cards = data.stations.map((s) => el("div", { class: "card", "data-station": s.name },
    el("h3", {}, s.name),
    s.directory ? el("p", { class: "muted mono" }, s.directory) : "",
    el("p", {}, el("strong", {}, String(s.running)), " running, ",
       el("strong", {}, String(s.finished)), " finished"),
    el("p", {}, s.open_batches.length ? `open batch ${s.open_batches.join(", ")}` : "no open batch"),
    el("p", { class: "badges" }, outcomes(s.outcomes)),
    el("p", { class: "muted" }, `${s.events} events, last `, time(s.last_event) || "none",
       s.last_event_name ? ` (${s.last_event_name})` : "")));
  document.getElementById("stations").replaceChildren(...cards);
}

async function loadLive() {
  const [overview, jobs] = await Promise.all([api("/api/overview"), api("/api/jobs")]);
  renderStations(overview);
  state.jobs = new Map(jobs.jobs.map((j) => [j.station + "/" + j.job_id, j]));
  renderJobs();
}

// -- batches ---------------------------------------------------------------------------
function batchLink(b) {
  const href = `#batch/${encodeURIComponent(b.source)}/${encodeURIComponent(b.batch_id)}`;
  return el("a", { href }, b.batch_id);
}

async function loadBatches() {
  const data = await api("/api/batches");
  fill(document.querySelector("#batches tbody"), data.batches.map((b) => el("tr", {},
    el("td", {}, b.stations.join(", ")), el("td", {}, batchLink(b)), el("td", {}, b.state),
    el("td", {}, time(b.opened_at)), el("td", {}, time(b.closed_at)),
    el("td", { class: "num" }, String(b.jobs)), el("td", { class: "num" }, String(b.running)),
    el("td", {}, el("div", { class: "badges" }, outcomes(b.outcomes))),
    el("td", {}, b.has_manifest ? "reconciled" : "none"))),
    "no batches", 9);
  if (state.batch) await loadBatch(...state.batch);
  else document.getElementById("batch").replaceChildren();
}

function deviceList(title, entries, describe) {
  return el("div", { class: "recon" }, el("h4", {}, `${title} (${entries.length})`),
    entries.length ? el("ul", {}, entries.map((e) => el("li", {}, describe(e)))) :
      el("p", { class: "muted" }, "none"));
}

function recordLine(e) {
  const ids = [e.serial && `serial ${e.serial}`, e.imeis.length && `IMEI ${e.imeis.join(", ")}`,
               e.asset_tags.length && `asset ${e.asset_tags.join(", ")}`].filter(Boolean).join(" · ");
  return [badge(e.result), " ", ids, e.reason ? el("span", { class: "muted" }, ` — ${e.reason}`) : ""];
}

async function loadBatch(source, batchId) {
  const b = await api(`/api/batches/${encodeURIComponent(source)}/${encodeURIComponent(batchId)}`);
  const r = b.reconciliation;
  const box = document.getElementById("batch");
  box.replaceChildren(el("h3", {}, `Batch ${b.batch_id}`,
                         el("small", {}, ` on ${b.stations.join(", ")}, ${b.state}`)),
    el("p", { class: "muted" }, r.has_manifest ? "reconciled against the batch's asset list" :
      "no asset list: every device is listed by what it was"),
    el("div", { class: "recon-grid" },
      deviceList("Erased", r.erased, recordLine), deviceList("Not erased", r.blocked, recordLine),
      deviceList("Failed", r.failed, recordLine),
      deviceList("Expected, never seen", r.expected_never_seen,
                 (a) => [a.asset_tag || "?", " ", a.identifier, a.owner ? ` (${a.owner})` : ""]),
      deviceList("Seen, not expected", r.seen_not_expected, recordLine),
      deviceList("Duplicates", r.duplicates, (d) => d)));
}

// -- throughput and failures -----------------------------------------------------------
async function loadThroughput() {
  const data = await api("/api/throughput");
  window.phonewipePlot.stackedBars(document.getElementById("plot"), data);
}

async function loadFailures() {
  const data = await api("/api/failures");
  fill(document.querySelector("#failures tbody"), data.failures.map((f) => el("tr", {},
    el("td", { class: "num" }, String(f.count)), el("td", {}, badge(f.result)),
    el("td", {}, f.reason || "no reason given"), el("td", {}, f.stations.join(", ")),
    el("td", {}, time(f.last_at)))),
    "no failures", 5);
}

// -- search ----------------------------------------------------------------------------
function certificateBlock(hit) {
  const base = `${encodeURIComponent(hit.source)}/${encodeURIComponent(hit.record_id)}`;
  if (!hit.certificate) return el("p", { class: "muted" }, "no certificate (not certified)");
  const verdict = el("span", { class: "verdict" }, "verifying…");
  const details = el("div", { class: "verify-details muted" });
  api(`/api/verify/${base}`).then((v) => {
    verdict.textContent = { trusted: "VALID, signer trusted", untrusted: "VALID, signer NOT TRUSTED",
                            invalid: "INVALID" }[v.verdict] || v.verdict;
    verdict.className = `verdict ${v.verdict}`;
    details.replaceChildren(
      el("div", {}, `signed by ${v.signer || "?"}`),
      el("div", { class: "mono" }, `signer sha256 ${v.fingerprint}`),
      el("div", { class: "mono" }, `file sha256 ${v.sha256}`),
      v.trust_note ? el("div", {}, v.trust_note) : "",
      ...v.problems.map((p) => el("div", { class: "error" }, p)));
  }).catch((e) => { verdict.textContent = `cannot verify: ${e.message}`; verdict.className = "verdict invalid"; });
  return el("div", { class: "cert" },
    el("a", { href: `/api/certificate/${base}`, class: "download", download: "" }, "Download certificate (PDF)"),
    " ", verdict, details);
}

function searchHit(hit) {
  return el("article", { class: "hit", "data-job": hit.job_id },
    el("h3", {}, badge(hit.result), " ", hit.model || "unknown model"),
    el("dl", {},
      el("dt", {}, "Serial"), el("dd", { class: "mono" }, hit.serial || "—"),
      el("dt", {}, "IMEI"), el("dd", { class: "mono" }, hit.imeis.join(", ") || "—"),
      el("dt", {}, "Asset tag"), el("dd", {}, hit.asset_tag || "—"),
      el("dt", {}, "Matched by"), el("dd", {}, hit.matched_by.join(", ")),
      el("dt", {}, "When"), el("dd", {}, time(hit.created_at)),
      el("dt", {}, "Station, batch"), el("dd", {}, `${hit.station}, ${hit.batch_id}`),
      el("dt", {}, "Record SHA-256"), el("dd", { class: "mono" }, hit.record_sha256),
      hit.reason ? [el("dt", {}, "Reason"), el("dd", {}, hit.reason)] : []),
    certificateBlock(hit));
}

async function runSearch(query) {
  const box = document.getElementById("results");
  if (!query) { box.replaceChildren(); return; }
  const data = await api(`/api/search?q=${encodeURIComponent(query)}`);
  box.replaceChildren(el("p", { class: "muted" }, `${data.records.length} record(s) for “${data.query}”`),
    ...data.records.map(searchHit));
}

// -- routing and live updates ----------------------------------------------------------
const loaders = { live: loadLive, batches: loadBatches, throughput: loadThroughput,
                  failures: loadFailures, search: async () => {} };

function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  let view = hash.split(/[/?]/)[0] || "live";
  state.batch = null;
  if (view === "batch") {
    const [, station, ...rest] = location.hash.slice(1).split("/");
    state.batch = [decodeURIComponent(station || ""), decodeURIComponent(rest.join("/"))];
    view = "batches";
  }
  if (!(view in loaders)) view = "live";
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (view === "search") {
    const q = new URLSearchParams(location.hash.split("?")[1] || "").get("q") || "";
    document.getElementById("q").value = q;
    runSearch(q).catch(showError);
  }
  loaders[view]().catch(showError);
}

function showError(error) {
  const status = document.getElementById("status");
  status.textContent = `error: ${error.message}`;
  status.className = "status off";
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    if (state.view === "live") api("/api/overview").then(renderStations).catch(showError);
    else if (state.view !== "search") loaders[state.view]().catch(showError);
  }, 1000);
}

function connect() {
  const status = document.getElementById("status");
  const source = new EventSource("/api/events");
  source.onopen = () => { status.textContent = "live"; status.className = "status on"; };
  source.onerror = () => { status.textContent = "reconnecting"; status.className = "status off"; };
  source.addEventListener("change", (message) => {
    const data = JSON.parse(message.data);
    for (const job of data.jobs) state.jobs.set(job.station + "/" + job.job_id, job);
    if (state.view === "live") renderJobs();
    scheduleRefresh();
  });
}

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  location.hash = `search?q=${encodeURIComponent(document.getElementById("q").value.trim())}`;
});
window.addEventListener("hashchange", route);
route();
connect();
