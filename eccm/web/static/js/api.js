// The JSON API of SPEC §7: same-origin fetches with the session cookie; POSTs carry the
// CSRF token the login reply gave (kept in sessionStorage so a reload keeps it).

const CSRF_KEY = "eccm.csrf";
const TIMEOUT_MS = 20000; // a DTC read on a slow K-line car takes seconds

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "http_" + status;
    this.body = body;
  }
}

export function csrfToken() {
  return sessionStorage.getItem(CSRF_KEY) || "";
}

export function setCsrfToken(token) {
  if (token) sessionStorage.setItem(CSRF_KEY, token);
  else sessionStorage.removeItem(CSRF_KEY);
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken();
    headers["Content-Type"] = "application/json";
  }
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: ctrl.signal,
    });
  } catch (err) {
    throw new ApiError(0, { code: "offline", message: "the logger does not answer" });
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (err) {
    data = null;
  }
  if (!res.ok || (data && data.class === "ERROR")) {
    const error = new ApiError(res.status, data);
    if (res.status === 401 && path !== "/api/login") onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body === undefined ? {} : body);

// The error message a person reads, for the codes of SPEC §5.
export function explain(err) {
  const byCode = {
    vehicle_moving: "The car is moving: stop first.",
    not_connected: "The OBD adapter is not connected.",
    forbidden: "Not allowed with this secret or by the logger's configuration.",
    confirm_invalid: "The request expired or was already used: start again.",
    obd_timeout: "The car did not answer in time.",
    busy: "The adapter is busy: try again in a moment.",
    offline: "The logger does not answer.",
    auth_failed: "Wrong secret.",
    noauth: "Not logged in.",
  };
  // A refusal's reason is the logger's: which setting or secret (uploads off, clearing
  // disabled, a read-only session); the generic line left the user guessing.
  const said = err.body && err.body.message;
  if (err.code === "forbidden" && said) return `Not allowed: ${said}.`;
  return byCode[err.code] || err.message || String(err);
}
