// A big-number gauge: an arc from min to max under the number, the number itself, its unit
// and label. A stale value shows as "—" with its age, never as the last number.
import { fitCanvas, cssVar } from "./canvas.js";
import { el, num } from "./format.js";

export class Gauge {
  constructor(parent, spec) {
    this.spec = spec;
    this.value = null;
    this.state = "none";
    this.node = el("div", { class: "gauge" + (spec.wide ? " wide" : ""), "data-name": spec.key, "data-state": "none" });
    this.canvas = el("canvas", { "aria-hidden": "true" });
    this.numNode = el("span", { class: "num" }, "—");
    this.ageNode = el("span", { class: "age" });
    this.node.append(
      this.ageNode,
      this.canvas,
      el("div", { class: "reading" }, this.numNode, el("span", { class: "unit" }, spec.unit)),
      el("div", { class: "label" }, spec.label),
    );
    parent.append(this.node);
  }

  // value: a number or null; stale: older than the page accepts; ageMs: how old.
  set(value, stale, ageMs) {
    const state = value === null || value === undefined ? "none" : stale ? "stale" : "fresh";
    this.value = state === "fresh" ? Number(value) : null;
    this.state = state;
    this.node.dataset.state = state;
    if (state === "fresh") this.node.dataset.value = String(value);
    else delete this.node.dataset.value;
    this.numNode.textContent = state === "fresh" ? num(value, this.spec.digits || 0) : "—";
    this.ageNode.textContent = state === "stale" && ageMs !== null ? `stale ${Math.round(ageMs / 1000)} s` : "";
    const level = state !== "fresh" ? "" : this.spec.bad !== undefined && value >= this.spec.bad ? "bad"
      : this.spec.warn !== undefined && value >= this.spec.warn ? "warn" : "";
    if (level) this.node.dataset.level = level;
    else delete this.node.dataset.level;
  }

  draw() {
    const fit = fitCanvas(this.canvas);
    if (!fit) return;
    const { ctx, w, h } = fit;
    const r = Math.min(w / 2 - 6, h - 8);
    const cx = w / 2;
    const cy = h - 2;
    const a0 = Math.PI;
    const a1 = 2 * Math.PI;
    ctx.lineCap = "round";
    ctx.lineWidth = 8;
    ctx.strokeStyle = cssVar("--line");
    ctx.beginPath();
    ctx.arc(cx, cy, r, a0, a1);
    ctx.stroke();
    if (this.value === null) return;
    const { min = 0, max } = this.spec;
    const f = Math.max(0, Math.min(1, (this.value - min) / (max - min)));
    const level = this.node.dataset.level;
    ctx.strokeStyle = cssVar(level === "bad" ? "--bad" : level === "warn" ? "--warn" : "--accent");
    ctx.beginPath();
    ctx.arc(cx, cy, r, a0, a0 + f * (a1 - a0));
    ctx.stroke();
  }
}
