// The queue: unlabelled comments, most uncertain first, labelled with buttons or keys; every label can be undone.
import { ApiError, get, paths, post } from "./api.js";
import { commentCard } from "./cards.js";
import { explain, fillSites, keyHandler } from "./common.js";
import { h, status } from "./dom.js";

const PAGE = 50;

export function start(root) {
  const list = root.querySelector("#queue");
  const statusEl = root.querySelector("#status");
  const siteSel = root.querySelector("#filter-site");
  const verdictSel = root.querySelector("#filter-verdict");
  const more = root.querySelector("#more");
  const undoBtn = root.querySelector("#undo");
  const bulkSpam = root.querySelector("#bulk-spam");
  const bulkHam = root.querySelector("#bulk-ham");
  const count = root.querySelector("#queue-count");
  const selCount = root.querySelector("#selection-count");

  const params = new URLSearchParams(window.location.search);
  const state = { rows: [], cur: -1, cursor: null, history: [], busy: false, loadSeq: 0, loading: false };

  function row(i) { return state.rows[i]; }

  function refreshControls() {
    const selected = state.rows.filter((r) => r.selected && !r.label).length;
    bulkSpam.disabled = bulkHam.disabled = selected === 0 || state.busy;
    selCount.textContent = selected ? `${selected} selected` : "";
    undoBtn.disabled = state.history.length === 0 || state.busy;
    const open = state.rows.filter((r) => !r.label).length;
    count.textContent = `(${open} waiting${state.cursor ? ", more below" : ""})`;
  }

  function setCurrent(i, { scroll = true } = {}) {
    if (!state.rows.length) { state.cur = -1; return; }
    i = Math.max(0, Math.min(state.rows.length - 1, i));
    if (state.cur >= 0 && row(state.cur)) row(state.cur).card.classList.remove("current");
    state.cur = i;
    const card = row(i).card;
    card.classList.add("current");
    card.setAttribute("aria-current", "true");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function paint(r) {
    r.card.classList.toggle("done", Boolean(r.label));
    r.card.classList.toggle("selected", Boolean(r.selected));
    r.checkbox.checked = Boolean(r.selected);
    r.stateEl.textContent = r.label ? `labelled ${r.label}${r.by ? ` by ${r.by}` : ""}` : "";
    r.stateEl.className = `label-state badge ${r.label || ""}`;
    r.stateEl.hidden = !r.label;
    for (const b of r.buttons) b.disabled = Boolean(r.label) || state.busy;
  }

  function addRows(items) {
    for (const item of items) {
      const r = { item, label: null, selected: false };
      const spamBtn = h("button", { type: "button", class: "spam", onclick: () => act([r], "spam") }, "Spam ", h("kbd", {}, "s"));
      const hamBtn = h("button", { type: "button", class: "ham", onclick: () => act([r], "ham") }, "Ham ", h("kbd", {}, "h"));
      r.stateEl = h("span", { class: "label-state badge", hidden: true });
      r.buttons = [spamBtn, hamBtn];
      r.card = commentCard(item, { selectable: true, actions: [spamBtn, hamBtn, r.stateEl] });
      r.checkbox = r.card.querySelector("input.select");
      r.checkbox.addEventListener("change", () => { r.selected = r.checkbox.checked; paint(r); refreshControls(); });
      r.card.addEventListener("click", (ev) => {
        if (ev.target.closest("button, input, a, dialog")) return;
        setCurrent(state.rows.indexOf(r), { scroll: false });
      });
      state.rows.push(r);
      list.append(r.card);
      paint(r);
    }
  }

  async function load({ append = false } = {}) {
    const seq = ++state.loadSeq;
    state.loading = true;
    status(statusEl, "Loading…");
    try {
      const data = await get(`${paths.api}/queue`, {
        site: siteSel.value, verdict: verdictSel.value, limit: PAGE, cursor: append ? state.cursor : undefined,
      });
      if (seq !== state.loadSeq) return;
      if (!append) {  // replaced only once the new page is here: a failed reload keeps the cards on screen
        state.rows = [];
        state.cur = -1;
        list.replaceChildren();
      }
      const items = data.items || [];
      state.cursor = data.next_cursor || null;
      const firstNew = state.rows.length;
      addRows(items);
      more.hidden = !state.cursor;
      if (!items.length && state.cursor) {
        // A page of comments that expired meanwhile (dropped on the way): go on to the next one.
        state.loading = false;
        return load({ append: true });
      }
      if (!state.rows.length) {
        list.append(h("li", { class: "empty" }, "Nothing waiting for a label. "));
      }
      if (state.cur < 0 && state.rows.length) setCurrent(0, { scroll: false });
      status(statusEl, "");
      refreshControls();
      explain(state.rows.slice(firstNew)).catch((err) => status(statusEl, `Highlights unavailable: ${err.message}`, true));
    } catch (err) {
      if (seq === state.loadSeq) status(statusEl, `Could not load the queue: ${err.message}`, true);
    } finally {
      if (seq === state.loadSeq) state.loading = false;
    }
  }

  // A colleague's label that landed first (the server's 409 label_changed): shown on the card, never overwritten.
  function changed(err) {
    const e = err instanceof ApiError && err.status === 409 ? err.body?.error : null;
    return e && e.code === "label_changed" ? e : null;
  }

  function showStored(r, label, by) {
    r.label = label || null;
    r.by = by || "";
    r.selected = false;
    paint(r);
  }

  async function labelOne(r, label) {
    // Only while it is still unlabelled: a colleague may have labelled it since this page was loaded.
    const ack = await post(`${paths.api}/comments/${encodeURIComponent(r.item.id)}/label`, { label, expect: null });
    showStored(r, label, "");
    // The stamp tells this label from a colleague's same label given later: undo takes back only this one.
    return { r, prev: null, label, at: ack?.labelled_at ?? null };
  }

  // The answer was lost (a network error after the request left): ask what is stored rather than guess.
  async function storedLabel(r) {
    try {
      const stored = await get(`${paths.api}/labels/${encodeURIComponent(r.item.id)}`);
      return stored && stored.label ? stored : null;
    } catch (err) {
      return null;
    }
  }

  async function act(targets, label) {
    targets = targets.filter((r) => r && !r.label);
    if (!targets.length || state.busy) return;
    state.busy = true;
    refreshControls();
    const done = [];
    const theirs = [];
    try {
      for (const r of targets) {
        try {
          done.push(await labelOne(r, label));
        } catch (err) {
          const now = changed(err);
          if (!now) throw Object.assign(err, { row: r });
          showStored(r, now.label, now.labelled_by);
          theirs.push(now);
        }
      }
      const kept = theirs.length === 1
        ? ` ${theirs[0].labelled_by || "A colleague"} had already labelled it ${theirs[0].label}: left as it is.`
        : theirs.length ? ` ${theirs.length} were already labelled by colleagues: left as they are.` : "";
      status(statusEl, (done.length ? `Labelled ${done.length} ${label}.` : "") + kept, theirs.length > 0);
    } catch (err) {
      const stored = err instanceof ApiError ? null : await storedLabel(err.row);
      if (stored) {
        showStored(err.row, stored.label, stored.labelled_by);
        status(statusEl, `The answer was lost; stored now: ${stored.label} by ${stored.labelled_by}.`, true);
      } else {
        status(statusEl, `Label not saved: ${err.message}`, true);
      }
    } finally {
      if (done.length) state.history.push(done);
      state.busy = false;
      state.rows.forEach(paint);
      refreshControls();
    }
    if (targets.length === 1 && targets[0].label) moveToNextOpen(state.rows.indexOf(targets[0]));
  }

  function moveToNextOpen(from) {
    for (let i = from + 1; i < state.rows.length; i++) if (!row(i).label) return setCurrent(i);
    if (state.cursor && !state.loading) {  // the last card loaded: go on with the next page rather than back up
      const next = state.rows.length;
      load({ append: true }).then(() => { if (state.rows.length > next) setCurrent(next); });
      return setCurrent(from);
    }
    for (let i = from - 1; i >= 0; i--) if (!row(i).label) return setCurrent(i);
    return setCurrent(from);
  }

  async function undo() {
    const last = state.history.pop();
    if (!last || state.busy) { if (last) state.history.push(last); return; }
    state.busy = true;
    refreshControls();
    const failed = [];
    const theirs = [];
    for (const step of [...last].reverse()) {
      const { r, prev, label, at } = step;
      const id = encodeURIComponent(r.item.id);
      const mine = at === null || at === undefined ? { expect: label } : { expect: label, expect_at: at };
      try {
        // Only the label this page gave, as it gave it: a colleague's change since is theirs to keep.
        if (prev) await post(`${paths.api}/comments/${id}/label`, { label: prev, ...mine });
        else await post(`${paths.console}api/labels/${id}/undo`, mine);
        showStored(r, prev, "");
      } catch (err) {
        const now = changed(err);
        if (now) {
          showStored(r, now.label, now.labelled_by);
          theirs.push(now);
          continue;
        }
        if (err instanceof ApiError && err.status === 404) {  // already taken back (another tab, the API)
          showStored(r, null, "");
          continue;
        }
        failed.push(step);
        status(statusEl, `Undo failed: ${err.message}`, true);
      }
    }
    if (failed.length) state.history.push(failed);
    else if (theirs.length) {
      status(statusEl, `Not undone: ${theirs.map((e) => e.message).join("; ")}.`, true);
    } else status(statusEl, `Undid ${last.length} label${last.length > 1 ? "s" : ""}.`);
    state.busy = false;
    state.rows.forEach(paint);
    refreshControls();
    setCurrent(state.rows.indexOf(last[0].r));
  }

  function toggleSelect() {
    const r = row(state.cur);
    if (!r || r.label) return;
    r.selected = !r.selected;
    paint(r);
    refreshControls();
  }

  const selected = () => state.rows.filter((r) => r.selected && !r.label);

  document.addEventListener("keydown", keyHandler({
    j: () => setCurrent(state.cur + 1),
    k: () => setCurrent(state.cur - 1),
    s: () => act([row(state.cur)], "spam"),
    h: () => act([row(state.cur)], "ham"),
    u: () => undo(),
    x: () => toggleSelect(),
    S: () => act(selected(), "spam"),
    H: () => act(selected(), "ham"),
  }));
  bulkSpam.addEventListener("click", () => act(selected(), "spam"));
  bulkHam.addEventListener("click", () => act(selected(), "ham"));
  undoBtn.addEventListener("click", () => undo());
  more.addEventListener("click", () => load({ append: true }));
  root.querySelector("#reload").addEventListener("click", () => load());
  for (const sel of [siteSel, verdictSel]) sel.addEventListener("change", () => load());

  verdictSel.value = ["spam", "ham", "unsure"].includes(params.get("verdict")) ? params.get("verdict") : "";
  fillSites(siteSel, params.get("site")).finally(() => load());
}
