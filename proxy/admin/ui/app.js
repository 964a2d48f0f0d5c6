// rollguard status page: polls the admin API with the viewer token and updates the cards in place.
// Every value from the API is written with textContent (decision reasons are operator text): this
// file never builds HTML from strings. The token lives in sessionStorage and only ever travels in
// the Authorization header.
"use strict";
(function () {
  const F = window.RGFormat;
  const KEY = "rollguard.admin-token";
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(KEY);
  let pollMs = 2000;
  let timer = null;
  let lastOk = null;
  let timelineKey = "";
  let running = false;

  class HttpError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // Text that may break after each underscore (set_shadow_sample), built from text nodes and <wbr>.
  function breakable(tag, cls, text) {
    const e = el(tag, cls);
    String(text).split(/(?<=_)/).forEach((part, i) => {
      if (i > 0) e.append(document.createElement("wbr"));
      e.append(document.createTextNode(part));
    });
    return e;
  }
  function setText(id, text) {
    const node = $(id);
    const value = text === undefined || text === null || text === "" ? F.DASH : String(text);
    if (node.textContent !== value) node.textContent = value;
  }
  function setConn(state, text) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = text;
    document.body.classList.toggle("stale", state === "stale");
  }
  function show(which) {
    for (const id of ["dash", "auth", "unconfigured"]) $(id).hidden = id !== which;
    $("forget").hidden = !token || which === "unconfigured";
  }

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, { headers, cache: "no-store", credentials: "omit", redirect: "error" });
    if (!r.ok) {
      let detail = r.status + " " + r.statusText;
      try {
        const problem = await r.json();
        if (problem && typeof problem.detail === "string") detail = problem.detail;
      } catch (_) {
        // not problem+json: the status line says enough
      }
      throw new HttpError(r.status, detail, r.headers.get("Retry-After"));
    }
    return r.json();
  }

  // -- rendering ------------------------------------------------------------------------------------

  // What the last decision line says: how an ended rollout ended (when, after how many windows, from the
  // decision log), or the controller's last decision with this step's window counts.
  function lastDecision(s, span) {
    const r = s.rollout || {};
    if ((r.phase === "promoted" || r.phase === "rolled_back") && span && span.ended_by) {
      const verb = span.ended_by === "PROMOTE" ? "promoted" : "rolled back";
      const by = span.actor && span.actor !== "controller" ? " by " + span.actor : "";
      const n = F.isNum(span.windows) ? span.windows : 0;
      const took = span.started_at ? ", " + F.duration(span.started_at, span.ended_at) + " after the start" : "";
      return verb + by + " at " + F.time(span.ended_at) + " after " + n + (n === 1 ? " window" : " windows") + took;
    }
    const last = s.controller && s.controller.last_decision;
    const windows = F.isNum(r.passes) && (r.phase === "canary" || r.phase === "shadow" || r.phase === "paused")
      ? " \u00b7 this step: " + r.passes + " passed, " + r.failed_windows + " failed windows"
      : "";
    return (last ? last.action : "none yet") + windows;
  }

  function renderRollout(s, span) {
    const r = s.rollout || {};
    const phase = String(r.phase || "");
    const badge = $("phase");
    badge.dataset.phase = phase;
    setText("phase", phase.replace("_", " "));
    const step = Number.isInteger(r.step) && r.step >= 0 ? "step " + (r.step + 1) : phase === "shadow" ? "shadow, before step 1" : "";
    setText("step", step ? step + " \u00b7 candidate " + F.weight(r.weight) : "");
    const w = r.weights || {};
    setText("w-baseline", F.weight(w.baseline));
    setText("w-candidate", F.weight(w.candidate));
    $("bar-baseline").style.width = (F.isNum(w.baseline) ? w.baseline : 100) + "%";
    $("bar-candidate").style.width = (F.isNum(w.candidate) ? w.candidate : 0) + "%";
    setText("rollout-id", r.rollout_id);
    setText("revision", r.revision);
    setText("changed", r.updated_at ? F.time(r.updated_at) + " (" + F.ago(r.updated_at, new Date()) + ")" : "");
    setText("last-decision", lastDecision(s, span));
    $("reason").textContent = r.reason || "";
    setText("v-baseline", s.versions && s.versions.baseline);
    setText("v-candidate", s.versions && s.versions.candidate);
    setText("rg-version", s.rollguard ? "v" + s.rollguard : "");
  }

  function renderCandidate(s) {
    const c = s.candidate || {};
    const m = c.manifest || {};
    const badge = $("manifest");
    badge.dataset.ok = String(Boolean(c.allowed));
    setText("manifest", c.allowed ? (m.digest ? "verified" : "allowed") : "refused");
    setText("manifest-reason", m.reason);
    const digest = $("manifest-digest");
    digest.title = m.digest || "";
    setText("manifest-digest", m.digest ? m.digest.slice(0, 23) + (m.digest.length > 23 ? "\u2026" : "") : "none");
    setText("manifest-signer", m.signer || "none");
    const t = (s.controller && s.controller.tripwire) || {};
    let trip = t.armed ? "armed" : "disarmed";
    if (F.isNum(t.consecutive)) trip += " \u00b7 " + t.consecutive + " in a row";
    if (F.isNum(t.llr) && F.isNum(t.upper)) trip += " \u00b7 SPRT " + t.llr.toFixed(2) + " / " + t.upper.toFixed(2);
    if (t.tripped) trip += " \u00b7 tripped: " + t.tripped;
    setText("tripwire", trip);
    const up = s.upstreams || {};
    const circuit = (role) => (up[role] && up[role].circuit ? role + " " + up[role].circuit.state : null);
    setText("circuits", ["baseline", "candidate"].map(circuit).filter(Boolean).join(" \u00b7 "));
  }

  const SLI_ROWS = [
    ["Requests", (v) => F.int(v.requests)],
    ["Failures", (v) => F.int(v.failures)],
    ["Error rate", (v) => F.pct(v.error_rate)],
    ["Latency p50", (v) => F.ms(v.latency_ms && v.latency_ms.p50)],
    ["Latency p95", (v) => F.ms(v.latency_ms && v.latency_ms.p95)],
    ["Latency p99", (v) => F.ms(v.latency_ms && v.latency_ms.p99)],
    ["Decision rate", (v) => F.pct(v.decision_rate)],
    ["Policy violations", (v) => F.int(v.policy_violations)],
    ["Cost per 1k", (v) => F.num(v.cost_per_1k)],
  ];

  function renderSlis(s) {
    const win = (s.controller && s.controller.window) || {};
    const b = win.baseline || {};
    // In the shadow phase the candidate takes no live traffic: its column is what it answered to mirrors.
    const mirrored = Boolean(win.mirror) && s.rollout && s.rollout.phase === "shadow";
    const c = (mirrored ? win.mirror : win.candidate) || {};
    setText("slis-candidate", mirrored ? "Candidate (mirrored)" : "Candidate");
    $("slis-candidate").title = mirrored ? "the candidate's answers to requests mirrored to it; clients never saw them" : "";
    const rows = SLI_ROWS.map(([label, fmt]) => {
      const tr = el("tr");
      tr.append(el("th", null, label), el("td", "num", fmt(b)), el("td", "num", fmt(c)));
      tr.firstChild.scope = "row";
      return tr;
    });
    $("slis-body").replaceChildren(...rows);
    const since = F.isNum(win.seconds) ? "since the step began, " + F.num(win.seconds, 3) + " s" : "no controller";
    setText("window-span", mirrored ? since + " \u00b7 candidate: mirrored requests" : since);
  }

  function renderGates(s) {
    const gates = (s.controller && s.controller.gates) || [];
    const phase = s.rollout && s.rollout.phase;
    const rows = gates.map((g) => {
      const tr = el("tr");
      tr.dataset.gate = String(g.gate);
      const name = el("td");
      name.append(el("span", "gate-name", g.gate), el("span", "gate-detail", g.detail || ""));
      const verdict = el("td");
      const pill = el("span", "verdict", g.verdict);
      pill.dataset.verdict = String(g.verdict);
      verdict.append(pill);
      tr.append(name, el("td", "num", F.gateValue(g, phase)), el("td", "num", F.gateThreshold(g)), verdict);
      return tr;
    });
    $("gates-body").replaceChildren(...rows);
    $("gates-empty").hidden = rows.length > 0;
    $("gates").hidden = rows.length === 0;
  }

  function metric(label, value) {
    const row = el("div", "metric");
    row.append(el("span", null, label), el("b", null, value));
    return row;
  }

  function renderShadow(s, report) {
    const sh = s.shadow || {};
    setText("shadow-sample", F.isNum(sh.sample) ? F.pct(sh.sample, 1) + " of matching requests" : "");
    setText("shadow-inflight", F.isNum(sh.in_flight) ? sh.in_flight + " / " + sh.max_in_flight : "");
    setText("shadow-breaker", sh.breaker && sh.breaker.state);
    const routes = report && report.routes ? Object.values(report.routes) : [];
    const cards = routes.map((r) => {
      const box = el("div", "shadow-route");
      box.dataset.route = String(r.route);
      const d = r.decision_divergence_pp || {};
      const sd = r.score_delta || {};
      const dr = r.decision_rate || {};
      const shift = r.distribution_shift || {};
      box.append(
        el("h3", null, r.route),
        metric("Decision divergence", F.pp(d.value) + " " + F.interval(d.ci95, "")),
        metric("Decision rate b / c", F.pct(dr.baseline) + " / " + F.pct(dr.candidate)),
        metric("Score delta mean / p95", F.num(sd.mean) + " / " + F.num(sd.p95)),
        metric("Score shift PSI", F.num(shift.psi)),
        metric("Samples compared / pairs", F.int(r.compared) + " / " + F.int(r.pairs_total)),
      );
      return box;
    });
    $("shadow-routes").replaceChildren(...cards);
    $("shadow-empty").hidden = cards.length > 0;
  }

  // The steps of the plan, the current one highlighted: the shadow phase (when the config has one), each
  // canary weight, and promotion at the last.
  function renderSteps(s) {
    const ctl = s.controller;
    const r = s.rollout || {};
    const list = $("steps");
    $("steps-empty").hidden = Boolean(ctl);
    list.hidden = !ctl;
    if (!ctl) return;
    const steps = Array.isArray(ctl.steps) ? ctl.steps : [];
    const stages = [];
    if (ctl.shadow_samples > 0 || r.step === -1) stages.push({ label: "shadow", detail: "mirrors only", step: -1 });
    steps.forEach((w, i) => stages.push({ label: F.weight(w), detail: i === steps.length - 1 ? "promote" : "canary", step: i }));
    const phase = r.paused_from && r.phase === "paused" ? r.paused_from : r.phase;
    const at = Number.isInteger(r.step) ? r.step : null;
    const items = stages.map((st) => {
      const li = el("li", "stage");
      let state = "pending";
      if (phase === "promoted") state = st.step === steps.length - 1 ? "current" : "done";
      else if (phase === "idle" || at === null) state = "pending";
      else if (st.step < at) state = "done";
      else if (st.step === at) state = phase === "rolled_back" ? "failed" : "current";
      li.dataset.state = state;
      if (state === "current" || state === "failed") li.setAttribute("aria-current", "step");
      const now = r.phase === "paused" ? "paused here" : phase === "promoted" ? "promoted" : "now";
      const word = { done: "passed", current: now, failed: "rolled back here", pending: st.detail }[state];
      li.append(el("span", "stage-label", st.label), el("span", "stage-state", word));
      return li;
    });
    list.replaceChildren(...items);
  }

  function renderTimeline(rows) {
    const newest = rows[rows.length - 1];
    const key = rows.length + ":" + (newest ? newest.ts + ":" + newest.count + ":" + newest.revision : "");
    if (key === timelineKey) return; // unchanged: keep the operator's scroll position
    timelineKey = key;
    const items = rows
      .slice()
      .reverse()
      .map((d) => {
        const li = el("li");
        // A run of like HOLDs is one row: "HOLD \u00d714", the latest window's reason, the span it covers.
        const action = breakable("span", "action", d.count > 1 ? d.action + " \u00d7" + d.count : d.action);
        action.dataset.kind = F.actionKind(d.action);
        action.title = String(d.action);
        if (d.count > 1) li.dataset.count = String(d.count);
        const what = el("div", "t-reason", d.reason || "(no reason given)");
        const run = d.count > 1 ? d.count + " windows since " + F.time(d.first_ts) : null;
        const state = [run, d.phase, F.isNum(d.weight) ? "candidate " + F.weight(d.weight) : null, F.isNum(d.revision) ? "rev " + d.revision : null];
        what.append(el("span", "t-state", state.filter(Boolean).join(" \u00b7 ")));
        const actionCell = el("div");
        actionCell.append(action);
        li.append(el("time", "t-ts", F.time(d.ts)), actionCell, el("div", "t-actor", d.actor), what);
        li.firstChild.dateTime = String(d.ts || "");
        return li;
      });
    $("timeline").replaceChildren(...items);
    $("timeline-empty").hidden = items.length > 0;
  }

  // -- polling --------------------------------------------------------------------------------------

  async function shadowReport() {
    try {
      return await getJSON("/reports/shadow_eval.json");
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) return null; // no shadow report on this proxy
      throw e;
    }
  }

  async function poll() {
    timer = null;
    if (!running) return;
    try {
      const [status, history, report] = await Promise.all([getJSON("/status"), getJSON("/history"), shadowReport()]);
      if (!running) return;
      renderRollout(status, history.rollout);
      renderCandidate(status);
      renderSteps(status);
      renderSlis(status);
      renderGates(status);
      renderShadow(status, report);
      renderTimeline(Array.isArray(history.timeline) ? history.timeline : []);
      show("dash"); // before the charts, so they are sized to their cards
      try {
        window.RGCharts.update(history, status);
      } catch (e) {
        console.error("charts: " + e); // the figures above stay live without them
      }
      lastOk = new Date();
      setConn("live", "live \u00b7 updated " + F.clock(lastOk));
    } catch (e) {
      if (!running) return;
      if (e instanceof HttpError && (e.status === 401 || e.status === 403)) return refused(e);
      const since = lastOk ? "last update " + F.clock(lastOk) : "no data yet";
      if (e instanceof HttpError && e.status === 429) {
        setConn("stale", "throttled by the admin API (retry in " + (e.retryAfter || "?") + " s) \u00b7 " + since);
      } else {
        const why = e instanceof HttpError ? "admin API answered " + e.status : "admin API unreachable";
        setConn("stale", "stale: " + why + " \u00b7 " + since);
      }
    }
    if (running) timer = setTimeout(poll, pollMs);
  }

  function start() {
    running = true;
    if (timer) clearTimeout(timer);
    setConn("connecting", "connecting\u2026");
    poll();
  }

  function stop() {
    running = false;
    if (timer) clearTimeout(timer);
    timer = null;
  }

  function refused(e) {
    stop();
    token = null;
    sessionStorage.removeItem(KEY);
    const msg = e.status === 401 ? "The admin API refused this token (401): " + e.message : "This token may not read the status (403): " + e.message;
    $("auth-error").textContent = msg;
    $("auth-error").hidden = false;
    setConn("auth", "auth error: token refused");
    show("auth");
    $("token").focus();
  }

  function askForToken() {
    stop();
    $("auth-error").hidden = true;
    setConn("auth", "token needed");
    show("auth");
    $("token").focus();
  }

  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(KEY, value);
    $("token").value = "";
    $("auth-error").hidden = true;
    start();
  });

  $("forget").addEventListener("click", () => {
    token = null;
    sessionStorage.removeItem(KEY);
    askForToken();
  });

  async function boot() {
    let cfg;
    try {
      cfg = await getJSON("/ui/bootstrap.json");
    } catch (e) {
      setConn("stale", "admin API unreachable; reload to retry");
      return;
    }
    if (F.isNum(cfg.poll_interval_ms) && cfg.poll_interval_ms >= 250) pollMs = cfg.poll_interval_ms;
    if (cfg.auth === "unconfigured") {
      setConn("auth", "no admin tokens configured");
      show("unconfigured");
      return;
    }
    if (token) start();
    else askForToken();
  }

  boot();
})();
