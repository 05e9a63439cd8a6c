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

// item: {id, site, verdict, score, created_at, comment, reasons}
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
      badge(verdict), " ", h("span", { class: "num" }, fmtScore(item.score))));
  }
  const content = h("div", { class: "content" });
  renderContent(content, c.content || "", item.segments);
  card.append(content);
  const links = linksOf(c);
  if (links.length) card.append(h("div", { class: "links" }, h("span", { class: "muted" }, "links:"), links.map(linkChip)));
  const why = reasonsLine(item.reasons);
  if (why) card.append(why);
  if (extra) card.append(extra);
  card.append(h("div", { class: "actions" }, actions));
  return card;
}
