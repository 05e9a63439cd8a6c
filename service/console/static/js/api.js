// Same-origin JSON calls with the console's session cookie. Every state change carries the CSRF token the page
// was rendered with; a 401 means the session ended, so the page goes back to sign-in.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && typeof body.error === "object" ? body.error : body;
    const detail = e && typeof e.message === "string" ? e.message : "";
    super(detail ? `${detail} (HTTP ${status})` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store", redirect: "error",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) data = await response.json();
  if (response.status === 401) {
    // The session ended (expired, signed out, its key revoked): back to sign-in, then to this page.
    window.location.assign(document.body.dataset.signin);
    throw new ApiError(401, data);
  }
  if (response.status === 403 && data?.error?.code === "csrf") {
    // Signed in again in another tab: this page's token belongs to the old session.
    throw new ApiError(403, { error: { code: "csrf", message: "the session changed in another tab; reload this page and try again" } });
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params) => request("GET", params ? `${path}?${new URLSearchParams(clean(params))}` : path);
export const post = (path, body = {}) => request("POST", path, body);

function clean(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") out[k] = String(v);
  return out;
}

// Paths, from data attributes the server rendered with url_for, so the JS never guesses a route.
export const paths = new Proxy({}, { get: (_, name) => document.body.dataset[name] });
