// Pieces the pages share: the site filter, word highlights fetched for shown cards, and the key dispatcher.
import { get, paths } from "./api.js";
import { renderContent } from "./cards.js";
import { h, visibleText } from "./dom.js";

export async function fillSites(select, wanted) {
  const data = await get(`${paths.console}api/sites`);
  const sites = [...(data.sites || [])];
  // A site asked for by address is kept even when nothing lists it yet: the filter applies, visibly.
  if (!data.scoped && wanted && !sites.includes(wanted)) sites.push(wanted);
  for (const site of sites) {
    const option = h("option", {}, visibleText(site));
    option.value = site;
    select.append(option);
  }
  if (data.scoped) {
    select.value = data.sites[0] ?? "";
    select.disabled = true;
  } else if (wanted) {
    select.value = wanted;
  }
}

// Ask the server which words weighed most for each shown comment, then repaint their content with highlights.
export async function explain(rows) {
  const ids = rows.map((r) => r.item.id).filter(Boolean);
  for (let i = 0; i < ids.length; i += 50) {
    const data = await get(`${paths.console}api/explain`, { ids: ids.slice(i, i + 50).join(",") });
    for (const r of rows) {
      const e = data.explanations?.[r.item.id];
      if (!e) continue;
      r.item.segments = e.segments;
      const el = r.card.querySelector(".content");
      if (el) renderContent(el, r.item.comment?.content || "", e.segments);
    }
  }
}

// Single-key shortcuts, ignored while typing in a field or with a modifier held (those belong to the browser).
export function keyHandler(bindings) {
  return (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    const t = ev.target;
    if (t && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName)) && t.type !== "checkbox") return;
    if (document.querySelector("dialog[open]")) return;
    const fn = bindings[ev.key];
    if (!fn) return;
    ev.preventDefault();
    fn(ev);
  };
}
