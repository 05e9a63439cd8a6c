// Labelled comments: search and filter, relabel a past decision, see who decided what and when.
import { ApiError, get, paths, post } from "./api.js";
import { commentCard } from "./cards.js";
import { explain, fillSites, keyHandler } from "./common.js";
import { fmtTime, h, status, untrusted } from "./dom.js";

const PAGE = 50;

export function start(root) {
  const list = root.querySelector("#labels");
  const statusEl = root.querySelector("#status");
  const form = root.querySelector("#search-form");
  const q = root.querySelector("#search-q");
  const siteSel = root.querySelector("#filter-site");
  const labelSel = root.querySelector("#filter-label");
  const more = root.querySelector("#more");
  const state = { rows: [], cur: -1, cursor: null, history: [], busy: false, seq: 0 };

  function setCurrent(i) {
    if (!state.rows.length) return;
    i = Math.max(0, Math.min(state.rows.length - 1, i));
    state.rows[state.cur]?.card.classList.remove("current");
    state.cur = i;
    state.rows[i].card.classList.add("current");
    state.rows[i].card.scrollIntoView({ block: "nearest" });
  }

  function paint(r) {
    const it = r.item;
    r.labelEl.replaceChildren(h("span", { class: `badge ${it.label}` }, `labelled ${it.label}`));
    r.byEl.replaceChildren("by ", untrusted(it.labelled_by || "?"), ` · ${fmtTime(it.labelled_at)}`,
      it.verdict ? ` · model said ${it.verdict}` : "");
    r.spamBtn.disabled = it.label === "spam" || state.busy;
    r.hamBtn.disabled = it.label === "ham" || state.busy;
  }

  function addRows(items) {
    for (const item of items) {
      const r = { item };
      r.labelEl = h("span", { class: "label-state" });
      r.byEl = h("span", { class: "muted" });
      r.spamBtn = h("button", { type: "button", class: "spam", onclick: () => relabel(r, "spam") }, "Relabel spam");
      r.hamBtn = h("button", { type: "button", class: "ham", onclick: () => relabel(r, "ham") }, "Relabel ham");
      r.auditBtn = h("button", { type: "button", onclick: () => showAudit(r) }, "History");
      r.auditEl = h("ol", { class: "reasons audit", hidden: true });
      // The badge is what the model said when the comment was checked (absent for comments never checked).
      r.card = commentCard(item, {
        actions: [r.labelEl, r.byEl, r.spamBtn, r.hamBtn, r.auditBtn], extra: r.auditEl,
      });
      r.card.addEventListener("click", (ev) => {
        if (!ev.target.closest("button, a, input")) setCurrent(state.rows.indexOf(r));
      });
      state.rows.push(r);
      list.append(r.card);
      paint(r);
    }
  }

  async function search({ append = false } = {}) {
    const seq = ++state.seq;
    if (!append) { state.rows = []; state.cur = -1; state.cursor = null; list.replaceChildren(); }
    status(statusEl, "Searching…");
    try {
      // Plain filters are the API's; text search is the console's own (labels are not indexed by text).
      const text = q.value.trim();
      const data = await get(text ? `${paths.console}api/labels/search` : `${paths.api}/labels`, {
        q: text || undefined, site: siteSel.value, label: labelSel.value, limit: PAGE,
        cursor: append ? state.cursor : undefined,
      });
      if (seq !== state.seq) return;
      const items = data.items || [];
      const firstNew = state.rows.length;
      state.cursor = data.next_cursor || null;
      addRows(items);
      more.hidden = !state.cursor;
      if (!state.rows.length) list.append(h("li", { class: "empty" }, "No labelled comments match."));
      if (state.cur < 0 && state.rows.length) setCurrent(0);
      status(statusEl, `${state.rows.length} shown${state.cursor ? ", more available" : ""}.`);
      // Highlights exist only while a label's check is still stored.
      explain(state.rows.slice(firstNew).filter((r) => r.item.check_id)).catch(() => {});
    } catch (err) {
      if (seq === state.seq) status(statusEl, `Search failed: ${err.message}`, true);
    }
  }

  async function relabel(r, label, { record = true } = {}) {
    if (!r || state.busy || r.item.label === label) return;
    state.busy = true;
    const before = r.item.label;
    try {
      // Only the label as this page shows it: a colleague's change since is reported, not overwritten.
      const seen = { expect: before };
      if (typeof r.item.labelled_at === "number") seen.expect_at = r.item.labelled_at;
      const stored = await post(`${paths.console}api/labels/${encodeURIComponent(r.item.id)}`, { label, ...seen });
      r.item = { ...r.item, ...(stored || {}), label };
      if (record) state.history.push({ r, before });
      status(statusEl, `Relabelled ${label}.`);
    } catch (err) {
      const now = err instanceof ApiError && err.status === 409 ? err.body?.error : null;
      if (now && now.code === "label_changed") {
        if (now.label) r.item = { ...r.item, label: now.label, labelled_by: now.labelled_by };
        status(statusEl, `Not changed: ${now.message}.`, true);
      } else {
        status(statusEl, `Relabel not saved: ${err.message}`, true);
      }
    } finally {
      state.busy = false;
      state.rows.forEach(paint);
    }
  }

  async function undo() {
    const last = state.history.pop();
    if (last) await relabel(last.r, last.before, { record: false });
  }

  async function showAudit(r) {
    if (!r.auditEl.hidden) { r.auditEl.hidden = true; return; }
    try {
      const data = await get(`${paths.api}/labels/${encodeURIComponent(r.item.id)}`);
      const trail = data.audit || [];
      r.auditEl.replaceChildren(...trail.map((e) => h("li", {},
        `${fmtTime(e.at)}: ${e.from ?? "—"} → ${e.to ?? "(label removed)"} by `, untrusted(e.by || "?"))));
      r.auditEl.hidden = false;
    } catch (err) {
      status(statusEl, `Could not load the history: ${err.message}`, true);
    }
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  for (const sel of [siteSel, labelSel]) sel.addEventListener("change", () => search());
  more.addEventListener("click", () => search({ append: true }));
  document.addEventListener("keydown", keyHandler({
    "/": () => q.focus(),
    j: () => setCurrent(state.cur + 1),
    k: () => setCurrent(state.cur - 1),
    s: () => relabel(state.rows[state.cur], "spam"),
    h: () => relabel(state.rows[state.cur], "ham"),
    u: () => undo(),
  }));
  const params = new URLSearchParams(window.location.search);
  q.value = params.get("q") || "";
  labelSel.value = ["spam", "ham"].includes(params.get("label")) ? params.get("label") : "";
  fillSites(siteSel, params.get("site")).finally(() => search());
}
