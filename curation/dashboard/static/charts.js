// Hand-drawn SVG charts: horizontal bars, histograms with a marker line, line charts with
// linear or log axes. No library, so the dashboard works without network access.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6ea8", "#d1603d", "#3f9e63", "#8e5ba8", "#c9a227", "#4aa3a3", "#a83b6e", "#6b6b6b"];

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  const a = Math.abs(n);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return n.toExponential(2);
  return n.toLocaleString("en-US", {maximumFractionDigits: a < 1 ? 4 : 2});
}

// items: [{label, value, ghost?}] → horizontal bars (ghost: a lighter bar behind, e.g. rows in).
function barChart(items, opts = {}) {
  const width = opts.width || 640, row = 22, labelW = opts.labelWidth || 200;
  const height = items.length * row + 8;
  const svg = svgEl("svg", {width, height, class: "chart", role: "img"});
  const max = Math.max(1, ...items.map(d => Math.max(d.value, d.ghost || 0)));
  const scale = v => (width - labelW - 90) * v / max;
  items.forEach((d, i) => {
    const y = i * row + 4;
    svg.appendChild(svgEl("text", {x: labelW - 6, y: y + 14, "text-anchor": "end", class: "label"}, d.label));
    if (d.ghost) svg.appendChild(svgEl("rect", {x: labelW, y, width: scale(d.ghost), height: row - 6, class: "ghost"}));
    svg.appendChild(svgEl("rect", {x: labelW, y, width: Math.max(1, scale(d.value)), height: row - 6,
                                   fill: d.color || PALETTE[0]}));
    svg.appendChild(svgEl("text", {x: labelW + scale(Math.max(d.value, d.ghost || 0)) + 4, y: y + 14,
                                   class: "value"}, d.text || fmt(d.value)));
  });
  return svg;
}

// bins: [{label, count}] → vertical bars; marker: {index (fractional bin position), label}.
function columnChart(bins, opts = {}) {
  const width = opts.width || 640, height = opts.height || 220, pad = {l: 50, r: 10, t: 10, b: 46};
  const svg = svgEl("svg", {width, height, class: "chart", role: "img"});
  const max = Math.max(1, ...bins.map(b => b.count));
  const bw = (width - pad.l - pad.r) / Math.max(1, bins.length);
  const y = v => height - pad.b - (height - pad.t - pad.b) * v / max;
  axisY(svg, 0, max, y, pad.l, width - pad.r, false);
  bins.forEach((b, i) => {
    svg.appendChild(svgEl("rect", {x: pad.l + i * bw + 1, y: y(b.count), width: Math.max(1, bw - 2),
                                   height: y(0) - y(b.count), fill: b.color || PALETTE[0]},));
    const every = Math.ceil(bins.length / 12);
    if (b.label && i % every === 0) {
      svg.appendChild(svgEl("text", {x: pad.l + (i + 0.5) * bw, y: height - pad.b + 14, "text-anchor": "middle",
                                     class: "tick"}, b.label));
    }
  });
  if (opts.marker) {
    const x = pad.l + opts.marker.index * bw;
    svg.appendChild(svgEl("line", {x1: x, x2: x, y1: pad.t, y2: height - pad.b, class: "marker"}));
    svg.appendChild(svgEl("text", {x: x + 4, y: pad.t + 12, class: "marker-label"}, opts.marker.label));
  }
  if (opts.xLabel) svg.appendChild(svgEl("text", {x: width / 2, y: height - 6, "text-anchor": "middle",
                                                   class: "axis-label"}, opts.xLabel));
  return svg;
}

function niceTicks(lo, hi, log) {
  if (log) {
    // Decades; with fewer than three decades in view, also 2× and 5× so the axis has labels.
    const few = Math.log10(hi / lo) < 2, ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of few ? [1, 2, 5] : [1]) {
        const v = m * Math.pow(10, e);
        if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
      }
    }
    return ticks.length ? ticks : [lo, hi];
  }
  const span = hi - lo || 1, step0 = Math.pow(10, Math.floor(Math.log10(span / 4)));
  const step = [1, 2, 5, 10].map(m => m * step0).find(s => span / s <= 6);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function axisY(svg, lo, hi, y, x0, x1, log) {
  for (const v of niceTicks(lo, hi, log)) {
    svg.appendChild(svgEl("line", {x1: x0, x2: x1, y1: y(v), y2: y(v), class: "grid"}));
    svg.appendChild(svgEl("text", {x: x0 - 4, y: y(v) + 4, "text-anchor": "end", class: "tick"}, fmt(v)));
  }
}

// series: {name: [[x, y], ...]}; opts: logX, logY, hLines [{y, label}], bands [{x0, x1, label}].
function lineChart(series, opts = {}) {
  const width = opts.width || 640, height = opts.height || 240, pad = {l: 64, r: 12, t: 12, b: 40};
  const svg = svgEl("svg", {width, height, class: "chart", role: "img"});
  const names = Object.keys(series);
  const points = names.flatMap(n => series[n]).filter(p => (!opts.logX || p[0] > 0) && (!opts.logY || p[1] > 0));
  if (!points.length) return svg;
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]).concat((opts.hLines || []).map(h => h.y));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= opts.logY ? y0 / 2 : 1; y1 += opts.logY ? y1 : 1; }
  const tx = opts.logX ? Math.log10 : v => v, ty = opts.logY ? Math.log10 : v => v;
  const x = v => pad.l + (width - pad.l - pad.r) * (tx(v) - tx(x0)) / (tx(x1) - tx(x0));
  const y = v => height - pad.b - (height - pad.t - pad.b) * (ty(v) - ty(y0)) / (ty(y1) - ty(y0));
  for (const band of opts.bands || []) {
    const bx0 = x(Math.max(band.x0, x0)), bx1 = x(Math.min(band.x1, x1));
    svg.appendChild(svgEl("rect", {x: bx0, y: pad.t, width: Math.max(1, bx1 - bx0), height: height - pad.t - pad.b,
                                   class: band.odd ? "band odd" : "band"}));
    svg.appendChild(svgEl("text", {x: bx0 + 3, y: pad.t + 11, class: "band-label"}, band.label));
  }
  axisY(svg, y0, y1, y, pad.l, width - pad.r, opts.logY);
  for (const v of niceTicks(x0, x1, opts.logX)) {
    svg.appendChild(svgEl("text", {x: x(v), y: height - pad.b + 14, "text-anchor": "middle", class: "tick"}, fmt(v)));
  }
  names.forEach((name, i) => {
    const pts = series[name].filter(p => (!opts.logX || p[0] > 0) && (!opts.logY || p[1] > 0));
    const d = pts.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    svg.appendChild(svgEl("path", {d, class: "line", stroke: PALETTE[i % PALETTE.length]}));
  });
  for (const h of opts.hLines || []) {
    svg.appendChild(svgEl("line", {x1: pad.l, x2: width - pad.r, y1: y(h.y), y2: y(h.y), class: "marker"}));
    svg.appendChild(svgEl("text", {x: width - pad.r - 4, y: y(h.y) - 4, "text-anchor": "end", class: "marker-label"}, h.label));
  }
  if (opts.xLabel) svg.appendChild(svgEl("text", {x: (width + pad.l) / 2, y: height - 6, "text-anchor": "middle",
                                                   class: "axis-label"}, opts.xLabel));
  const wrap = document.createElement("div");
  wrap.className = "line-chart";
  wrap.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  names.forEach((name, i) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${PALETTE[i % PALETTE.length]}"></i>`;
    item.appendChild(document.createTextNode(name));
    legend.appendChild(item);
  });
  wrap.appendChild(legend);
  return wrap;
}
