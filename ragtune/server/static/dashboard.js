// ragtune dashboard: reads GET api/dashboard and draws it; charts are inline SVG, nothing is fetched elsewhere.
// The search box uses the service's POST search with log: false: a preview that logs no query and no click
// (the log trains models and decides trials: only real users' searches belong in it).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

async function api(path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method: body === undefined ? "GET" : "POST", headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : data.detail ? JSON.stringify(data.detail) : res.status + " " + res.statusText);
  return data;
}

// -- small DOM and SVG helpers ---------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}
function badge(text, tone) { return el("span", { class: "badge " + (tone || "") }, text); }
function fmt(x, digits = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function day(iso) { return (iso || "").slice(0, 10); }
function ticks(max, n = 4) {
  const step = Math.max(1, Math.ceil(max / n));
  const out = [];
  for (let v = 0; v <= max; v += step) out.push(v);
  return out;
}

// -- overview ---------------------------------------------------------------------------------------
function drawOverview(o, trial) {
  const box = document.getElementById("overview");
  const item = (k, v) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)));
  box.replaceChildren(
    item("serving", o.current_version || "nothing indexed"), item("model", o.model), item("docs", o.n_docs),
    item("feedback", o.queries === null ? "unreadable" : `${o.queries} queries · ${o.clicks} clicks · ${o.ratings} ratings`),
    item("trial", trial ? `${trial.version} live` : "none live"),
  );
  const problems = [...o.problems, ...(o.feedback_ok ? [] : [o.feedback_message])];
  const p = document.getElementById("problems");
  p.hidden = problems.length === 0;
  p.textContent = problems.map((x) => "⚠ " + x).join("  ");
}

// -- versions: a timeline and a table ------------------------------------------------------------
function versionTone(v) {
  if (v.current) return ["serving", "good", "var(--green)"];
  if (v.trial_live) return ["live trial", "warn", "var(--orange)"];
  if (v.trial && v.trial.state === "dropped") return ["dropped", "bad", "var(--red)"];
  if (v.never_served) return ["never served", "none", "var(--gray)"];
  return ["served", "", "var(--blue)"];
}
function drawVersions(versions) {
  const box = document.getElementById("versions-chart");
  const W = 960, H = 96, L = 24, R = 24;
  const times = versions.map((v) => Date.parse(v.created));
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const x = (t) => (t1 > t0 ? L + ((t - t0) / (t1 - t0)) * (W - L - R) : W / 2);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "versions over time" });
  chart.append(svg("line", { x1: L, x2: W - R, y1: 56, y2: 56, stroke: "#cbd5e1" }));
  let lastX = -Infinity, row = 0;
  versions.forEach((v, i) => {
    const cx = x(times[i]);
    const [, , color] = versionTone(v);
    row = cx - lastX < 60 ? 1 - row : 0; // alternate labels of close versions above and below
    lastX = cx;
    const g = svg("g", { "data-version": v.name });
    g.append(svg("title", {}, `${v.name} · ${v.created} · ${v.note}`));
    g.append(svg("circle", { cx, cy: 56, r: v.current ? 8 : 6, fill: color, stroke: "#fff", "stroke-width": 2 }));
    g.append(svg("text", { x: cx, y: row ? 84 : 36, "text-anchor": "middle", class: "label" }, v.name));
    if (v.check && !row) g.append(svg("text", { x: cx, y: 20, "text-anchor": "middle" }, `${v.check.metric} ${fmt(v.check.score)}`));
    chart.append(g);
  });
  if (versions.length) {
    chart.append(svg("text", { x: L, y: H - 2 }, day(versions[0].created)));
    chart.append(svg("text", { x: W - R, y: H - 2, "text-anchor": "end" }, day(versions[versions.length - 1].created)));
  }
  box.replaceChildren(versions.length ? chart : el("p", { class: "muted" }, "no version yet: index a corpus first"));

  const body = document.querySelector("#versions-table tbody");
  body.replaceChildren(...versions.slice().reverse().map((v) => {
    const [label, tone] = versionTone(v);
    const check = v.check ? `${v.check.metric} ${fmt(v.check.current)} → ${fmt(v.check.score)} (n=${v.check.n})` : "–";
    let trial = "–";
    if (v.trial && v.trial.wins !== null) trial = `${v.trial.state}: ${v.trial.wins}W / ${v.trial.losses}L / ${v.trial.ties}T, p = ${fmt(v.trial.p_value, 4)}`;
    else if (v.trial) trial = v.trial.state;
    return el("tr", { "data-version": v.name, class: v.current ? "current" : "" },
      el("td", {}, v.name + " ", badge(label, tone)), el("td", {}, v.created.replace("T", " ").slice(0, 16)), el("td", {}, v.kind),
      el("td", {}, v.event || "–"), el("td", { title: v.check ? v.check.reason : "" }, check),
      el("td", { title: v.trial ? v.trial.reason : "" }, trial), el("td", { class: "reason" }, v.note));
  }));
}

// -- feedback per day: grouped bars ----------------------------------------------------------------
function drawDaily(daily) {
  const box = document.getElementById("daily-chart");
  if (!daily.length) { box.replaceChildren(el("p", { class: "muted" }, "no feedback logged yet")); return; }
  // every day from the first to the last, zeros included
  const byDay = Object.fromEntries(daily.map((d) => [d.day, d]));
  const days = [];
  for (let t = Date.parse(daily[0].day); t <= Date.parse(daily[daily.length - 1].day); t += 86400000) {
    const key = new Date(t).toISOString().slice(0, 10);
    days.push(byDay[key] || { day: key, queries: 0, clicks: 0, ratings: 0 });
  }
  const W = 460, H = 200, L = 34, B = 24, T = 10;
  const max = Math.max(1, ...days.map((d) => Math.max(d.queries, d.clicks + d.ratings)));
  const y = (v) => H - B - (v / max) * (H - B - T);
  const slot = (W - L - 8) / days.length, bw = Math.max(2, Math.min(14, slot / 2.6));
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "feedback per day" });
  for (const v of ticks(max)) {
    chart.append(svg("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#eef0f3" }));
    chart.append(svg("text", { x: L - 5, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  const every = Math.ceil(days.length / 7);
  days.forEach((d, i) => {
    const cx = L + slot * (i + 0.5);
    const g = svg("g", { "data-day": d.day });
    g.append(svg("title", {}, `${d.day}: ${d.queries} queries, ${d.clicks} clicks, ${d.ratings} ratings`));
    g.append(svg("rect", { x: cx - bw - 1, y: y(d.queries), width: bw, height: H - B - y(d.queries), fill: "#93c5fd" }));
    g.append(svg("rect", { x: cx + 1, y: y(d.clicks), width: bw, height: H - B - y(d.clicks), fill: "var(--blue)" }));
    g.append(svg("rect", { x: cx + 1, y: y(d.clicks + d.ratings), width: bw, height: y(d.clicks) - y(d.clicks + d.ratings), fill: "var(--green)" }));
    if (i % every === 0) g.append(svg("text", { x: cx, y: H - 6, "text-anchor": "middle" }, d.day.slice(5)));
    chart.append(g);
  });
  const legend = el("div", { class: "legend" });
  for (const [name, color] of [["queries", "#93c5fd"], ["clicks", "var(--blue)"], ["ratings", "var(--green)"]]) legend.append(el("span", {}, el("i", { style: "background:" + color }), name));
  box.replaceChildren(chart, legend);
}

// -- clicks by rank shown: the position-bias curve ----------------------------------------------
function drawRanks(ranks) {
  const box = document.getElementById("ranks-chart");
  const shown = ranks.filter((r) => r.shown > 0);
  if (!shown.length) { box.replaceChildren(el("p", { class: "muted" }, "no search shown yet")); return; }
  const W = 460, H = 200, L = 40, B = 24, T = 12, R = 12;
  const max = Math.max(0.05, ...shown.map((r) => r.rate));
  const x = (rank) => L + ((rank - 1) / Math.max(1, ranks.length - 1)) * (W - L - R);
  const y = (v) => H - B - (v / max) * (H - B - T);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "click rate by rank shown" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eef0f3" }));
    chart.append(svg("text", { x: L - 5, y: y(v) + 4, "text-anchor": "end" }, (100 * v).toFixed(0) + "%"));
  }
  chart.append(svg("polyline", { points: shown.map((r) => `${x(r.rank)},${y(r.rate)}`).join(" "), fill: "none", stroke: "var(--blue)", "stroke-width": 2 }));
  for (const r of ranks) {
    chart.append(svg("text", { x: x(r.rank), y: H - 6, "text-anchor": "middle" }, String(r.rank)));
    if (!r.shown) continue;
    const g = svg("g", { "data-rank": r.rank });
    g.append(svg("title", {}, `rank ${r.rank}: ${r.clicked} of ${r.shown} shown were clicked (${(100 * r.rate).toFixed(1)}%)`));
    g.append(svg("circle", { cx: x(r.rank), cy: y(r.rate), r: 4, fill: "var(--blue)" }));
    chart.append(g);
  }
  const total = shown.reduce((a, r) => a + r.clicked, 0);
  box.replaceChildren(chart, el("div", { class: "legend" }, `share of results clicked at each rank shown (1 = top); ${total} clicked results`));
}

// -- the live trial -------------------------------------------------------------------------------
function drawTrial(t) {
  const box = document.getElementById("trial-panel");
  if (!t) { box.replaceChildren(el("p", { class: "muted" }, "no trial is live: the next refresh whose candidate passes the offline check starts one")); return; }
  const fig = (name, v) => el("div", {}, el("b", {}, String(v)), name);
  const decided = t.wins + t.losses;
  const W = 420, H = 18, w = decided ? (t.wins / decided) * W : W / 2;
  const bar = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "wins and losses" },
    svg("rect", { x: 0, y: 0, width: w, height: H, fill: "var(--green)" }),
    svg("rect", { x: w, y: 0, width: W - w, height: H, fill: decided ? "var(--red)" : "#e5e7eb" }),
    svg("line", { x1: W / 2, x2: W / 2, y1: 0, y2: H, stroke: "#fff", "stroke-dasharray": "3 2" }));
  const tone = t.verdict === "promote" ? "good" : t.verdict === "drop" ? "bad" : "warn";
  box.replaceChildren(
    el("p", {}, el("b", {}, t.version), ` (${t.tier} tier) against ${t.baseline}, ${(100 * t.share).toFixed(0)}% of searches interleaved, since ${t.started.replace("T", " ").slice(0, 16)} `, badge(t.verdict, tone)),
    el("div", { class: "figures" }, fig("wins", t.wins), fig("losses", t.losses), fig("ties", t.ties), fig("p-value", fmt(t.p_value, 4))),
    el("div", { class: "chart" }, bar),
    el("p", { class: "muted" }, `${t.searches} interleaved searches; ${t.reason}`),
  );
}

// -- refresh decisions -------------------------------------------------------------------------
const EVENT_TONE = { indexed: "", promoted: "good", trial_promoted: "good", trial_started: "warn", refresh_refused: "bad", trial_dropped: "bad", abandoned: "bad", refresh_skipped: "none", rolled_back: "warn" };
function drawDecisions(decisions) {
  const body = document.querySelector("#decisions-table tbody");
  if (!decisions.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no decision logged yet"))); return; }
  body.replaceChildren(...decisions.map((d) => el("tr", { "data-event": d.event },
    el("td", {}, d.when.replace("T", " ").slice(0, 16)), el("td", {}, badge(d.event.replace(/_/g, " "), EVENT_TONE[d.event])),
    el("td", {}, d.version || "–"), el("td", { class: "reason" }, d.reason))));
}

// -- load and refresh -------------------------------------------------------------------------------
async function load() {
  try {
    const d = await api("api/dashboard");
    drawOverview(d.overview, d.trial);
    drawVersions(d.versions);
    drawDaily(d.daily);
    drawRanks(d.ranks);
    drawTrial(d.trial);
    drawDecisions(d.decisions);
    document.getElementById("generated").textContent = d.generated.replace("T", " ");
    document.body.dataset.loaded = "true";
  } catch (err) {
    document.getElementById("generated").textContent = "failed: " + err.message;
  }
}

// -- the search box: a preview through POST search with log: false (no query, no click is logged) --
const say = (text) => { document.getElementById("search-status").textContent = text; };

document.getElementById("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = document.getElementById("search-input").value.trim();
  const list = document.getElementById("search-results");
  say("searching…");
  try {
    const res = await api("search", { query, k: 5, log: false });
    const hits = res.hits || [];
    list.replaceChildren(...hits.map((h) => el("li", { "data-doc": h.doc_id },
      el("b", {}, h.title || h.doc_id), el("span", { class: "muted" }, `  ${h.doc_id} · ${fmt(h.score)}`), el("p", {}, (h.text || "").slice(0, 160)))));
    say(`${hits.length} results from ${res.version || "the serving version"}: a preview, not logged (nothing here trains the model)`);
  } catch (err) { say("search failed: " + err.message); }
});

load();
setInterval(load, 15000);
