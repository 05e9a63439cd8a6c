// SVG charts drawn from numbers: bars per day, lines, a precision-recall curve and a confusion matrix.
// Labels that come from data (moderator names) go in as text nodes with control characters made visible.
import { svg, visibleText } from "./dom.js";

const COLORS = { spam: "#b3261e", ham: "#1e7b34", unsure: "#9a6700", accent: "#2f5fd0", grey: "#8a93a3" };
export { COLORS };

const TICKS = 5;

// A round axis top whose fifths are whole numbers for counts (5, 10, 20, 50, 100, ...).
function niceMax(v) {
  if (!(v > TICKS)) return TICKS;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(width, height, title, desc) {
  const root = svg("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title,
    preserveAspectRatio: "xMidYMid meet",
  });
  root.append(svg("title", {}, title));
  if (desc) root.append(svg("desc", {}, desc));
  root.append(svg("text", { x: 8, y: 16, class: "title" }, title));
  return root;
}

function yAxis(root, box, max, fmt) {
  for (let i = 0; i <= TICKS; i++) {
    const v = (max * i) / TICKS;
    const y = box.y + box.h - (box.h * i) / TICKS;
    root.append(svg("line", { x1: box.x, x2: box.x + box.w, y1: y, y2: y, class: i ? "grid" : "axis" }));
    root.append(svg("text", { x: box.x - 6, y: y + 4, "text-anchor": "end" }, fmt(v)));
  }
}

function xTicks(root, box, labels, step) {
  const last = labels.length - 1;
  labels.forEach((label, i) => {
    // Every step-th day, and the last day unless it would sit on top of the previous tick.
    if (i === last ? last % step !== 0 && last % step < step / 2 : i % step) return;
    const x = box.x + (box.w * (i + 0.5)) / labels.length;
    root.append(svg("text", { x, y: box.y + box.h + 14, "text-anchor": "middle" }, label));
  });
}

const shortDay = (d) => String(d).slice(5);  // YYYY-MM-DD -> MM-DD

// Stacked bars per day. series: [{name, values, color}]
export function barChart({ title, days, series, width = 560, height = 220, fmt = (v) => String(Math.round(v)) }) {
  const root = frame(width, height, title, `${series.map((s) => s.name).join(", ")} per day`);
  const box = { x: 44, y: 30, w: width - 56, h: height - 58 };
  const totals = days.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  yAxis(root, box, max, fmt);
  const bw = box.w / Math.max(1, days.length);
  days.forEach((day, i) => {
    let acc = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (v <= 0) continue;
      const hgt = (box.h * v) / max;
      const y = box.y + box.h - (box.h * acc) / max - hgt;
      const rect = svg("rect", { x: box.x + i * bw + bw * 0.15, y, width: Math.max(1, bw * 0.7), height: hgt, fill: s.color });
      rect.append(svg("title", {}, `${day} ${s.name}: ${v}`));
      root.append(rect);
      acc += v;
    }
  });
  xTicks(root, box, days.map(shortDay), Math.ceil(days.length / 8));
  legend(root, series, width);
  return root;
}

// Lines over days, values in [0, 1] shown as percentages.
export function rateChart({ title, days, series, width = 560, height = 220 }) {
  const root = frame(width, height, title, `${series.map((s) => s.name).join(", ")} per day`);
  const box = { x: 44, y: 30, w: width - 56, h: height - 58 };
  yAxis(root, box, 1, (v) => `${Math.round(v * 100)}%`);
  for (const s of series) {
    let d = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || Number.isNaN(v)) { pen = false; return; }
      const x = box.x + (box.w * (i + 0.5)) / days.length;
      const y = box.y + box.h - box.h * v;
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
      const dot = svg("circle", { cx: x, cy: y, r: 2.5, fill: s.color });
      dot.append(svg("title", {}, `${days[i]} ${s.name}: ${(v * 100).toFixed(1)}%`));
      root.append(dot);
    });
    if (d) root.append(svg("path", { d, class: "line", stroke: s.color }));
  }
  xTicks(root, box, days.map(shortDay), Math.ceil(days.length / 8));
  legend(root, series, width);
  return root;
}

// Horizontal bars: [{name, value}] (names are untrusted).
export function hbarChart({ title, rows, width = 560, color = COLORS.accent }) {
  const rowH = 22;
  const height = 40 + Math.max(1, rows.length) * rowH + 10;
  const root = frame(width, height, title);
  const labelW = 170;
  const box = { x: labelW, y: 30, w: width - labelW - 50 };
  const max = niceMax(Math.max(0, ...rows.map((r) => r.value)));
  if (!rows.length) root.append(svg("text", { x: 8, y: 48 }, "no labels in this period"));
  rows.forEach((r, i) => {
    const y = box.y + i * rowH;
    let name = visibleText(r.name || "(unnamed)");
    if (name.length > 24) name = name.slice(0, 23) + "…";
    root.append(svg("text", { x: labelW - 8, y: y + 15, "text-anchor": "end" }, name));
    const w = (box.w * r.value) / max;
    const rect = svg("rect", { x: box.x, y: y + 3, width: Math.max(1, w), height: rowH - 6, fill: color });
    rect.append(svg("title", {}, `${visibleText(r.name)}: ${r.value}`));
    root.append(rect, svg("text", { x: box.x + w + 6, y: y + 15 }, String(r.value)));
  });
  return root;
}

function legend(root, series, width) {
  let x = width - 12;
  for (const s of [...series].reverse()) {
    const label = svg("text", { x, y: 16, "text-anchor": "end" }, s.name);
    x -= s.name.length * 7 + 6;
    root.append(label, svg("rect", { x: x - 10, y: 7, width: 10, height: 10, fill: s.color }));
    x -= 26;
  }
}

// Precision (y) against recall (x). points: [{recall, precision, threshold?}]; marker: the operating point.
export function prCurve({ title = "Precision–recall", points, marker, width = 360, height = 320 }) {
  const root = frame(width, height, title, "precision against recall on the held-out set");
  const box = { x: 48, y: 30, w: width - 68, h: height - 72 };
  for (let i = 0; i <= 4; i++) {
    const t = i / 4;
    const y = box.y + box.h - box.h * t;
    const x = box.x + box.w * t;
    root.append(svg("line", { x1: box.x, x2: box.x + box.w, y1: y, y2: y, class: i ? "grid" : "axis" }));
    root.append(svg("line", { x1: x, x2: x, y1: box.y, y2: box.y + box.h, class: i ? "grid" : "axis" }));
    root.append(svg("text", { x: box.x - 6, y: y + 4, "text-anchor": "end" }, t.toFixed(2)));
    root.append(svg("text", { x, y: box.y + box.h + 14, "text-anchor": "middle" }, t.toFixed(2)));
  }
  root.append(svg("text", { x: box.x + box.w / 2, y: height - 8, "text-anchor": "middle" }, "recall"));
  root.append(svg("text", {
    x: 12, y: box.y + box.h / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${box.y + box.h / 2})`,
  }, "precision"));
  const pts = (points || []).filter((p) => Number.isFinite(p.recall) && Number.isFinite(p.precision))
    .sort((a, b) => a.recall - b.recall || b.precision - a.precision);
  if (!pts.length) {
    root.append(svg("text", { x: box.x + 10, y: box.y + 20 }, "no curve stored for this version"));
    return root;
  }
  const px = (r) => box.x + box.w * r;
  const py = (p) => box.y + box.h - box.h * p;
  // Step shape, as precision-recall curves are conventionally drawn.
  let d = `M${px(pts[0].recall).toFixed(1)},${py(pts[0].precision).toFixed(1)}`;
  for (let i = 1; i < pts.length; i++) {
    d += ` H${px(pts[i].recall).toFixed(1)} V${py(pts[i].precision).toFixed(1)}`;
  }
  root.append(svg("path", { d, class: "line pr", stroke: COLORS.accent }));
  if (marker && Number.isFinite(marker.recall) && Number.isFinite(marker.precision)) {
    const dot = svg("circle", { cx: px(marker.recall), cy: py(marker.precision), r: 4.5, fill: COLORS.spam });
    dot.append(svg("title", {}, `operating point: precision ${marker.precision.toFixed(3)}, recall ${marker.recall.toFixed(3)}`));
    root.append(dot);
  }
  return root;
}

// 2x2 confusion matrix: rows = true class, columns = predicted class; cell shade by share of the row.
export function confusionMatrix({ title = "Confusion matrix", tp, fp, tn, fn, width = 320, height = 300 }) {
  const root = frame(width, height, title, `true positives ${tp}, false positives ${fp}, true negatives ${tn}, false negatives ${fn}`);
  const box = { x: 92, y: 56, w: width - 112, h: height - 96 };
  const cells = [
    { row: 0, col: 0, v: tn, name: "true ham → ham", good: true },
    { row: 0, col: 1, v: fp, name: "true ham → spam", good: false },
    { row: 1, col: 0, v: fn, name: "true spam → ham", good: false },
    { row: 1, col: 1, v: tp, name: "true spam → spam", good: true },
  ];
  const rowTotal = [tn + fp, fn + tp];
  const cw = box.w / 2;
  const ch = box.h / 2;
  root.append(svg("text", { x: box.x + box.w / 2, y: 40, "text-anchor": "middle" }, "predicted"));
  ["ham", "spam"].forEach((name, i) => {
    root.append(svg("text", { x: box.x + cw * (i + 0.5), y: box.y - 6, "text-anchor": "middle" }, name));
    root.append(svg("text", { x: box.x - 8, y: box.y + ch * (i + 0.5) + 4, "text-anchor": "end" }, `true ${name}`));
  });
  for (const c of cells) {
    const share = rowTotal[c.row] ? c.v / rowTotal[c.row] : 0;
    const base = c.good ? "46,125,50" : "211,47,47";
    const rect = svg("rect", {
      x: box.x + c.col * cw, y: box.y + c.row * ch, width: cw - 2, height: ch - 2,
      fill: `rgba(${base},${(0.08 + 0.7 * share).toFixed(3)})`, stroke: "#d9dde5",
    });
    rect.append(svg("title", {}, `${c.name}: ${c.v}`));
    root.append(rect);
    root.append(svg("text", {
      x: box.x + c.col * cw + cw / 2, y: box.y + c.row * ch + ch / 2 + 2, "text-anchor": "middle",
      class: "title cell",
    }, String(c.v)));
    root.append(svg("text", {
      x: box.x + c.col * cw + cw / 2, y: box.y + c.row * ch + ch / 2 + 18, "text-anchor": "middle",
    }, `${(share * 100).toFixed(1)}%`));
  }
  return root;
}
