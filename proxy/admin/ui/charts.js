// rollguard status page: the charts (uPlot, shipped beside this file). Exposed as window.RGCharts.
// Three charts share one time axis, the current rollout's span: latency p50/p95/p99 of both versions,
// both versions' error rates, and the candidate weight with a marker at every decision that moved it.
// Latency and error rate come from GET /history's windows (each point: every sample since the step began,
// as the gates judged it; in the shadow phase the candidate's points are its mirrored answers); the
// weight line and its markers come from the decision log, so they survive a restart of the proxy.
"use strict";
(function (root) {
  const F = root.RGFormat;
  const BASELINE = "#94a3b8";
  const CANDIDATE = "#38bdf8";
  const LIMIT = "#ef4444";
  const AXIS = { stroke: "#8b9bb7", grid: { stroke: "rgba(34, 48, 77, .9)", width: 1 }, ticks: { stroke: "rgba(34, 48, 77, .9)", width: 1 } };
  const HEIGHT = 190;
  // Marker series of the weight chart, by the decision's kind (the timeline's colours).
  const MARKERS = [
    { kind: "good", label: "proceed / promote", color: "#22c55e" },
    { kind: "bad", label: "rollback", color: "#ef4444" },
    { kind: "hold", label: "wait", color: "#f59e0b" },
    { kind: "operator", label: "operator", color: "#60a5fa" },
  ];
  const charts = {};
  // What the weight chart's draw hook writes beside each point: the decision's action, in its colour.
  let marks = { labels: [], colors: [] };

  const seconds = (iso) => {
    const t = Date.parse(iso);
    return Number.isNaN(t) ? null : t / 1000;
  };
  const orNull = (x) => (F.isNum(x) ? x : null);

  // Tick labels in UTC, as short as the tick spacing allows: 14:05:30Z, 14:05Z, 12-08.
  function timeAxis() {
    const label = (v, incr) => {
      const iso = new Date(v * 1000).toISOString();
      return incr >= 86400 ? iso.slice(5, 10) : incr >= 60 ? iso.slice(11, 16) + "Z" : iso.slice(11, 19) + "Z";
    };
    // Whole seconds at the finest: windows are seconds apart at the least.
    const incrs = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    return { ...AXIS, space: 80, incrs, values: (u, splits, axis, space, incr) => splits.map((v) => label(v, incr)) };
  }

  // The time axis reads UTC, like the decision log and the timeline.
  const utc = (ts) => root.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

  function make(name, opts, data) {
    const box = document.getElementById(name);
    const width = Math.max(240, box.clientWidth);
    const u = new root.uPlot({ width, height: HEIGHT, tzDate: utc, legend: { live: true }, cursor: { drag: { x: false, y: false } }, ...opts }, data, box);
    new ResizeObserver(() => {
      const w = Math.max(240, box.clientWidth);
      if (w !== u.width) u.setSize({ width: w, height: HEIGHT });
    }).observe(box);
    return u;
  }

  // One chart per name, built on first data and fed in place afterwards. The span every chart shows is
  // read at draw time, so a chart whose data did not change still follows the shared time axis.
  let span = [0, 1];
  const range = () => span;

  function draw(name, data, build) {
    const box = document.getElementById(name);
    const card = box.closest(".card");
    const points = data[0].length;
    box.dataset.points = String(points);
    card.querySelector(".empty").hidden = points > 0;
    box.hidden = points === 0;
    if (points === 0) return;
    if (!charts[name]) {
      charts[name] = make(name, build(), data);
    } else {
      charts[name].setData(data);
    }
    box.dataset.series = String(charts[name].series.length - 1);
  }

  function line(label, color, width, dash, value) {
    return { label, stroke: color, width, dash, spanGaps: false, points: { show: false }, value };
  }
  const msValue = (u, v) => (v == null ? F.DASH : F.ms(v));
  const pctValue = (u, v) => (v == null ? F.DASH : v.toFixed(2) + "%");

  function latencyChart(windows, limit) {
    const x = windows.map((w) => seconds(w.ts));
    const q = (role, p) => windows.map((w) => orNull(((w[role] || {}).latency_ms || {})[p]));
    const data = [x];
    const series = [{ value: (u, v) => (v == null ? F.DASH : F.time(new Date(v * 1000).toISOString())) }];
    for (const [role, color] of [["baseline", BASELINE], ["candidate", CANDIDATE]]) {
      for (const [p, width, dash] of [["p50", 1, undefined], ["p95", 2, undefined], ["p99", 1, [4, 3]]]) {
        data.push(q(role, p));
        series.push(line(role + " " + p, color, width, dash, msValue));
      }
    }
    data.push(x.map(() => orNull(limit)));
    series.push(line("p95 gate", LIMIT, 1, [2, 4], msValue));
    draw("chart-latency", data, () => ({
      series,
      scales: { x: { time: true, range } },
      axes: [timeAxis(), { ...AXIS, size: 64, values: (u, splits) => splits.map((v) => F.ms(v)) }],
    }));
  }

  function errorChart(windows, limit) {
    const x = windows.map((w) => seconds(w.ts));
    const rate = (role) => windows.map((w) => (F.isNum((w[role] || {}).error_rate) ? w[role].error_rate * 100 : null));
    const data = [x, rate("baseline"), rate("candidate")];
    const series = [
      { value: (u, v) => (v == null ? F.DASH : F.time(new Date(v * 1000).toISOString())) },
      line("baseline", BASELINE, 2, undefined, pctValue),
      line("candidate", CANDIDATE, 2, undefined, pctValue),
    ];
    data.push(x.map(() => (F.isNum(limit) ? limit * 100 : null)));
    series.push(line("error gate", LIMIT, 1, [2, 4], pctValue));
    draw("chart-errors", data, () => ({
      series,
      scales: { x: { time: true, range }, y: { range: (u, min, max) => [0, Math.max(max, 0.5)] } },
      axes: [timeAxis(), { ...AXIS, size: 56, values: (u, splits) => splits.map((v) => v.toFixed(v < 1 ? 2 : 1) + "%") }],
    }));
  }

  // The labels of the weight chart's markers, drawn on its canvas beside each point; one that would
  // overlap the previous label is left to the legend and the timeline.
  function labelMarkers(u) {
    const ctx = u.ctx;
    const ratio = root.devicePixelRatio || 1;
    ctx.save();
    ctx.font = 11 * ratio + "px system-ui, sans-serif";
    ctx.textBaseline = "bottom";
    let lastRight = -Infinity;
    const xs = u.data[0];
    for (let i = 0; i < xs.length; i++) {
      const label = marks.labels[i];
      if (!label) continue;
      const value = u.data[1][i];
      if (value == null) continue;
      const at = u.valToPos(xs[i], "x", true);
      const width = ctx.measureText(label).width;
      // Right of its point, or left of it where the plot ends.
      const left = at + 4 * ratio + width > u.bbox.left + u.bbox.width ? at - 4 * ratio - width : at + 4 * ratio;
      if (left < lastRight) continue;
      const top = Math.max(u.bbox.top + 12 * ratio, u.valToPos(value, "y", true) - 5 * ratio);
      ctx.fillStyle = marks.colors[i];
      ctx.fillText(label, left, top);
      lastRight = left + width + 8 * ratio;
    }
    ctx.restore();
  }

  function weightChart(rows, now, weightNow) {
    const x = rows.map((r) => seconds(r.ts));
    const weight = rows.map((r) => orNull(r.weight));
    if (x.length && F.isNum(weightNow)) {
      x.push(now); // the line runs on to the present at the weight the state holds now
      weight.push(weightNow);
    }
    const labels = [];
    const colors = [];
    const data = [x, weight];
    const markerData = MARKERS.map(() => []);
    x.forEach((_, i) => {
      const r = rows[i];
      const kind = r && r.action !== "HOLD" ? F.actionKind(r.action) : null;
      MARKERS.forEach((m, k) => markerData[k].push(kind === m.kind ? weight[i] : null));
      const marker = MARKERS.find((m) => m.kind === kind);
      labels.push(marker ? String(r.action) : null);
      colors.push(marker ? marker.color : null);
    });
    data.push(...markerData);
    marks = { labels, colors };
    const wValue = (u, v) => (v == null ? F.DASH : F.weight(v));
    draw("chart-weight", data, () => ({
      series: [
        { value: (u, v) => (v == null ? F.DASH : F.time(new Date(v * 1000).toISOString())) },
        { label: "candidate weight", stroke: CANDIDATE, width: 2, fill: "rgba(56, 189, 248, .12)", paths: root.uPlot.paths.stepped({ align: 1 }), points: { show: false }, value: wValue },
        ...MARKERS.map((m) => ({ label: m.label, stroke: m.color, fill: m.color, width: 0, paths: () => null, points: { show: true, size: 9, stroke: m.color, fill: m.color }, value: wValue })),
      ],
      scales: { x: { time: true, range }, y: { range: [0, 100] } },
      axes: [timeAxis(), { ...AXIS, size: 48, values: (u, splits) => splits.map((v) => v + "%") }],
      hooks: { draw: [labelMarkers] },
    }));
  }

  // history: GET /history; status: GET /status. Only the current rollout is drawn.
  function update(history, status) {
    const rollout = status.rollout || {};
    const ctl = status.controller || {};
    const thresholds = ctl.thresholds || {};
    const windows = (history.windows || []).filter((w) => w.rollout_id === rollout.rollout_id && seconds(w.ts) != null);
    const started = seconds((history.rollout || {}).started_at);
    const ended = seconds((history.rollout || {}).ended_at);
    const rows = (history.timeline || []).filter((r) => seconds(r.ts) != null && (started == null || seconds(r.ts) >= started));
    const now = Date.now() / 1000;
    const first = [started, rows.length ? seconds(rows[0].ts) : null, windows.length ? seconds(windows[0].ts) : null].filter((t) => t != null);
    const open = first.length ? Math.min(...first) : now - 60;
    const close = ended != null && ["promoted", "rolled_back"].includes(rollout.phase) ? ended : now;
    span = [open, Math.max(close, open + 1)];
    latencyChart(windows, thresholds.latency_p95_ms);
    errorChart(windows, thresholds.error_rate);
    weightChart(rows, close, rollout.weight);
  }

  root.RGCharts = { update };
})(window);
