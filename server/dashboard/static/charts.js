// Small SVG charts of our own: a line chart (loss curves) and a stacked bar chart (jobs per hour).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A tick label with enough decimals to tell ticks `spacing` apart (never "-0").
function tickLabel(v, spacing) {
  if (Math.abs(v) < spacing * 1e-6) return "0";
  if (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-4) return v.toExponential(2);
  const decimals = Math.max(0, Math.min(8, 1 - Math.floor(Math.log10(spacing))));
  return v.toFixed(decimals);
}

// [lo, hi] around values from min to max: a single value (one logged step) gets a range of its own,
// and a range of values that are all >= 0 (losses, accuracies) stays >= 0.
function span(min, max, { integer = false } = {}) {
  let lo = min, hi = max;
  if (hi === lo) {
    const d = integer ? 1 : Math.abs(lo) * 0.1 || 0.5;
    lo -= d; hi += d;
  } else if (!integer) {
    const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  }
  if (min >= 0 && lo < 0) lo = 0;
  return [lo, hi];
}

// series: [{name, points: [[x, y], ...]}]; draws every series on shared axes.
function lineChart(series, { width = 640, height = 260, xLabel = "step", id } = {}) {
  const pad = { l: 56, r: 14, t: 12, b: 34 };
  series = series.map((s) => ({ ...s, points: s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])) }));
  const all = series.flatMap((s) => s.points);
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (id) svg.id = id;
  svg.setAttribute("aria-label", series.map((s) => `${s.name}: ${s.points.length} points`).join(", "));
  if (!all.length) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no metrics yet"));
    return svg;
  }
  const [x0, x1] = span(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), { integer: true });
  const [y0, y1] = span(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])));
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    svg.appendChild(svgEl("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: sy(y), y2: sy(y) }));
    svg.appendChild(svgEl("text", { class: "y-label", x: pad.l - 6, y: sy(y) + 4, "text-anchor": "end" }, tickLabel(y, (y1 - y0) / 4)));
  }
  // Whole-number step ticks, each drawn where that step really is.
  const ticks = new Set();
  for (let i = 0; i <= 4; i++) ticks.add(Math.round(x0 + ((x1 - x0) * i) / 4));
  for (const x of ticks) {
    if (x < x0 || x > x1) continue;
    svg.appendChild(svgEl("text", { class: "x-label", x: sx(x), y: height - pad.b + 16, "text-anchor": "middle" }, String(x)));
  }
  svg.appendChild(svgEl("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: height - pad.b }));
  svg.appendChild(svgEl("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b }));
  svg.appendChild(svgEl("text", { x: width - pad.r, y: height - 4, "text-anchor": "end" }, xLabel));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const pts = s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(svgEl("polyline", { class: `line s${i}`, points: pts, "data-series": s.name, "data-count": s.points.length }));
    // Markers only while they stay readable; the polyline carries every point anyway (a lone point,
    // which a polyline cannot draw, gets a larger marker).
    if (s.points.length <= 80) {
      const r = s.points.length === 1 ? 5 : 2.5;
      for (const p of s.points) svg.appendChild(svgEl("circle", { class: `s${i}`, cx: sx(p[0]), cy: sy(p[1]), r, "data-series": s.name }));
    }
  });
  return svg;
}

// hours: [{hour, succeeded, failed, cancelled}], oldest first.
function hourBars(hours, { width = 640, height = 180 } = {}) {
  const pad = { l: 34, r: 8, t: 10, b: 26 };
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", id: "finished-chart" });
  const totals = hours.map((h) => h.succeeded + h.failed + h.cancelled);
  const top = Math.max(1, ...totals);
  svg.setAttribute("aria-label", `jobs finished per hour, ${totals.reduce((a, b) => a + b, 0)} in ${hours.length} hours`);
  const bw = (width - pad.l - pad.r) / Math.max(1, hours.length);
  const sy = (v) => ((height - pad.t - pad.b) * v) / top;
  svg.appendChild(svgEl("text", { x: pad.l - 6, y: pad.t + 8, "text-anchor": "end" }, String(top)));
  svg.appendChild(svgEl("text", { x: pad.l - 6, y: height - pad.b, "text-anchor": "end" }, "0"));
  hours.forEach((h, i) => {
    let y = height - pad.b;
    for (const [key, cls] of [["succeeded", "bar-ok"], ["failed", "bar-failed"], ["cancelled", "bar-cancelled"]]) {
      if (!h[key]) continue;
      const hgt = sy(h[key]);
      y -= hgt;
      const r = svgEl("rect", { class: cls, x: pad.l + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt });
      r.appendChild(svgEl("title", {}, `${new Date(h.hour * 1000).toLocaleString()}: ${h[key]} ${key}`));
      svg.appendChild(r);
    }
    if (i % 4 === 0) {
      const label = new Date(h.hour * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      svg.appendChild(svgEl("text", { x: pad.l + i * bw + bw / 2, y: height - 8, "text-anchor": "middle" }, label));
    }
  });
  svg.appendChild(svgEl("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b }));
  return svg;
}

window.charts = { lineChart, hourBars };
