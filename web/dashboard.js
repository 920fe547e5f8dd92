// The dashboard: reads the broker's JSON API every REFRESH_MS and draws it.
// Everything from the broker is put in the page as text (textContent),
// never as markup: service names, peer ids and the policy come from peers.
"use strict";

const REFRESH_MS = 2000;
const DEAD_LETTERS_SHOWN = 10;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// The one row of a table with nothing to show, saying so.
function emptyRow(columns, text) {
  const tr = el("tr");
  tr.appendChild(el("td", {colspan: columns, class: "none"}, text));
  return tr;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// 1234567 -> "1,234,567"; rates with one decimal below 100
function count(n) { return Number(n || 0).toLocaleString("en-US"); }
function rate(r) {
  if (r === null || r === undefined) return "-";
  return r < 100 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
}
function ms(v) {
  if (v === null || v === undefined) return "-";
  if (v < 1) return (v * 1000).toFixed(0) + " µs";
  if (v < 1000) return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
  return (v / 1000).toFixed(v < 10000 ? 2 : 0) + " s";
}
function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + (s % 60) + "s";
  return s + "s";
}

// A small chart: lines (and filled areas) of `series` [{values, cls, area}]
// over the same x steps; null values leave gaps. Returns the <svg>.
function chart(series, width, height, opts) {
  opts = opts || {};
  const svg = svgEl("svg", {class: "spark", viewBox: `0 0 ${width} ${height}`,
                            width: opts.fluid ? "100%" : width, height: height,
                            preserveAspectRatio: "none"});
  const n = Math.max(0, ...series.map((s) => s.values.length));
  let max = opts.max || 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const pad = 2, h = height - 2 * pad;
  svg.appendChild(svgEl("line", {x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5,
                                 stroke: "#30363d", "stroke-width": 1}));
  if (n < 2 || max <= 0) {
    if (opts.emptyText) {
      const t = svgEl("text", {x: 4, y: height / 2 + 4, fill: "#8b949e", "font-size": 11});
      t.textContent = opts.emptyText;
      svg.appendChild(t);
    }
    return svg;
  }
  const x = (i) => (i / (n - 1)) * width;
  const y = (v) => pad + h - (v / max) * h;
  for (const s of series) {
    let d = "", start = -1;
    const runs = [];
    s.values.forEach((v, i) => {
      if (v === null) { if (start >= 0) runs.push([start, i - 1]); start = -1; return; }
      if (start < 0) start = i;
      if (i === s.values.length - 1) runs.push([start, i]);
    });
    for (const [a, b] of runs) {
      let line = "";
      for (let i = a; i <= b; i++) line += (i === a ? "M" : "L") + x(i).toFixed(1) + "," + y(s.values[i]).toFixed(1);
      if (s.area) {
        const area = line + `L${x(b).toFixed(1)},${height}L${x(a).toFixed(1)},${height}Z`;
        svg.appendChild(svgEl("path", {d: area, fill: s.color, "fill-opacity": 0.18, stroke: "none"}));
      }
      d += line;
    }
    svg.appendChild(svgEl("path", {d: d, fill: "none", stroke: s.color, "stroke-width": 1.5,
                                   "vector-effect": "non-scaling-stroke"}));
  }
  if (opts.label) {           // the scale, on a backing so that lines do not cross it
    const text = opts.label(max);
    svg.appendChild(svgEl("rect", {x: 0, y: 0, width: text.length * 5.6 + 6, height: 13, fill: "#161b22",
                                   "fill-opacity": 0.85}));
    const t = svgEl("text", {x: 3, y: 10, fill: "#8b949e", "font-size": 10});
    t.textContent = text;
    svg.appendChild(t);
  }
  return svg;
}

const COLORS = {ok: "#3fb950", bad: "#f85149", p50: "#58a6ff", p99: "#d29922"};

function renderHeader(state, ready) {
  const b = state.broker;
  $("meta").textContent = `v${b.version} · up ${duration(b.uptime_s)} · ${b.endpoints.join(" ")}` +
    (b.curve ? " · CURVE" : "") + ` · request timeout ${ms(b.request_timeout_ms)}`;
  const pill = $("ready");
  pill.textContent = ready.text;
  pill.className = "pill " + (ready.ok ? "ready" : "not-ready");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function renderCards(state, history) {
  const b = state.broker;
  let okRate = 0, failedRate = 0, failedTotal = 0;
  for (const s of history.services) {
    okRate += s.window.ok_per_s || 0;
    failedRate += s.window.failed_per_s || 0;
  }
  // the sums over every service (the list holds the busiest 256)
  if (state.services_failed !== undefined) failedTotal = state.services_failed;
  else for (const s of state.services) failedTotal += s.failed;
  $("card-peers").textContent = count(b.peers);
  $("card-peers-sub").textContent = "remote connections · " +
    state.peers.filter((p) => p.kind === "lua").length + " hosted Lua";
  $("card-services").textContent = count(b.services);
  const instances = state.services_instances !== undefined ? state.services_instances
    : state.services.reduce((a, s) => a + s.instance_count, 0);
  $("card-services-sub").textContent = count(instances) + " instance(s)";
  $("card-inflight").textContent = count(b.inflight);
  $("card-ok").textContent = rate(okRate);
  $("card-failed").textContent = rate(failedRate);
  $("card-failed").parentElement.classList.toggle("alert", failedRate > 0);
  $("card-failed-sub").textContent = count(failedTotal) + " failed since start";
  $("card-dead").textContent = count(state.dead_letters.count);
  $("card-dead-sub").textContent = `of ${count(state.dead_letters.capacity)} kept · ${count(state.dead_letters.evicted)} evicted`;
}

function renderTraffic(history) {
  const n = history.ago_s.length;
  const ok = new Array(n).fill(0), bad = new Array(n).fill(0);
  for (const s of history.services)
    for (let i = 0; i < n; i++) { ok[i] += s.ok_per_s[i] || 0; bad[i] += s.failed_per_s[i] || 0; }
  const box = $("traffic-chart");
  box.replaceChildren(chart([{values: ok, color: COLORS.ok, area: true}, {values: bad, color: COLORS.bad, area: true}],
                            1000, 140, {fluid: true, label: (m) => rate(m) + " / s",
                                        emptyText: "collecting: a point every " + history.step_s + " s"}));
  $("traffic-note").textContent = n ? `last ${duration(-history.ago_s[0] + history.step_s)}` : "";
}

// The series metrics.h keeps under reserved names ('_' starts no real one).
const SPECIAL = {_none: "(no such service)", _other: "(other: past the series bound)"};

function renderServices(state, history) {
  const byName = new Map(history.services.map((s) => [s.name, s]));
  const total = state.services_total ?? state.services.length;
  $("services-note").textContent = total > state.services.length
    ? `the busiest ${state.services.length} of ${count(total)}` : "";
  const body = $("services").tBodies[0];
  const rows = [];
  for (const s of state.services) {
    const h = byName.get(s.name);
    const w = h ? h.window : {};
    const tr = el("tr", {"data-service": s.name});
    tr.appendChild(el("td", {class: "name" + (SPECIAL[s.name] ? " special" : ""), "data-field": "name",
                             title: SPECIAL[s.name] ? s.name : ""}, SPECIAL[s.name] || s.name));
    const inst = el("td", {"data-field": "instances", "data-count": s.instance_count});
    if (!s.instance_count) inst.appendChild(el("span", {class: "none"}, "none"));
    for (const i of s.instances)
      inst.appendChild(el("span", {class: "chip " + i.kind, title: `${i.label} · handling ${i.handling}`}, i.id));
    if (s.instance_count > s.instances.length) inst.appendChild(el("span", {class: "chip"}, `+${s.instance_count - s.instances.length}`));
    tr.appendChild(inst);
    tr.appendChild(el("td", {class: "num", "data-field": "requests"}, count(s.requests)));
    tr.appendChild(el("td", {class: "num", "data-field": "ok"}, count(s.ok)));
    const failed = el("td", {class: "num" + (s.failed ? " failed-some" : ""), "data-field": "failed",
                             title: Object.entries(s.outcomes).filter(([k, v]) => k !== "ok" && v).map(([k, v]) => `${k} ${v}`).join(", ")},
                      count(s.failed));
    tr.appendChild(failed);
    tr.appendChild(el("td", {class: "num", "data-field": "ok_per_s"}, rate(w.ok_per_s)));
    tr.appendChild(el("td", {class: "num", "data-field": "failed_per_s"}, rate(w.failed_per_s)));
    tr.appendChild(el("td", {class: "num", "data-field": "p50"}, ms(w.p50_ms)));
    tr.appendChild(el("td", {class: "num", "data-field": "p99"}, ms(w.p99_ms)));
    const rateCell = el("td", {"data-field": "rate_chart"});
    const latCell = el("td", {"data-field": "latency_chart"});
    if (h) {
      rateCell.appendChild(chart([{values: h.ok_per_s, color: COLORS.ok, area: true},
                                  {values: h.failed_per_s, color: COLORS.bad, area: true}], 160, 34,
                                 {label: (m) => rate(m) + "/s", emptyText: "collecting"}));
      latCell.appendChild(chart([{values: h.p50_ms, color: COLORS.p50}, {values: h.p99_ms, color: COLORS.p99}], 160, 34,
                                {label: (m) => ms(m), emptyText: "no answers yet"}));
    }
    tr.appendChild(rateCell);
    tr.appendChild(latCell);
    rows.push(tr);
  }
  if (!rows.length) rows.push(emptyRow(11, "No service has registered yet."));
  body.replaceChildren(...rows);
}

function renderPeers(state) {
  const rows = state.peers.map((p) => {
    const tr = el("tr", {"data-peer": p.id});
    tr.appendChild(el("td", {title: p.label + (p.key ? " · CURVE key " + p.key : "")},
                      p.id + (p.key ? " 🔑" : "")));
    tr.appendChild(el("td", {}, p.kind === "lua" ? "hosted Lua" : (p.address || "-")));
    const names = el("td");
    if (!p.names.length) names.appendChild(el("span", {class: "none"}, "client"));
    for (const n of p.names) names.appendChild(el("span", {class: "chip"}, n));
    if (p.watching) names.appendChild(el("span", {class: "chip"}, "watching"));
    tr.appendChild(names);
    tr.appendChild(el("td", {class: "num", title: "idle " + duration(p.idle_ms / 1000)}, duration(p.connected_ms / 1000)));
    tr.appendChild(el("td", {class: "num"}, count(p.messages_in) + " / " + count(p.messages_out)));
    tr.appendChild(el("td", {class: "num"}, count(p.handling) + " / " + count(p.waiting)));
    tr.appendChild(el("td", {class: "num"}, count(p.queued_bytes) + " B"));
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(7, "Nobody is connected."));
  $("peers").tBodies[0].replaceChildren(...rows);
  $("peers-note").textContent = state.peers_total > state.peers.length
    ? `${state.peers.length} of ${count(state.peers_total)} shown` : `${count(state.peers_total)}`;
}

function renderDead(state) {
  const d = state.dead_letters;
  const rows = d.newest.slice(0, DEAD_LETTERS_SHOWN).map((l) => {
    const tr = el("tr", {"data-dead-letter": l.id, title: `letter ${l.id}: smartshop-ctl dead-letters show ${l.id}`});
    tr.appendChild(el("td", {title: l.at || ""}, (l.at || "").replace(/^.*T/, "").replace("Z", "")));
    tr.appendChild(el("td", {class: "failed-some"}, l.code));
    tr.appendChild(el("td", {}, l.src || "-"));
    tr.appendChild(el("td", {}, l.dst || "-"));
    tr.appendChild(el("td", {}, l.action || "-"));
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(5, "None: every message was delivered."));
  $("dead").tBodies[0].replaceChildren(...rows);
  $("dead-note").textContent = d.count ? `${count(d.count)} kept, the newest ${Math.min(d.count, DEAD_LETTERS_SHOWN)} shown` : "";
}

function renderPolicy(state) {
  const p = state.policy;
  const facts = [["State", p.state]];
  if (p.path) facts.push(["File", p.path]);
  if (p.hooks !== undefined) facts.push(["Hooks", p.hooks || "(none)"]);
  if (p.loads !== undefined) facts.push(["Loads", `${p.loads} (failed ${p.failed_loads}, hook errors ${p.hook_errors})`]);
  if (p.fallback) facts.push(["Warning", "the file did not load: running its last good version"]);
  if (p.stale_since) facts.push(["Stale since", p.stale_since + " (the file on disk is not the version running)"]);
  const dl = $("policy");
  dl.replaceChildren();
  for (const [k, v] of facts) { dl.appendChild(el("dt", {}, k)); dl.appendChild(el("dd", {"data-field": "policy-" + k.toLowerCase()}, v)); }
  const box = $("policy-source-box");
  box.hidden = !p.source;
  if (p.source && $("policy-source").textContent !== p.source)
    $("policy-source").textContent = p.source + (p.source_truncated ? "\n-- (truncated)" : "");
}

function renderMessages(state) {
  const box = $("messages");
  box.replaceChildren();
  const groups = [["Received", state.messages.in, ""], ["Sent", state.messages.out, ""], ["Errors answered", state.messages.errors, "err"]];
  let max = 1;
  for (const [, obj] of groups) for (const v of Object.values(obj)) max = Math.max(max, v);
  for (const [title, obj, cls] of groups) {
    box.appendChild(el("div", {class: "group"}, title));
    const entries = Object.entries(obj).sort((a, b) => b[1] - a[1]);
    if (!entries.length) box.appendChild(el("div", {class: "none group"}, "none"));
    for (const [k, v] of entries) {
      box.appendChild(el("div", {}, k));
      const bar = el("div", {class: "bar " + cls});
      bar.style.width = Math.max(0.5, (v / max) * 100) + "%";
      box.appendChild(bar);
      box.appendChild(el("div", {class: "num"}, count(v)));
    }
  }
}

// The bus (--nats): shown only when the state has one.
function renderBus(state) {
  const bus = state.bus;
  $("bus-panel").hidden = !bus;
  if (!bus) return;
  const pill = $("bus-state");
  pill.textContent = bus.connected ? "connected" : "disconnected";
  pill.className = "pill " + (bus.connected ? "ready" : "not-ready");
  const silent = new Set(bus.silent || []);
  const facts = [["Broker id", bus.broker_id],
                 ["Silent brokers", silent.size ? [...silent].join(", ") : "none"],
                 ["Requests out / in", count(bus.requests_out) + " / " + count(bus.requests_in)],
                 ["Events out / in", count(bus.events_out) + " / " + count(bus.events_in)],
                 ["Answers out / in", count(bus.answers_out) + " / " + count(bus.answers_in)],
                 ["Broadcasts, topics out / in", count(bus.broadcasts_out + bus.topics_out) + " / " +
                   count(bus.broadcasts_in + bus.topics_in)],
                 ["Not crossed", `${count(bus.no_responders)} to nobody · ${count(bus.unreachable)} bus down · ` +
                   `${count(bus.late)} late · ${count(bus.refused)} refused`],
                 ["Link", `${count(bus.disconnects)} disconnects · ${count(bus.reconnects)} reconnects · ` +
                   `${count(bus.queue_dropped)} dropped`]];
  const dl = $("bus");
  dl.replaceChildren();
  for (const [k, v] of facts) {
    dl.appendChild(el("dt", {}, k));
    dl.appendChild(el("dd", {"data-field": "bus-" + k.toLowerCase().replace(/[^a-z]+/g, "-")}, v));
  }
  const remote = state.remote || [];
  const rows = remote.map((r) => {
    const quiet = r.silent || silent.has(r.broker);
    const tr = el("tr", {"data-remote": r.name, "data-broker": r.broker});
    tr.appendChild(el("td", {class: "name", "data-field": "name"}, r.name));
    const b = el("td", {"data-field": "broker", class: quiet ? "failed-some" : "",
                        title: quiet ? "not heard for a while" : ""}, r.broker);
    if (quiet) b.appendChild(el("span", {class: "chip silent", "data-field": "silent"}, "silent"));
    tr.appendChild(b);
    tr.appendChild(el("td", {class: "num", "data-field": "instances"}, count(r.instances)));
    return tr;
  });
  if (!rows.length) rows.push(emptyRow(3, "No other broker holds a name."));
  $("remote").tBodies[0].replaceChildren(...rows);
  const total = state.remote_total ?? remote.length;
  $("bus-note").textContent = total > remote.length
    ? `the first ${remote.length} of ${count(total)} remote names` : `${count(total)} remote name(s)`;
}

async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok && r.status !== 503) throw new Error(path + ": HTTP " + r.status);
  return {status: r.status, body: await r.json()};
}

let lastGood = null;

async function refresh() {
  try {
    const [state, history, ready] = await Promise.all([getJSON("api/v1/state"), getJSON("api/v1/history"), getJSON("readyz")]);
    if (state.status !== 200) throw new Error("not started");
    const readiness = {ok: ready.status === 200, text: ready.status === 200 ? "ready" : (ready.body.reason || "not ready")};
    renderHeader(state.body, readiness);
    renderCards(state.body, history.body);
    renderTraffic(history.body);
    renderServices(state.body, history.body);
    renderPeers(state.body);
    renderDead(state.body);
    renderPolicy(state.body);
    renderMessages(state.body);
    renderBus(state.body);
    lastGood = new Date();
    $("offline").hidden = true;
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (e) {
    $("offline").hidden = false;
    $("offline-since").textContent = lastGood ? lastGood.toLocaleTimeString() : "never";
    $("ready").textContent = "unreachable";
    $("ready").className = "pill not-ready";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
