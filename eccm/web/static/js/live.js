// The Live page: the /api/live WebSocket feeding big gauges and the five-minute chart.
//
// A value's age is what the server says (age_ms) plus the time since its message arrived,
// on this browser's monotonic clock: the phone's and the logger's wall clocks may disagree
// (a Pi has no real-time clock), so they are never compared for staleness.
import { Chart, COLORS } from "./chart.js";
import { Gauge } from "./gauge.js";
import { el } from "./format.js";

export const EVERY_S = 0.2; // 5 updates a second
const RECONNECT_MAX_MS = 10000;

// key: what the page shows; name: the value the logger streams (null: from the trip
// computer, which the app polls); staleMs: older than this shows as stale.
export const GAUGES = [
  { key: "RPM", name: "RPM", label: "Engine speed", unit: "rpm", max: 7000, warn: 5500, bad: 6500, staleMs: 2500 },
  { key: "SPEED", name: "SPEED", label: "Speed", unit: "km/h", max: 200, staleMs: 2500 },
  { key: "COOLANT_TEMP", name: "COOLANT_TEMP", label: "Coolant", unit: "°C", min: 0, max: 130, warn: 105, bad: 115, staleMs: 5000 },
  { key: "ENGINE_LOAD", name: "ENGINE_LOAD", label: "Load", unit: "%", max: 100, staleMs: 2500 },
  { key: "THROTTLE_POS", name: "THROTTLE_POS", label: "Throttle", unit: "%", max: 100, staleMs: 2500 },
  { key: "FUEL_RATE", name: "FUEL_RATE", label: "Fuel rate", unit: "L/h", max: 30, digits: 1, staleMs: 3500 },
  { key: "L_PER_100KM", name: null, label: "Instant", unit: "L/100 km", max: 30, digits: 1, staleMs: 3500, wide: true },
];

export class LivePage {
  constructor(root) {
    this.gauges = new Map();
    const box = root.querySelector("#gauges");
    for (const spec of GAUGES) this.gauges.set(spec.key, new Gauge(box, spec));
    this.chart = new Chart(root.querySelector("#chart"));
    this.picks = root.querySelector("#chart-picks");
    this.rateNode = root.querySelector("#live-delay");
    this.latest = new Map(); // key → {value, ageMs, at (performance.now()), readAt (server ms)}
    this.visible = false;
    this.frame = 0;
    this.messages = [];
    const saved = JSON.parse(localStorage.getItem("eccm.chart") || '["RPM","SPEED"]');
    GAUGES.forEach((spec, i) => {
      this.chart.define(spec.key, spec.min || 0, spec.max, COLORS[i % COLORS.length]);
      const chip = el("button", { type: "button", "data-key": spec.key, "aria-pressed": String(saved.includes(spec.key)) }, spec.label);
      chip.style.color = COLORS[i % COLORS.length];
      chip.addEventListener("click", () => this.toggle(spec.key, chip));
      this.picks.append(chip);
      if (saved.includes(spec.key)) this.chart.shown.add(spec.key);
    });
    // Staleness shows even when nothing arrives (a vanished link, a closed socket).
    setInterval(() => this.schedule(), 500);
    window.addEventListener("resize", () => this.schedule());
  }

  toggle(key, chip) {
    if (this.chart.shown.has(key)) this.chart.shown.delete(key);
    else this.chart.shown.add(key);
    chip.setAttribute("aria-pressed", String(this.chart.shown.has(key)));
    localStorage.setItem("eccm.chart", JSON.stringify([...this.chart.shown]));
    this.chart.dirty = true;
    this.schedule();
  }

  show(visible) {
    this.visible = visible;
    if (visible) this.schedule();
  }

  // One LIVE message (or the trip computer's "now"): values by key.
  update(entries, serverTime) {
    const at = performance.now();
    for (const [key, e] of Object.entries(entries)) {
      if (!this.gauges.has(key) || !e) continue;
      const number = typeof e.value === "number" ? e.value : null;
      const prev = this.latest.get(key);
      // The logger sends a value it dropped as too old as {value: null, age_ms: null}: the
      // last reading then ages here and shows as stale (with its age), not as "no value".
      if (number === null && (e.age_ms === null || e.age_ms === undefined) && prev && prev.value !== null) continue;
      const readAt = serverTime !== null && e.age_ms !== null ? serverTime - e.age_ms : null;
      const isNew = !prev || prev.readAt === null || readAt === null || Math.abs(readAt - prev.readAt) > 2;
      this.latest.set(key, { value: number, ageMs: e.age_ms ?? 0, at, readAt, isNew: isNew || prev.isNew });
    }
    // The rate counts the stream's messages that carry a value: not the trip computer's
    // poll (5/s read as 6/s), nor a message of empty values (no adapter read as 4/s).
    if (serverTime !== null && Object.values(entries).some((e) => e && typeof e.value === "number")) this.messages.push(at);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const now = performance.now();
    const wall = Date.now();
    for (const spec of GAUGES) {
      const g = this.gauges.get(spec.key);
      const v = this.latest.get(spec.key);
      if (!v) {
        g.set(null, false, null);
      } else {
        const age = v.ageMs + (now - v.at);
        const stale = age > spec.staleMs;
        g.set(v.value, stale, age);
        this.chart.add(spec.key, wall - (now - v.at) - v.ageMs, stale ? null : v.value);
        if (v.isNew && v.readAt !== null && v.value !== null) {
          // Display delay, for bench/web.py: meaningful only where browser and logger share
          // one clock (the bench runs both on one machine).
          record(spec.key, wall - v.readAt, v.value);
        }
        v.isNew = false;
      }
      if (this.visible) g.draw();
    }
    const cut = now - 5000;
    while (this.messages.length && this.messages[0] < cut) this.messages.shift();
    this.rateNode.textContent = this.messages.length ? `${(this.messages.length / 5).toFixed(1)} updates/s` : "";
    if (this.visible) this.chart.draw(wall);
  }
}

// The delays of the last displayed readings, read by bench/web.py through WebDriver.
const stats = { delays: [], shown: 0 };
window.eccmLive = stats;
function record(key, delayMs, value) {
  stats.shown += 1;
  stats.delays.push([key, delayMs, value]);
  if (stats.delays.length > 5000) stats.delays.splice(0, 1000);
}

// The WebSocket, reconnected with a capped backoff; reports its state to the header.
export class LiveFeed {
  constructor({ onMessage, onState, onUnauthorized }) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.onUnauthorized = onUnauthorized;
    this.names = [];
    this.ws = null;
    this.backoff = 500;
    this.stopped = true;
    this.timer = 0;
  }

  start(names) {
    this.names = names;
    this.stopped = false;
    if (this.ws) this.watch();
    else this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.onState("off");
  }

  watch() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.names.length) {
      this.ws.send(JSON.stringify({ watch: this.names, every: EVERY_S }));
    }
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/live`);
    this.ws = ws;
    this.onState("wait");
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.backoff = 500;
      this.onState("live");
      this.watch();
    });
    ws.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      if (msg.class === "ERROR" && (msg.code === "noauth" || msg.code === "auth_failed")) {
        this.stop();
        this.onUnauthorized();
        return;
      }
      this.onMessage(msg);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.onState("off");
      // A refused upgrade (no session) closes before opening: let the app check the login.
      if (!opened) this.onUnauthorized(true);
      this.timer = setTimeout(() => {
        if (!this.stopped) this.connect();
      }, this.backoff);
      this.backoff = Math.min(RECONNECT_MAX_MS, this.backoff * 2);
    });
  }
}
