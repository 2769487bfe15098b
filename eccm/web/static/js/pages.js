// Trip, Diagnostics, Status and Files: each page reads its API when shown (and on a timer
// while shown) and renders the socket's reply bodies.
import { get, post, explain } from "./api.js";
import { bytes, duration, el, fact, num, when } from "./format.js";

// One unit, one line: a phone's narrow tile broke it into "L/100" and "km".
const PER_100KM = "L/100\u00a0km";

function dash(v, text) {
  return v === null || v === undefined ? "—" : text;
}

function message(node, text, kind) {
  node.textContent = text;
  node.dataset.kind = kind || "";
  node.hidden = !text;
}

// -- Trip ----------------------------------------------------------------------------------
export class TripPage {
  constructor(root) {
    this.title = root.querySelector("#trip-title");
    this.facts = root.querySelector("#trip-facts");
    this.rows = root.querySelector("#trips-table tbody");
    // Each cell names its column: on a phone the rows show as cards without the header.
    this.labels = [...root.querySelectorAll("#trips-table thead th")].map((th) => th.textContent);
    this.empty = root.querySelector("#trips-empty");
    this.summaries = new Map(); // file name → summary document (finished trips do not change)
  }

  async refresh() {
    const trip = await get("/api/trip");
    this.render(trip);
    await this.previous(trip);
    return trip;
  }

  render(trip) {
    const t = trip.totals || {};
    const now = trip.now || {};
    this.title.textContent = trip.active ? `Trip ${trip.trip} (running)` : "No trip running";
    this.title.dataset.active = String(Boolean(trip.active));
    const items = trip.active
      ? [
          ["Distance", dash(t.distance_km, `${num(t.distance_km, 2)} km`), "distance"],
          ["Time", duration(t.duration_s), "duration"],
          ["Moving", duration(t.moving_s), "moving"],
          ["Idle", duration(t.idle_s), "idle"],
          ["Fuel", dash(t.fuel_l, `${num(t.fuel_l, 2)} L`), "fuel"],
          ["Average", dash(t.l_per_100km, `${num(t.l_per_100km, 1)} ${PER_100KM}`), "economy"],
          ["Cost", dash(t.fuel_cost, num(t.fuel_cost, 2)), "cost"],
          ["Now", dash(now.l_per_100km, `${num(now.l_per_100km, 1)} ${PER_100KM}`), "now-economy"],
          ["Avg speed", dash(t.avg_speed_kmh, `${num(t.avg_speed_kmh)} km/h`), "avg-speed"],
          ["Avg moving", dash(t.avg_moving_speed_kmh, `${num(t.avg_moving_speed_kmh)} km/h`), "avg-moving"],
          ["Max speed", dash(t.max_speed_kmh, `${num(t.max_speed_kmh)} km/h`), "max-speed"],
          ["Max RPM", dash(t.max_rpm, `${num(t.max_rpm)} rpm`), "max-rpm"],
          ["Started", when(trip.start), "start", true],
          ["Fuel from", t.fuel_method || "—", "fuel-method"],
        ]
      : [];
    this.facts.replaceChildren(...items.map(([k, v, key, wide]) => fact(k, v, { key, wide })));
  }

  async previous(trip) {
    let listing = { files: [] };
    try {
      listing = await get("/api/files");
    } catch (err) {
      listing = { files: [] };
    }
    const names = (listing.files || [])
      .filter((f) => f.kind === "summary" && !(trip.active && f.trip === trip.trip))
      .map((f) => f.name)
      .slice(0, 20);
    for (const name of names) {
      if (this.summaries.has(name)) continue;
      try {
        this.summaries.set(name, await get(`/api/files/${encodeURIComponent(name)}`));
      } catch (err) {
        this.summaries.set(name, null);
      }
    }
    const docs = names.map((n) => this.summaries.get(n)).filter((d) => d && d.totals);
    if (!docs.length && trip.previous && trip.previous.totals) {
      docs.push({ first_time: trip.previous.start, totals: trip.previous.totals });
    }
    this.rows.replaceChildren(
      ...docs.map((d) => {
        const t = d.totals;
        const cells = [
          when(d.first_time),
          dash(t.distance_km, `${num(t.distance_km, 1)} km`),
          duration(t.duration_s),
          dash(t.fuel_l, `${num(t.fuel_l, 2)} L`),
          dash(t.l_per_100km, num(t.l_per_100km, 1)),
          dash(t.fuel_cost, num(t.fuel_cost, 2)),
        ];
        return el("tr", {}, ...cells.map((text, i) => el("td", { "data-label": this.labels[i] }, text)));
      }),
    );
    this.empty.hidden = docs.length > 0;
  }
}

// -- Diagnostics ---------------------------------------------------------------------------
export class DiagnosticsPage {
  constructor(root) {
    this.mil = root.querySelector("#mil");
    this.milText = root.querySelector("#mil-text");
    this.stored = root.querySelector("#dtc-stored");
    this.pending = root.querySelector("#dtc-pending");
    this.msg = root.querySelector("#dtc-message");
    this.dialog = document.getElementById("clear-dialog");
    this.warning = document.getElementById("clear-warning");
    this.countdown = document.getElementById("clear-countdown");
    this.clearButton = root.querySelector("#dtc-clear");
    this.reading = false;
    root.querySelector("#dtc-refresh").addEventListener("click", () => this.refresh(true));
    this.clearButton.addEventListener("click", () => this.askClear());
    this.dialog.addEventListener("close", () => this.closed());
  }

  async refresh(force = false) {
    if (this.reading || (!force && this.last && Date.now() - this.last < 10000)) return;
    this.reading = true;
    try {
      this.render(await get("/api/dtc"));
      this.last = Date.now();
      // A failed read's reason goes with the read that answers (the clear's outcome stays).
      if (this.readFailed) message(this.msg, "", "");
      this.readFailed = false;
    } catch (err) {
      message(this.msg, explain(err), "bad");
      this.readFailed = true;
    } finally {
      this.reading = false;
    }
  }

  render(dtc) {
    const state = dtc.mil === true ? "on" : dtc.mil === false ? "off" : "unknown";
    this.mil.dataset.state = state;
    this.milText.textContent = { on: "Check-engine lamp ON", off: "Check-engine lamp off", unknown: "Check-engine lamp: unknown" }[state];
    const list = (node, codes, none) => {
      node.replaceChildren(
        ...(codes.length
          ? codes.map((c) => el("li", { "data-code": c.code }, el("span", { class: "code" }, c.code), c.description || "no description"))
          : [el("li", { class: "none" }, none)]),
      );
    };
    list(this.stored, dtc.stored || [], "No stored code.");
    list(this.pending, dtc.pending || [], "No pending code.");
  }

  // Step one: ask the logger for a token (refused while moving), then the dialog.
  async askClear() {
    message(this.msg, "", "");
    this.readFailed = false;
    this.clearButton.disabled = true;
    try {
      const confirm = await post("/api/dtc/clear");
      this.token = confirm.token;
      this.warning.textContent = `This ${confirm.warning || "clears the stored codes"}. Stored and pending codes, the freeze frame and readiness are recorded first.`;
      this.expires = Date.now() + (confirm.expires_in || 30) * 1000;
      this.tick();
      this.timer = setInterval(() => this.tick(), 1000);
      this.dialog.returnValue = "";
      this.dialog.showModal();
    } catch (err) {
      message(this.msg, explain(err), "bad");
      this.clearButton.disabled = false;
    }
  }

  tick() {
    const left = Math.max(0, Math.round((this.expires - Date.now()) / 1000));
    this.countdown.textContent = String(left);
    if (left <= 0 && this.dialog.open) this.dialog.close("expired");
  }

  // Step two, only on the dialog's explicit "Clear codes".
  async closed() {
    clearInterval(this.timer);
    const token = this.token;
    this.token = null;
    const choice = this.dialog.returnValue;
    if (choice !== "confirm" || !token) {
      message(this.msg, choice === "expired" ? "The request expired: nothing was cleared." : "Nothing was cleared.", "");
      this.clearButton.disabled = false;
      return;
    }
    message(this.msg, "Clearing…", "");
    try {
      const done = await post("/api/dtc/clear/confirm", { token });
      message(this.msg, done.ok ? "Trouble codes cleared." : `The car refused the clear (it answered ${done.ecu || "nothing"}).`, done.ok ? "good" : "bad");
      await this.refresh(true);
    } catch (err) {
      message(this.msg, explain(err), "bad");
    } finally {
      this.clearButton.disabled = false;
    }
  }
}

// -- Status --------------------------------------------------------------------------------
const STATUS_FIELDS = [
  ["obd", "Adapter link", (v) => v, (v) => (v === "connected" ? "good" : "bad")],
  ["adapter", "Adapter", (v) => v],
  ["elm_voltage", "Adapter voltage", (v) => `${num(v, 1)} V`],
  ["protocol", "Protocol", (v) => v],
  ["vin", "VIN", (v) => v],
  ["fast_hz", "Fast values", (v) => `${num(v, 1)} /s`],
  ["slow_hz", "Slow values", (v) => `${num(v, 1)} /s`],
  ["gnss", "GNSS", (v) => v, (v) => (v === "fix" ? "good" : v === "off" ? "" : "warn")],
  ["time_source", "Time source", (v) => v],
  ["trip", "Trip", (v) => v],
  ["recording", "Writing", (v) => v],
  ["rows", "Rows in file", (v) => num(v)],
  ["rows_total", "Rows total", (v) => num(v)],
  ["rows_dropped", "Rows dropped", (v) => num(v), (v) => (v > 0 ? "warn" : "")],
  ["upload_queue", "Upload queue", (v) => `${num(v)} file(s)`, (v) => (v > 20 ? "warn" : "")],
  ["last_upload", "Last upload", (v) => when(v)],
  ["last_error", "Last error", (v) => v, (v) => (v ? "bad" : "")],
  ["uptime_s", "Uptime", (v) => duration(v)],
];

export class StatusPage {
  constructor(root) {
    this.facts = root.querySelector("#status-facts");
  }

  async refresh() {
    const status = await get("/api/status");
    this.render(status);
    return status;
  }

  render(status) {
    const tiles = [];
    const seen = new Set(["class"]);
    for (const [key, label, show, level] of STATUS_FIELDS) {
      seen.add(key);
      if (!(key in status)) continue;
      const v = status[key];
      tiles.push(fact(label, v === null || v === undefined ? "—" : show(v), { key, level: level ? level(v) : "", wide: ["recording", "last_error", "vin", "protocol", "trip"].includes(key) }));
    }
    const disk = diskTile(status, seen);
    if (disk) tiles.push(disk);
    // Whatever else the logger reports, as it names it.
    for (const [key, v] of Object.entries(status)) {
      if (seen.has(key) || (v !== null && typeof v === "object")) continue;
      tiles.push(fact(key.replaceAll("_", " "), v === null ? "—" : String(v), { key }));
    }
    this.facts.replaceChildren(...tiles);
  }
}

// Disk use against MAX_LOCAL_STORAGE_MB, from whichever fields the logger gives.
function diskTile(status, seen) {
  const disk = status.disk && typeof status.disk === "object" ? status.disk : status;
  const used = disk.disk_used_bytes ?? disk.used_bytes ?? (disk.disk_used_mb ?? disk.used_mb) * 2 ** 20;
  const budget = disk.disk_budget_bytes ?? disk.budget_bytes ?? (disk.disk_budget_mb ?? disk.budget_mb ?? disk.max_local_storage_mb) * 2 ** 20;
  for (const k of ["disk", "disk_used_bytes", "disk_budget_bytes", "disk_used_mb", "disk_budget_mb"]) seen.add(k);
  if (!Number.isFinite(used)) return null;
  const share = Number.isFinite(budget) && budget > 0 ? used / budget : null;
  const text = share === null ? bytes(used) : `${bytes(used)} of ${bytes(budget)}`;
  return fact("Disk use", text, { key: "disk", wide: true, meter: share, level: share === null ? "" : share > 0.95 ? "bad" : share > 0.8 ? "warn" : "" });
}

// -- Files ---------------------------------------------------------------------------------
export class FilesPage {
  constructor(root) {
    this.rows = root.querySelector("#files-table tbody");
    this.empty = root.querySelector("#files-empty");
    this.msg = root.querySelector("#upload-message");
    this.button = root.querySelector("#upload-now");
    this.button.addEventListener("click", () => this.upload());
  }

  async refresh() {
    const listing = await get("/api/files");
    const files = listing.files || [];
    this.rows.replaceChildren(
      ...files.map((f) =>
        el(
          "tr",
          { "data-name": f.name },
          el(
            "td",
            { class: "name" },
            el("a", { href: `/api/files/${encodeURIComponent(f.name)}`, download: f.name }, f.name),
            el("div", { class: "muted small" }, when(f.modified)),
          ),
          el("td", {}, bytes(f.size)),
          el("td", {}, f.uploaded ? "uploaded" : f.kind === "summary" ? "summary" : "waiting"),
        ),
      ),
    );
    this.empty.hidden = files.length > 0;
  }

  async upload() {
    this.button.disabled = true;
    message(this.msg, "Closing the current file and uploading…", "");
    this.msg.hidden = false;
    try {
      const done = await post("/api/upload");
      message(this.msg, `${num(done.queued)} file(s) queued for upload.`, "good");
      await this.refresh();
    } catch (err) {
      message(this.msg, explain(err), "bad");
    } finally {
      this.button.disabled = false;
      this.msg.hidden = false;
    }
  }
}
