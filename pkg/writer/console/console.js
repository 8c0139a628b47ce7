// The esflow operations console. No framework, no build step: DOM calls
// only (textContent, never innerHTML, so event data is never markup), and
// hand-drawn SVG charts over a history the page keeps itself (see
// pkg/writer/DESIGN.md). window.esflowConsole exposes that state for
// tests and for a curious person's devtools.
"use strict";
(function () {
  const HISTORY = 300;   // samples kept: five minutes at one per second
  const LOG_PAGE = 20;   // notifications per log page
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  const state = { samples: [], series: {}, streams: [], stream: null, log: { first: 0, last: 0 }, projections: [] };
  window.esflowConsole = state;

  const $ = (id) => document.getElementById(id);
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  };
  function row(cells, cls) {
    const tr = el("tr", undefined, cls);
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined ? "" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }
  async function getJSON(url, opts) {
    const r = await fetch(url, Object.assign({ cache: "no-store" }, opts || {}));
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  }
  const short = (s, n) => (s && s.length > n ? s.slice(0, n) + "…" : s || "");
  const pretty = (v) => JSON.stringify(v, null, 2);

  // ---- charts -------------------------------------------------------
  // draw plots series {name: [[t, v], ...]} into an SVG with a y axis from
  // 0 to the largest value, the last five minutes on the x axis.
  function draw(svg, series) {
    const W = 400, H = 160, L = 34, R = 6, T = 8, B = 40;
    svg.replaceChildren();
    const names = Object.keys(series).sort();
    const now = Date.now(), t0 = now - HISTORY * 1000;
    let max = 1;
    for (const n of names) for (const p of series[n]) max = Math.max(max, p[1]);
    max = niceCeil(max);
    const x = (t) => L + (W - L - R) * (t - t0) / (now - t0);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: "grid" }));
      const label = svgEl("text", { x: L - 4, y: y(max * f) + 3, "text-anchor": "end" });
      label.textContent = fmt(max * f);
      svg.appendChild(label);
    }
    for (const [i, m] of [[0, "-5m"], [0.6, "-2m"], [1, "now"]]) {
      const label = svgEl("text", { x: L + (W - L - R) * i, y: H - B + 11, "text-anchor": i === 1 ? "end" : "middle" });
      label.textContent = m;
      svg.appendChild(label);
    }
    names.forEach((n, i) => {
      const pts = series[n].filter((p) => p[0] >= t0);
      const color = COLORS[i % COLORS.length];
      if (pts.length > 0) {
        svg.appendChild(svgEl("polyline", {
          points: pts.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "),
          stroke: color, "data-series": n, "data-last": pts[pts.length - 1][1], "data-points": pts.length,
        }));
      }
      const lx = L + (i % 2) * 180, ly = H - 14 + Math.floor(i / 2) * 10;
      if (i < 4) {
        svg.appendChild(svgEl("rect", { x: lx, y: ly - 6, width: 8, height: 3, fill: color }));
        const t = svgEl("text", { x: lx + 11, y: ly - 2 });
        const last = pts.length ? pts[pts.length - 1][1] : 0;
        t.textContent = short(n, 30) + "  " + fmt(last) + (i === 3 && names.length > 4 ? "  (+" + (names.length - 4) + " more)" : "");
        svg.appendChild(t);
      }
    });
  }
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function fmt(v) {
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
  }
  function push(name, t, v) {
    const s = state.series[name] || (state.series[name] = []);
    s.push([t, v]);
    while (s.length > HISTORY) s.shift();
  }

  // ---- live stats ---------------------------------------------------
  async function tick() {
    try {
      const s = await getJSON("v1/console/stats");
      $("conn").textContent = "live";
      $("conn").className = "stat";
      const t = Date.parse(s.time);
      const prev = state.samples[state.samples.length - 1];
      state.samples.push(s);
      while (state.samples.length > HISTORY) state.samples.shift();
      $("last").textContent = s.last_notification;
      $("backlog-count").textContent = s.backlog;
      if (prev) {
        const dt = Math.max((t - Date.parse(prev.time)) / 1000, 0.001);
        push("appended/s", t, Math.max(0, (s.last_notification - prev.last_notification) / dt));
        push("published/s", t, Math.max(0, (s.published - prev.published) / dt));
      }
      push("backlog", t, s.backlog);
      for (const p of s.projections) {
        if (p.partitions.length === 0) push(p.name, t, 0);
        for (const q of p.partitions) push(p.name + " " + q.topic + "/" + q.partition, t, Math.max(0, q.lag));
      }
      const pick = (pred) => Object.fromEntries(Object.entries(state.series).filter(([k]) => pred(k)));
      const lagNames = new Set(s.projections.flatMap((p) => p.partitions.length ? p.partitions.map((q) => p.name + " " + q.topic + "/" + q.partition) : [p.name]));
      draw($("chart-appended"), pick((k) => k === "appended/s"));
      draw($("chart-relay"), pick((k) => k === "backlog" || k === "published/s"));
      draw($("chart-lag"), pick((k) => lagNames.has(k)));
      renderProjections(s.projections);
      if (state.log.following && s.last_notification > state.log.last) loadLog(0);
    } catch (e) {
      $("conn").textContent = "disconnected: " + e.message;
      $("conn").className = "stat down";
    }
    setTimeout(tick, 1000);
  }

  // ---- recent activity (the server renders it first; this refreshes it) --
  async function activity() {
    try {
      const a = await getJSON("v1/activity");
      const root = $("streams");
      root.replaceChildren();
      if (a.streams.length === 0) root.appendChild(el("p", "No events yet.", "muted"));
      for (const s of a.streams.slice(0, 10)) {
        const h = el("h3");
        h.appendChild(el("code", s.stream_id));
        h.appendChild(document.createTextNode(" "));
        h.appendChild(el("span", s.aggregate_type, "muted"));
        root.appendChild(h);
        const t = el("table");
        t.appendChild(row(["notification", "version", "type", "time"]));
        for (const e of s.events.slice(0, 10)) t.appendChild(row([e.notification, e.version, e.type, e.time.replace("T", " ").replace("Z", "")]));
        root.appendChild(t);
      }
    } catch (e) { /* the writer is restarting; the next round tries again */ }
    setTimeout(activity, 3000);
  }

  // ---- projections --------------------------------------------------
  function renderProjections(ps) {
    state.projections = ps;
    const body = $("projections").tBodies[0];
    body.replaceChildren();
    if (ps.length === 0) { body.appendChild(row([el("span", "none reported", "muted")])); return; }
    for (const p of ps) {
      const lag = p.partitions.reduce((a, q) => a + Math.max(0, q.lag), 0);
      const status = el("span", p.ready ? "ready" : p.running ? "catching up" : "stopped", p.ready ? "ok" : "bad");
      const dl = el("span", p.dead_lettered + (p.dead_letters.length ? " (" + p.dead_letters.filter((d) => !d.redriven).length + " open)" : ""));
      if (p.dead_letters.length) dl.title = p.dead_letters.map((d) => d.aggregate_id + " v" + d.version + ": " + d.error).join("\n");
      const btn = el("button", "Re-drive");
      btn.onclick = () => redrive(p.name);
      const tr = row([p.name, status, p.applied, lag, p.last_event_age_seconds ? p.last_event_age_seconds.toFixed(1) + " s" : "", short(p.last_error, 80), dl, btn]);
      tr.dataset.projection = p.name;
      tr.dataset.applied = p.applied;
      tr.dataset.lag = lag;
      body.appendChild(tr);
    }
  }
  async function redrive(name) {
    const tok = $("token").value;
    sessionStorage.setItem("esflow-token", tok);
    try {
      const r = await getJSON("v1/console/projections/" + encodeURIComponent(name) + "/redrive",
        { method: "POST", headers: tok ? { Authorization: "Bearer " + tok } : {} });
      $("redrive-result").textContent = name + ": re-driven " + r.applied + ", skipped " + r.skipped + ", still failing " + r.failed;
    } catch (e) {
      $("redrive-result").textContent = name + ": " + e.message;
    }
  }

  // ---- stream browser -----------------------------------------------
  async function search(ev) {
    if (ev) ev.preventDefault();
    const q = $("q").value.trim();
    const body = $("stream-results").tBodies[0];
    body.replaceChildren();
    $("stream-results").classList.remove("hidden");
    try {
      const r = await getJSON("v1/console/streams?q=" + encodeURIComponent(q));
      state.streams = r.streams;
      if (r.streams.length === 0) body.appendChild(row([el("span", "no stream matches " + JSON.stringify(q), "muted")]));
      for (const s of r.streams) {
        const tr = row([el("code", s.stream_id), s.aggregate_type, s.events, s.last_type, s.encrypted ? el("span", "encrypted", "badge") : "plain"], "pick");
        tr.dataset.stream = s.stream_id;
        tr.onclick = () => openStream(s.stream_id);
        body.appendChild(tr);
      }
      if (r.streams.length === 1) openStream(r.streams[0].stream_id);
    } catch (e) {
      body.appendChild(row([el("span", e.message, "bad")]));
    }
  }
  async function openStream(id) {
    $("stream").classList.remove("hidden");
    $("stream-id").textContent = id;
    $("verify-result").textContent = "";
    const body = $("stream-events").tBodies[0];
    body.replaceChildren();
    try {
      const head = await getJSON("v1/streams/" + id + "/head");
      $("stream-type").textContent = head.aggregate_type;
      $("head-hash").textContent = head.hash;
      $("stream-count").textContent = head.version;
      const events = [];
      for (let from = 0; ; ) {
        const page = await getJSON("v1/streams/" + id + "/events?limit=1000&from=" + from);
        events.push(...page.events);
        if (page.events.length < 1000) break;
        from = page.next_from;
      }
      state.stream = { id, head, events };
      for (const e of events) {
        const payload = e.encrypted ? el("span", "encrypted at rest", "badge") : el("pre", pretty(e.data));
        const tr = row([e.version, e.type, e.time.replace("T", " ").replace("Z", ""), payload, el("code", short(e.hash, 16))]);
        tr.dataset.version = e.version;
        body.appendChild(tr);
      }
    } catch (e) {
      body.appendChild(row([el("span", e.message, "bad")]));
    }
  }
  async function verify() {
    const id = $("stream-id").textContent;
    $("verify-result").textContent = "checking…";
    try {
      const v = await getJSON("v1/console/streams/" + id + "/verify");
      $("verify-result").textContent = v.ok ? "ok: " + v.events + " events chain to " + short(v.head_hash, 16) : "BROKEN: " + v.error;
      $("verify-result").className = v.ok ? "ok" : "bad";
    } catch (e) {
      $("verify-result").textContent = e.message;
      $("verify-result").className = "bad";
    }
  }

  // ---- notification log ---------------------------------------------
  // loadLog(0) shows the latest page and follows new notifications;
  // loadLog(first) shows ids first..first+LOG_PAGE-1.
  async function loadLog(first) {
    const last = state.samples.length ? state.samples[state.samples.length - 1].last_notification : 0;
    state.log.following = first === 0;
    if (first === 0) first = Math.max(1, last - LOG_PAGE + 1);
    const end = first + LOG_PAGE - 1;
    const body = $("log").tBodies[0];
    try {
      const sec = await getJSON("v1/notifications/" + first + "," + end + "?decode=json");
      body.replaceChildren();
      for (const it of sec.items.slice().reverse()) {
        const payload = it.encrypted ? el("span", "encrypted", "badge") : el("pre", it.payload === undefined ? "" : pretty(it.payload));
        const tr = row([it.id, el("code", it.originator_id), it.originator_version, it.topic, payload]);
        tr.dataset.notification = it.id;
        body.appendChild(tr);
      }
      state.log.first = first;
      state.log.last = sec.items.length ? sec.items[sec.items.length - 1].id : first - 1;
      $("log-range").textContent = sec.items.length ? "ids " + first + "–" + state.log.last + " of " + Math.max(last, state.log.last) : "empty";
    } catch (e) {
      $("log-range").textContent = e.message;
    }
  }

  $("token").value = sessionStorage.getItem("esflow-token") || "";
  $("search").addEventListener("submit", search);
  $("verify").onclick = verify;
  $("log-prev").onclick = () => loadLog(Math.max(1, state.log.first - LOG_PAGE));
  $("log-next").onclick = () => loadLog(state.log.first + LOG_PAGE);
  $("log-latest").onclick = () => loadLog(0);
  tick().then(() => loadLog(0));
  setTimeout(activity, 3000);
})();
