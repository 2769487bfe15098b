// The last five minutes of chosen values on one canvas. Each series is drawn against its
// own gauge range (RPM 0–7000, speed 0–200, …), so values of different units share the
// plot; the legend chips carry the current values.
import { fitCanvas, cssVar } from "./canvas.js";

export const WINDOW_MS = 5 * 60 * 1000;
export const COLORS = ["#4cc2ff", "#ffb020", "#3ddc84", "#ff6ec7", "#b18cff", "#ff5a5f", "#e8eef4"];

export class Chart {
  constructor(canvas) {
    this.canvas = canvas;
    this.series = new Map(); // key → {points: [[t, v]], min, max, color}
    this.shown = new Set();
    this.dirty = true;
  }

  define(key, min, max, color) {
    this.series.set(key, { points: [], min, max, color });
  }

  add(key, t, value) {
    const s = this.series.get(key);
    if (!s) return;
    const last = s.points[s.points.length - 1];
    if (last && last[0] === t) return;
    // A stale value is a gap in the line (null), not a flat line at the last number.
    s.points.push([t, value]);
    const cut = t - WINDOW_MS;
    let drop = 0;
    while (drop < s.points.length && s.points[drop][0] < cut) drop += 1;
    if (drop) s.points.splice(0, drop);
    if (this.shown.has(key)) this.dirty = true;
  }

  draw(now) {
    const fit = fitCanvas(this.canvas);
    if (!fit) return;
    this.dirty = false;
    const { ctx, w, h } = fit;
    const left = 6;
    const right = w - 6;
    const top = 8;
    const bottom = h - 20;
    const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (right - left);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = cssVar("--muted");
    ctx.strokeStyle = cssVar("--line");
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const y = top + ((bottom - top) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(right, y);
      ctx.stroke();
    }
    ctx.textBaseline = "top";
    // A minute's label only where it does not run into the one before ("-5 min-4 min" on
    // a phone); the labels drawn are kept in data-ticks as [text, from, to].
    const ticks = [];
    let end = -Infinity;
    for (let m = 5; m >= 0; m -= 1) {
      const xx = x(now - m * 60000);
      const label = m === 0 ? "now" : `-${m} min`;
      const width = ctx.measureText(label).width;
      const from = m === 5 ? xx : m === 0 ? xx - width : xx - width / 2;
      if (from < end + 8 && m !== 0) continue;
      ctx.textAlign = m === 5 ? "left" : m === 0 ? "right" : "center";
      ctx.fillText(label, xx, bottom + 4);
      ticks.push([label, Math.round(from), Math.round(from + width)]);
      end = from + width;
    }
    this.canvas.dataset.ticks = JSON.stringify(ticks);
    ctx.lineWidth = 2.2;
    ctx.lineJoin = "round";
    for (const key of this.shown) {
      const s = this.series.get(key);
      if (!s) continue;
      const y = (v) => bottom - ((Math.max(s.min, Math.min(s.max, v)) - s.min) / (s.max - s.min)) * (bottom - top);
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        pen = true;
      }
      ctx.stroke();
    }
  }
}
