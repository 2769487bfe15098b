// The ECCM dashboard: login, the tab bar, and which page reads what, when.
import { ApiError, explain, get, post, setCsrfToken, whenUnauthorized } from "./api.js";
import { GAUGES, LiveFeed, LivePage } from "./live.js";
import { MapPage } from "./map.js";
import { DiagnosticsPage, FilesPage, StatusPage, TripPage } from "./pages.js";

const PAGES = ["live", "map", "trip", "diagnostics", "status", "files"];
const $ = (id) => document.getElementById(id);

const live = new LivePage($("page-live"));
const map = new MapPage($("page-map"));
const trip = new TripPage($("page-trip"));
const diagnostics = new DiagnosticsPage($("page-diagnostics"));
const status = new StatusPage($("page-status"));
const files = new FilesPage($("page-files"));
const conn = $("conn");

const feed = new LiveFeed({
  onMessage: liveMessage,
  onState: (state) => {
    conn.dataset.state = state;
    conn.textContent = { live: "live", wait: "connecting", off: "offline" }[state];
    offline(state);
  },
  onUnauthorized: (maybe) => checkSession(maybe),
});

// A logger that stopped answering (ignition off, a restart, out of Wi-Fi range) left every
// page showing its last reply as if current (the Status page: "connected", "fix"), with
// only the small header badge to tell: every page now says so until the feed is back.
let wasLive = false;
function offline(state) {
  const notice = $("offline-notice");
  if (state === "live") {
    wasLive = true;
    notice.hidden = true;
  } else if (state === "off" && wasLive && notice.hidden) {
    const since = new Date().toLocaleTimeString();
    notice.textContent = `The logger does not answer (since ${since}): what this page shows may be out of date. Reconnecting…`;
    notice.hidden = false;
  }
}

let timers = [];
let current = null;
let fromTrip = new Set(); // gauges fed by the trip computer's "now", not the stream
let serverClock = null; // [server ms, performance.now()] of the last LIVE message

function liveMessage(msg) {
  if (msg.class !== "LIVE") return;
  const t = Date.parse(msg.time);
  serverClock = [t, performance.now()];
  live.update(msg.values || {}, t);
}

// -- login ---------------------------------------------------------------------------------
function showLogin(text) {
  stop();
  // The live feed too: left open (or reconnecting every few seconds) behind the form, it
  // asked the server again and again for a session that had ended.
  feed.stop();
  wasLive = false;
  $("offline-notice").hidden = true;
  // The form came from the logger: a red "offline" badge over it said the opposite.
  conn.hidden = true;
  $("app").hidden = true;
  $("tabs").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.textContent = text || "";
  error.hidden = !text;
  $("secret").focus();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("login-button");
  button.disabled = true;
  try {
    const auth = await post("/api/login", { secret: $("secret").value });
    $("secret").value = "";
    setCsrfToken(auth.csrf);
    await boot();
  } catch (err) {
    $("secret").value = "";
    // The logger's own words for a refusal (held back after failures, plain HTTP from
    // another machine): they say what to do.
    const said = err instanceof ApiError && err.body && err.body.message;
    showLogin(err instanceof ApiError && err.code === "auth_failed" ? "Wrong secret." : said || explain(err));
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await post("/api/logout");
  } catch (err) {
    // logged out either way: the cookie is gone or was not valid
  }
  setCsrfToken(null);
  showLogin("");
});

whenUnauthorized(() => showLogin("Your session ended: log in again."));

async function checkSession() {
  try {
    await get("/api/session");
  } catch (err) {
    // whenUnauthorized shows the form on 401; anything else: the feed retries by itself
  }
}

// -- the app -------------------------------------------------------------------------------
async function boot() {
  let session;
  try {
    session = await get("/api/session");
  } catch (err) {
    if (err.status === 401) showLogin("");
    else showLogin(explain(err));
    return;
  }
  if (session.csrf) setCsrfToken(session.csrf);
  $("car-name").textContent = session.car || "";
  map.setTiles(session.map_tiles || session.tiles || "");
  $("login").hidden = true;
  $("app").hidden = false;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  conn.hidden = false;
  stop();
  watched = null;
  await watchGauges();
  every(10000, watchGauges);
  every(1000, pollGnss);
  every(1000, pollTrip);
  every(3000, pollLink);
  every(5000, () => refreshPage(false));
  route();
}

// What the car supports is known once the adapter is connected (a page opened before
// that, or across a reconnection to another car, asks again until it knows).
let watched = null;
async function watchGauges() {
  let supported;
  try {
    supported = ((await get("/api/supported")).values || []).map((v) => v.name);
  } catch (err) {
    return;
  }
  const streamed = GAUGES.filter((g) => g.name && supported.includes(g.name)).map((g) => g.name);
  const key = streamed.join(",");
  if (key === watched) return;
  watched = key;
  fromTrip = new Set(["L_PER_100KM", ...(supported.includes("FUEL_RATE") ? [] : ["FUEL_RATE"])]);
  feed.start(streamed);
}

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

function stop() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

async function pollGnss() {
  try {
    map.update(await get("/api/gnss"));
  } catch (err) {
    map.update(null);
  }
}

// Without the adapter the gauges only show "—": the Live page says why, as a phone in the
// car has no other way to tell an unplugged adapter (or an ignition off) from a broken page.
const LINK_TEXT = {
  connecting: "Connecting to the OBD adapter…",
  disconnected: "The OBD adapter is not connected: no engine values. Is it plugged in and the ignition on?",
};
async function pollLink() {
  if (current !== "live" && current !== "map") return;
  const notice = $("live-notice");
  let s;
  try {
    s = await get("/api/status");
  } catch (err) {
    notice.hidden = true; // the header says offline; a 401 shows the login form
    return;
  }
  map.setReceiver(s.gnss); // "off": no receiver to wait for
  const text = s.obd === "connected" ? "" : LINK_TEXT[s.obd] || `OBD adapter: ${s.obd}`;
  notice.textContent = text;
  notice.hidden = !text;
}

// The trip computer gives what the car may not: fuel rate from MAF, instant L/100 km.
async function pollTrip() {
  if (current !== "live" && current !== "map") return;
  let t;
  try {
    t = await get("/api/trip");
  } catch (err) {
    return;
  }
  map.setTrip(t.trip);
  const now = t.active ? t.now || {} : {};
  let age = 0;
  if (serverClock && now.time) {
    age = Math.max(0, serverClock[0] + (performance.now() - serverClock[1]) - Date.parse(now.time));
  }
  const entries = {};
  if (fromTrip.has("FUEL_RATE")) entries.FUEL_RATE = { value: now.fuel_rate_lph ?? null, age_ms: age };
  if (fromTrip.has("L_PER_100KM")) entries.L_PER_100KM = { value: now.l_per_100km ?? null, age_ms: age };
  live.update(entries, null);
}

async function refreshPage(force) {
  const page = { trip, status, files, diagnostics }[current];
  if (!page) return;
  try {
    await page.refresh(force);
  } catch (err) {
    // a 401 shows the login form; other errors leave the last view until the next poll
  }
}

function route() {
  let page = location.hash.replace("#", "");
  if (!PAGES.includes(page)) page = "live";
  current = page;
  for (const p of PAGES) $(`page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.dataset.tab === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  live.show(page === "live");
  map.show(page === "map");
  document.body.dataset.page = page;
  refreshPage(true);
  if (page === "live" || page === "map") pollTrip();
  if (page === "live" || page === "map") pollLink();
}

window.addEventListener("hashchange", route);
boot();
