// DOM helpers for the console. Data only ever reaches the page as text nodes or attribute values set one by one;
// nothing here parses HTML, so hostile comment text stays inert.

const SVG_NS = "http://www.w3.org/2000/svg";

// Bidi controls and invisible characters an attacker can use to disguise text. They are shown as visible
// markers rather than obeyed.
const HIDDEN_CHARS = /[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u061c\ufeff]/g;

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "href" || k === "src" || k === "action") throw new Error("set URLs explicitly, never from data");
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Untrusted text as nodes: plain text runs, with each hidden/bidi control character replaced by a visible marker
// such as [U+202E]. The result is wrapped in <bdi> so whatever direction the text has cannot spill onto its
// neighbours.
export function untrusted(text, tag = "bdi", cls = "untrusted") {
  const el = document.createElement(tag);
  el.className = cls;
  appendUntrusted(el, text);
  return el;
}

// The same for places that take only a string (SVG text, titles): controls become visible "[U+202E]" markers.
export function visibleText(text) {
  return String(text ?? "").replace(HIDDEN_CHARS, (c) => `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`);
}

export function appendUntrusted(el, text) {
  const s = String(text ?? "");
  let last = 0;
  for (const m of s.matchAll(HIDDEN_CHARS)) {
    if (m.index > last) el.append(document.createTextNode(s.slice(last, m.index)));
    const code = m[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    const marker = document.createElement("span");
    marker.className = "ctl";
    marker.title = "hidden control character";
    marker.textContent = `U+${code}`;
    el.append(marker);
    last = m.index + m[0].length;
  }
  if (last < s.length) el.append(document.createTextNode(s.slice(last)));
  return el;
}

// What a link really points at, for display: the scheme when it is not http(s), else the host.
export function describeUrl(raw) {
  const text = String(raw ?? "").trim();
  let url;
  try {
    url = new URL(text);
  } catch {
    try {
      url = new URL("http://" + text);
    } catch {
      return { ok: false, label: "unparseable link", href: null };
    }
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { ok: false, label: `${url.protocol} link`, href: null };
  }
  return { ok: true, label: url.hostname, href: url.href };
}

// Links from comments never navigate on a click: the chip shows the domain, and "open" asks first, showing
// the full address, then opens it in a new tab with no opener, no referrer and nofollow.
export function linkChip(raw) {
  const info = describeUrl(raw);
  const chip = h("span", { class: "link-chip", title: "link in the comment (not clickable)" });
  if (!info.ok) {
    chip.append(h("span", { class: "domain scheme-bad" }, untrusted(info.label)));
    return chip;
  }
  chip.append(h("span", { class: "domain" }, untrusted(info.label)));
  chip.append(h("button", {
    type: "button", class: "open-link", "aria-label": "open link after confirming",
    onclick: (ev) => { ev.stopPropagation(); confirmOpen(info.href); },
  }, "open…"));
  return chip;
}

function confirmOpen(href) {
  const dialog = h("dialog", { class: "confirm-open" },
    h("p", {}, "This link was written by the comment's author. Open it in a new tab?"),
    untrusted(href, "p", "url untrusted"),
  );
  const go = h("a", { class: "button primary", rel: "noopener noreferrer nofollow", target: "_blank" }, "Open");
  go.href = href;  // only http(s) reaches here (describeUrl)
  go.addEventListener("click", () => dialog.close());
  const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
  dialog.append(h("menu", {}, cancel, go));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  cancel.focus();
}

// A yes/no question in a modal <dialog>; resolves true only on the explicit confirm button.
export function ask(question, yes = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "ask" }, h("p", {}, question));
    const ok = h("button", { type: "button", class: "primary", onclick: () => { dialog.returnValue = "yes"; dialog.close(); } }, yes);
    const no = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
    dialog.append(h("menu", {}, no, ok));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "yes"); });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

export function fmtScore(score) {
  return typeof score === "number" ? score.toFixed(3) : "—";
}

export function fmtTime(ts) {
  if (ts === null || ts === undefined || ts === "") return "";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function badge(verdict) {
  const v = String(verdict ?? "");
  const cls = ["spam", "ham", "unsure"].includes(v) ? v : "";
  return h("span", { class: `badge ${cls}` }, v || "—");
}

export function status(el, message, isError = false) {
  el.textContent = message ?? "";
  el.classList.toggle("error", Boolean(isError));
}
