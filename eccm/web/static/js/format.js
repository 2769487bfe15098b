// Numbers, units and times for people.

export function num(value, digits = 0) {
  if (value === null || value === undefined || value === "" || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(Number(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
  return `${r} s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${num(v, i === 0 ? 0 : 1)} ${units[i]}`;
}

// "2026-12-03T21:44:19.795Z" → local date and time, short.
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

// python-OBD unit names → what a dashboard prints.
const UNITS = {
  revolutions_per_minute: "rpm",
  kilometer_per_hour: "km/h",
  degree_Celsius: "°C",
  percent: "%",
  gps: "g/s",
  gram_per_second: "g/s",
  kilopascal: "kPa",
  pascal: "Pa",
  volt: "V",
  degree: "°",
  meter: "m",
  meter_per_second: "m/s",
  kilometer: "km",
  second: "s",
  minute: "min",
  liters_per_hour: "L/h",
  liter_per_hour: "L/h",
  lph: "L/h",
  count: "",
  ratio: "",
};

export function unit(name) {
  if (!name) return "";
  return Object.hasOwn(UNITS, name) ? UNITS[name] : name.replaceAll("_", " ");
}

// Build an element: el("td", {class: "name"}, "text", child, ...). Text is never parsed as
// HTML (values come from the car and file names).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// A label/value tile of a .facts grid.
export function fact(label, value, opts = {}) {
  const long = String(value).length > 14;
  const node = el("div", { class: "fact" + (opts.wide ? " wide" : "") + (long ? " long" : ""), "data-key": opts.key });
  if (opts.level) node.dataset.level = opts.level;
  node.append(el("span", { class: "k" }, label), el("span", { class: "v" }, value));
  if (opts.meter !== undefined && opts.meter !== null) {
    const meter = el("div", { class: "meter" });
    if (opts.level) meter.dataset.level = opts.level;
    const bar = el("span");
    bar.style.width = `${Math.max(0, Math.min(100, opts.meter * 100)).toFixed(1)}%`;
    meter.append(bar);
    node.append(meter);
  }
  return node;
}
