// One comment as a card: author, site, links as domains, score and verdict, and the content with the words that
// drove the verdict highlighted. Every string from the comment goes through untrusted()/linkChip().
import { appendUntrusted, badge, clear, fmtScore, fmtTime, h, linkChip, untrusted } from "./dom.js";

const URL_IN_TEXT = /\b(?:https?:\/\/|www\.)[^\s<>"'`)\]]+|\b[a-z][a-z0-9+.-]*:\/\/[^\s<>"'`)\]]+|\bjavascript:[^\s<>"'`]+/gi;
const MAX_LINKS = 12;

export function linksOf(comment) {
  const found = [];
  const add = (u) => { if (u && !found.includes(u)) found.push(u); };
  add(String(comment.author_url || "").trim());
  for (const m of String(comment.content || "").matchAll(URL_IN_TEXT)) {
    add(m[0]);
    if (found.length >= MAX_LINKS) break;
  }
  return found;
}

// segments: [[text, weight|null], ...] covering the whole content, from the server's explanation.
export function renderContent(el, content, segments) {
  clear(el);
  if (!Array.isArray(segments) || !segments.length) {
    appendUntrusted(el, content);
    return el;
  }
  const max = Math.max(1e-9, ...segments.map(([, w]) => (typeof w === "number" ? Math.abs(w) : 0)));
  for (const [text, weight] of segments) {
    if (typeof weight !== "number" || weight === 0) {
      appendUntrusted(el, text);
      continue;
    }
    const level = Math.max(1, Math.min(5, Math.ceil((Math.abs(weight) / max) * 5)));
    const mark = h("mark", {
      class: `w ${weight > 0 ? "s" : "h"}${level}`,
      title: `${weight > 0 ? "towards spam" : "towards ham"}: ${weight.toFixed(3)}`,
    });
    appendUntrusted(mark, text);
    el.append(mark);
  }
  return el;
}

export function reasonsLine(reasons) {
  if (!Array.isArray(reasons) || !reasons.length) return null;
  const parts = reasons.slice(0, 6).map((r) => {
    const w = typeof r.weight === "number" ? ` ${r.weight > 0 ? "+" : ""}${r.weight.toFixed(2)}` : "";
    return `${r.signal ?? r.feature ?? "?"}${w}`;
  });
  return h("div", { class: "reasons" }, "why: ", untrusted(parts.join(" · "), "bdi"));
}

// What the platform was told, when it is not the model's verdict: shadow mode, a trusted role, a filled honeypot.
export function answeredNote(item) {
  if (!item.answered || !item.verdict || item.answered === item.verdict) return null;
  const signals = Array.isArray(item.reasons) ? item.reasons.map((r) => String(r.signal ?? "")) : [];
  const why = item.shadow ? "shadow mode"
    : item.trusted ? (signals.find((s) => s.startsWith("trusted role")) || "trusted role")
      : signals.includes("honeypot filled") ? "honeypot filled" : "";
  return h("span", { class: "answered", title: "what Winnow answered the platform, unlike the model's verdict" },
    "answered ", badge(item.answered), why ? ` (${why})` : "");
}

const REF_NAMES = { comment_post_ID: "post", comment_ID: "comment", comment_parent: "reply to",
  comment_context: "tags", permalink: "at" };

// The platform's own ids and the post's tags, as sent with the check (untrusted strings, like the comment).
export function refsLine(refs) {
  const entries = Object.entries(refs && typeof refs === "object" ? refs : {}).filter(([, v]) => v !== "");
  if (!entries.length) return null;
  const parts = entries.map(([k, v]) => `${REF_NAMES[k] || k}: ${v}`);
  return h("div", { class: "refs muted" }, untrusted(parts.join(" · "), "bdi"));
}

// item: {id, site, verdict, answered, score, created_at, comment, reasons, refs}
export function commentCard(item, { selectable = false, extra = null, actions = [] } = {}) {
  const c = item.comment || {};
  const verdict = item.verdict || "";
  const card = h("li", { class: `card v-${verdict}`, dataset: { id: item.id }, tabindex: "-1" });
  if (selectable) {
    card.append(h("span", { class: "pick" },
      h("input", { type: "checkbox", class: "select", "aria-label": "select for a bulk label", tabindex: "-1" })));
  } else {
    card.append(h("span", { class: "pick" }));
  }
  const meta = h("div", { class: "meta" },
    untrusted(c.author || "(no name)", "bdi", "author untrusted"),
    c.author_email ? h("span", { class: "muted" }, untrusted(c.author_email)) : null,
    h("span", { class: "site" }, untrusted(item.site || c.site || "")),
    h("span", { class: "muted" }, fmtTime(item.created_at)),
    c.comment_type && c.comment_type !== "comment" ? h("span", { class: "muted" }, untrusted(c.comment_type)) : null,
  );
  card.append(meta);
  if (verdict || typeof item.score === "number") {
    card.append(h("div", { class: "score", title: "the model's verdict and calibrated spam probability" },
      badge(verdict), " ", h("span", { class: "num" }, fmtScore(item.score)), answeredNote(item)));
  }
  const content = h("div", { class: "content" });
  renderContent(content, c.content || "", item.segments);
  card.append(content);
  const links = linksOf(c);
  if (links.length) card.append(h("div", { class: "links" }, h("span", { class: "muted" }, "links:"), links.map(linkChip)));
  const refs = refsLine(item.refs);
  if (refs) card.append(refs);
  const why = reasonsLine(item.reasons);
  if (why) card.append(why);
  if (extra) card.append(extra);
  card.append(h("div", { class: "actions" }, actions));
  return card;
}
