// rollguard status page: pure formatting helpers (no DOM, no network). Exposed as window.RGFormat.
"use strict";
(function (root) {
  const DASH = "\u2013";
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function pct(x, digits = 2) {
    return isNum(x) ? (x * 100).toFixed(digits) + "%" : DASH;
  }
  function ms(x) {
    if (!isNum(x)) return DASH;
    return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + " ms";
  }
  function pp(x) {
    return isNum(x) ? x.toFixed(2) + " pp" : DASH;
  }
  function num(x, sig = 4) {
    if (!isNum(x)) return DASH;
    return Number.isInteger(x) ? x.toLocaleString("en-US") : String(Number(x.toPrecision(sig)));
  }
  function int(x) {
    return isNum(x) ? Math.round(x).toLocaleString("en-US") : DASH;
  }
  function weight(x) {
    return isNum(x) ? (Number.isInteger(x) ? String(x) : x.toFixed(2)) + "%" : DASH;
  }
  function interval(ci, unit = " pp") {
    return Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1])
      ? "[" + ci[0].toFixed(2) + ", " + ci[1].toFixed(2) + "]" + unit
      : "";
  }
  // UTC, like the decision log, so operators can match lines across tools.
  function time(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso ?? DASH) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
  }
  function clock(d) {
    return d.toISOString().slice(11, 19) + "Z";
  }
  function ago(iso, now) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const s = Math.max(0, Math.round((now - d) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  // The time from one timestamp to another, in the largest unit that keeps it short: "1 min 20 s".
  function duration(fromIso, toIso) {
    const s = Math.round((new Date(toIso) - new Date(fromIso)) / 1000);
    if (!Number.isFinite(s) || s < 0) return DASH;
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    const m = Math.floor(s / 60);
    return Math.floor(m / 60) + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  }

  // Each gate's value in its own unit; decision_delta is paired divergence (pp) in shadow and the
  // difference between the versions' positive-decision rates (fractions) in canary.
  const UNIT = { error_rate: pct, latency_p95: ms, latency_p99: ms, policy_violations: int };
  function gateValue(g, phase) {
    if (g.gate === "decision_delta") {
      if (!isNum(g.value)) return DASH;
      if (phase === "shadow" || !isNum(g.baseline)) return pp(g.value);
      const d = (g.value - g.baseline) * 100;
      return (d > 0 ? "+" : "") + pp(d);
    }
    return (UNIT[g.gate] || num)(g.value);
  }
  function gateThreshold(g) {
    if (!isNum(g.threshold)) return DASH;
    if (g.gate === "decision_delta") return "\u00b1" + num(g.threshold) + " pp";
    return "\u2264 " + (UNIT[g.gate] || num)(g.threshold);
  }
  function actionKind(action) {
    const a = String(action || "").toUpperCase();
    if (a === "PROCEED" || a === "PROMOTE") return "good";
    if (a === "ROLLBACK") return "bad";
    if (a === "HOLD" || a === "WAIT") return "hold";
    return "operator";
  }

  root.RGFormat = { DASH, isNum, pct, ms, pp, num, int, weight, interval, time, clock, ago, duration, gateValue, gateThreshold, actionKind };
})(window);
