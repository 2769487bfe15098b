// The Map page: the current trip's track and position drawn on a canvas in Web Mercator,
// with a scale bar and a north arrow; map tiles underneath only when the logger names a
// tile URL (WEB_MAP_TILES), so the page works with no internet at all.
import { fitCanvas, cssVar } from "./canvas.js";
import { num } from "./format.js";
import { get } from "./api.js";

const TILE = 256;
const EARTH_M = 40075016.686; // equator circumference: metres per world width at zoom 0
const MIN_SPAN_M = 250; // the view never zooms closer than this across
const MAX_POINTS = 20000;
const TRACK_KEY = "eccm.track";

// Web Mercator world coordinates at zoom 0, in tile pixels.
function project(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [((lon + 180) / 360) * TILE, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * TILE];
}

function niceLength(m) {
  const p = 10 ** Math.floor(Math.log10(m));
  for (const f of [5, 2, 1]) if (f * p <= m) return f * p;
  return p;
}

export class MapPage {
  constructor(root) {
    this.canvas = root.querySelector("#map");
    this.attribution = root.querySelector("#map-attribution");
    this.track = []; // [lat, lon]
    this.trip = null;
    this.loadedFor = null; // the trip whose logger track was loaded
    this.loading = false;
    this.position = null; // the last GNSS reply
    this.tiles = null; // URL template from the logger, or null
    this.receiver = null; // the status's "gnss": "off" when GPS_POSITION_MONITORING=no
    this.images = new Map();
    this.visible = false;
    this.restore();
    window.addEventListener("resize", () => this.draw());
  }

  setTiles(template) {
    this.tiles = template || null;
    if (this.tiles) {
      let host = this.tiles;
      try {
        host = new URL(this.tiles.replace(/[{}]/g, "")).host;
      } catch (err) {
        host = "";
      }
      this.attribution.textContent = `Map tiles: ${host} (WEB_MAP_TILES)`;
      this.attribution.hidden = false;
    }
  }

  // With GNSS off the page waited "for a GNSS fix" that could never come.
  setReceiver(state) {
    if (state === this.receiver) return;
    this.receiver = state;
    this.update(this.position);
  }

  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(TRACK_KEY) || "null");
      if (saved && Array.isArray(saved.track)) {
        this.trip = saved.trip;
        this.track = saved.track;
      }
    } catch (err) {
      this.track = [];
    }
  }

  save() {
    sessionStorage.setItem(TRACK_KEY, JSON.stringify({ trip: this.trip, track: this.track.slice(-MAX_POINTS) }));
  }

  // The trip the logger records: a new trip starts a new track, and the logger's own
  // track of it (GET /api/track) comes first, so that a page opened mid-drive shows where
  // the car has been, not only what it sees from now on.
  setTrip(trip) {
    if (!trip) return;
    if (trip !== this.trip) {
      this.trip = trip;
      this.track = [];
      this.save();
      this.loadedFor = null;
    }
    if (this.loadedFor !== trip && !this.loading) this.loadTrack(trip);
  }

  async loadTrack(trip) {
    this.loading = true;
    try {
      const reply = await get("/api/track");
      if (reply.trip !== trip || trip !== this.trip) return;
      const last = this.track[this.track.length - 1];
      const points = reply.points.map(([lat, lon]) => [lat, lon]);
      // What this page saw after the logger's last kept point stays at the end.
      if (last && points.length && (last[0] !== points[points.length - 1][0] || last[1] !== points[points.length - 1][1])) {
        points.push(last);
      }
      if (points.length >= this.track.length) this.track = points.slice(-MAX_POINTS);
      this.loadedFor = trip;
      this.canvas.dataset.trackLoaded = String(reply.points.length);
      this.save();
      this.draw();
    } catch (err) {
      // Tried again at the next trip poll.
    } finally {
      this.loading = false;
    }
  }

  // A GNSS reply (SPEC §5): {fix, lat, lon, satellites, hdop, quality, speed, track, age_ms}.
  update(gnss) {
    this.position = gnss;
    const fix = gnss && gnss.fix && gnss.lat !== null && gnss.lon !== null;
    if (fix) {
      const last = this.track[this.track.length - 1];
      if (!last || last[0] !== gnss.lat || last[1] !== gnss.lon) {
        this.track.push([gnss.lat, gnss.lon]);
        if (this.track.length > MAX_POINTS) this.track.splice(0, this.track.length - MAX_POINTS);
        this.save();
      }
    }
    const set = (id, text) => {
      document.getElementById(id).textContent = text;
    };
    const off = this.receiver === "off";
    set("gnss-fix", off ? "GNSS off" : !gnss ? "—" : gnss.fix ? (gnss.quality > 1 ? "DGPS" : "yes") : "no fix");
    document.getElementById("gnss-fix").parentElement.dataset.level = off ? "" : gnss && gnss.fix ? "good" : "bad";
    set("gnss-sats", gnss && gnss.satellites !== undefined ? num(gnss.satellites) : "—");
    set("gnss-hdop", gnss && gnss.hdop !== undefined ? num(gnss.hdop, 1) : "—");
    set("gnss-speed", gnss && gnss.speed !== null && gnss.speed !== undefined ? `${num(gnss.speed * 3.6)} km/h` : "—");
    const pos = document.getElementById("gnss-pos");
    pos.textContent = fix ? `${gnss.lat.toFixed(6)}, ${gnss.lon.toFixed(6)}` : "—";
    if (fix) {
      pos.dataset.lat = String(gnss.lat);
      pos.dataset.lon = String(gnss.lon);
    } else {
      delete pos.dataset.lat;
      delete pos.dataset.lon;
    }
    set("gnss-points", num(this.track.length));
    this.draw();
  }

  show(visible) {
    this.visible = visible;
    if (visible) this.draw();
  }

  draw() {
    if (!this.visible) return;
    const fit = fitCanvas(this.canvas);
    if (!fit) return;
    const { ctx, w, h } = fit;
    ctx.fillStyle = "#0e141b";
    ctx.fillRect(0, 0, w, h);
    const pts = this.track.map(([lat, lon]) => project(lat, lon));
    const here = this.position && this.position.fix ? project(this.position.lat, this.position.lon) : null;
    if (here) pts.push(here);
    if (!pts.length) {
      const text = this.receiver === "off" ? "GNSS is off in the configuration" : "Waiting for a GNSS fix…";
      this.canvas.dataset.message = text;
      ctx.fillStyle = cssVar("--muted");
      ctx.font = "16px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(text, w / 2, h / 2);
      return;
    }
    delete this.canvas.dataset.message;
    // The view: the track's bounding box with a margin, at least MIN_SPAN_M across.
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    }
    const latMid = this.track.length ? this.track[this.track.length - 1][0] : this.position.lat;
    const cos = Math.cos((latMid * Math.PI) / 180);
    const minSpan = (MIN_SPAN_M / (EARTH_M * cos)) * TILE; // world px at zoom 0
    const spanX = Math.max(x1 - x0, minSpan);
    const spanY = Math.max(y1 - y0, minSpan);
    let zoom = Math.log2(Math.min((w - 48) / spanX, (h - 48) / spanY));
    if (this.tiles) zoom = Math.min(19, zoom);
    const scale = 2 ** zoom; // screen px per zoom-0 world px
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    const sx = (x) => w / 2 + (x - cx) * scale;
    const sy = (y) => h / 2 + (y - cy) * scale;

    if (this.tiles) this.drawTiles(ctx, w, h, zoom, cx, cy);

    // the track
    ctx.strokeStyle = cssVar("--accent");
    ctx.lineWidth = 4;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    ctx.beginPath();
    this.track.forEach(([lat, lon], i) => {
      const [x, y] = project(lat, lon);
      if (i) ctx.lineTo(sx(x), sy(y));
      else ctx.moveTo(sx(x), sy(y));
    });
    ctx.stroke();
    if (this.track.length) {
      const [x, y] = project(...this.track[0]);
      ctx.fillStyle = cssVar("--good");
      ctx.beginPath();
      ctx.arc(sx(x), sy(y), 5, 0, 2 * Math.PI);
      ctx.fill();
    }
    // the position, with the direction of travel
    if (here) {
      const [px, py] = [sx(here[0]), sy(here[1])];
      const moving = this.position.track !== null && this.position.track !== undefined && (this.position.speed || 0) > 0.5;
      ctx.fillStyle = cssVar("--warn");
      ctx.strokeStyle = "#0b0f14";
      ctx.lineWidth = 3;
      ctx.beginPath();
      if (moving) {
        const a = (this.position.track * Math.PI) / 180;
        const p = (r, t) => [px + r * Math.sin(a + t), py - r * Math.cos(a + t)];
        ctx.moveTo(...p(14, 0));
        ctx.lineTo(...p(11, 2.5));
        ctx.lineTo(...p(4, Math.PI));
        ctx.lineTo(...p(11, -2.5));
        ctx.closePath();
      } else {
        ctx.arc(px, py, 9, 0, 2 * Math.PI);
      }
      ctx.stroke();
      ctx.fill();
    }
    this.drawScale(ctx, w, h, zoom, latMid);
    this.drawNorth(ctx, w);
  }

  drawTiles(ctx, w, h, zoom, cx, cy) {
    const z = Math.max(0, Math.min(19, Math.round(zoom)));
    const k = 2 ** (zoom - z); // screen px per tile px
    const n = 2 ** z;
    const left = cx * 2 ** z - w / 2 / k;
    const top = cy * 2 ** z - h / 2 / k;
    for (let ty = Math.floor(top / TILE); ty <= Math.floor((top + h / k) / TILE); ty += 1) {
      for (let tx = Math.floor(left / TILE); tx <= Math.floor((left + w / k) / TILE); tx += 1) {
        if (ty < 0 || ty >= n) continue;
        const x = ((tx % n) + n) % n;
        const url = this.tiles
          .replace("{s}", "abc"[(x + ty) % 3])
          .replace("{z}", z)
          .replace("{x}", x)
          .replace("{y}", ty);
        let img = this.images.get(url);
        if (!img) {
          img = new Image();
          img.addEventListener("load", () => this.draw());
          img.src = url;
          this.images.set(url, img);
          if (this.images.size > 300) this.images.delete(this.images.keys().next().value);
        }
        if (img.complete && img.naturalWidth) {
          ctx.drawImage(img, (tx * TILE - left) * k, (ty * TILE - top) * k, TILE * k + 0.5, TILE * k + 0.5);
        }
      }
    }
  }

  drawScale(ctx, w, h, zoom, lat) {
    const mPerPx = (EARTH_M * Math.cos((lat * Math.PI) / 180)) / (TILE * 2 ** zoom);
    const metres = niceLength(mPerPx * w * 0.3);
    const px = metres / mPerPx;
    const x = 14;
    const y = h - 16;
    const label = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
    ctx.fillStyle = "rgba(11,15,20,.75)";
    ctx.fillRect(x - 8, y - 26, px + 16, 36);
    ctx.strokeStyle = cssVar("--text");
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 6);
    ctx.lineTo(x, y);
    ctx.lineTo(x + px, y);
    ctx.lineTo(x + px, y - 6);
    ctx.stroke();
    ctx.fillStyle = cssVar("--text");
    ctx.font = "600 14px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    ctx.fillText(label, x, y - 9);
    this.canvas.dataset.scale = label;
  }

  drawNorth(ctx, w) {
    const x = w - 26;
    const y = 30;
    ctx.fillStyle = "rgba(11,15,20,.75)";
    ctx.beginPath();
    ctx.arc(x, y, 20, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = cssVar("--bad");
    ctx.beginPath();
    ctx.moveTo(x, y - 15);
    ctx.lineTo(x + 7, y + 4);
    ctx.lineTo(x - 7, y + 4);
    ctx.closePath();
    ctx.fill();
    ctx.fillStyle = cssVar("--text");
    ctx.font = "700 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("N", x, y + 16);
  }
}
