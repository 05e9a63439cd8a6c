// Model versions: metrics, which one serves and why each was promoted or refused, the evaluation pictures, and
// the admin actions (promote, roll back, retrain now with live progress).
import { get, paths, post } from "./api.js";
import { confusionMatrix, prCurve } from "./charts.js";
import { ask, fmtTime, h, status, untrusted } from "./dom.js";

const POLL_MS = 1000;

// The figures a version was judged by: a retrained version's challenger metrics, else what the model carries.
export function metricsOf(v) {
  const m = v.metrics;
  if (m && typeof m === "object") return m.challenger || m;
  return v.model_meta?.metrics || v.model_meta?.evaluation || {};
}

const num = (x, digits = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "—");

function whyOf(v) {
  if (v.serving || v.status === "promoted") return v.promote_reason || v.reason || "";
  return v.reason || v.promote_reason || "";
}

function stateOf(v) {
  if (v.serving) return h("span", { class: "badge ham" }, "serving");
  return h("span", { class: `badge ${v.status === "rejected" ? "spam" : ""}` }, v.status || "kept");
}

export function confusionOf(m) {
  const c = m.confusion;
  if (c && ["tp", "fp", "tn", "fn"].every((k) => Number.isFinite(c[k]))) return c;
  return null;
}

export function curveOf(m) {
  const pts = m.pr_curve;
  if (!Array.isArray(pts)) return [];
  return pts.map((p) => (Array.isArray(p) ? { precision: p[0], recall: p[1], threshold: p[2] } : p));
}

export function start(root) {
  const statusEl = root.querySelector("#status");
  const tbody = root.querySelector("#versions tbody");
  const history = root.querySelector("#history tbody");
  const prBox = root.querySelector("#pr-curve");
  const cmBox = root.querySelector("#confusion");
  const title = root.querySelector("#detail-title");
  const retrainBtn = root.querySelector("#retrain");
  const rollbackBtn = root.querySelector("#rollback");
  const job = root.querySelector("#job");
  const jobProgress = root.querySelector("#job-progress");
  const jobStatus = root.querySelector("#job-status");
  // What the page allowed this token (a token bound to one site may not change the model every site shares).
  const isAdmin = !rollbackBtn.disabled;
  const canRetrain = !retrainBtn.disabled;
  let chosen = null;
  let versions = [];


  function showDetail(v) {
    chosen = v?.version ?? null;
    for (const tr of tbody.rows) tr.classList.toggle("chosen", tr.dataset.version === chosen);
    if (!v) { prBox.replaceChildren(); cmBox.replaceChildren(); return; }
    const m = metricsOf(v);
    title.textContent = `Evaluation of ${v.version}${v.evaluation ? ` (${v.evaluation})` : ""}`;
    const c = confusionOf(m);
    // The dot marks where the serving threshold puts this model on its curve.
    const marker = c && c.tp + c.fp > 0 && c.tp + c.fn > 0
      ? { precision: c.tp / (c.tp + c.fp), recall: c.tp / (c.tp + c.fn) } : null;
    prBox.replaceChildren(prCurve({ title: `Precision–recall, ${v.version}`, points: curveOf(m), marker }));
    cmBox.replaceChildren(c
      ? confusionMatrix({ title: `Confusion matrix at ${num(m.spam_threshold ?? c.threshold, 2)}, ${v.version}`, ...c })
      : h("p", { class: "muted" }, "No confusion counts stored for this version."));
  }

  function row(v) {
    const m = metricsOf(v);
    const promote = h("button", {
      type: "button", disabled: !isAdmin || v.serving, title: isAdmin ? "serve this version" : rollbackBtn.title,
      onclick: (ev) => { ev.stopPropagation(); promoteVersion(v.version); },
    }, "Promote");
    const tr = h("tr", { class: v.serving ? "serving" : "", dataset: { version: v.version } },
      h("td", {}, h("strong", {}, v.version), v.kind ? h("div", { class: "muted" }, untrusted(v.kind)) : null),
      h("td", {}, stateOf(v)),
      h("td", {}, fmtTime(v.created_at)),
      h("td", { class: "num" }, num(m.precision)),
      h("td", { class: "num" }, num(m.recall)),
      h("td", { class: "num" }, num(m.f1)),
      h("td", { class: "num" }, num(m.mcc)),
      h("td", { class: "num" }, m.n ?? v.counts?.eval ?? "—"),
      h("td", { class: "why" }, untrusted(whyOf(v)),
        v.promoted_by || v.published_by ? h("div", { class: "muted" }, "by ", untrusted(v.promoted_by || v.published_by)) : null),
      h("td", {}, promote));
    tr.addEventListener("click", () => showDetail(v));
    return tr;
  }

  function eventRow(e) {
    const kind = { promote: "promoted", rollback: "rolled back to", reject: "refused" }[e.kind] || e.kind;
    return h("tr", {},
      h("td", {}, fmtTime(e.at)), h("td", {}, kind), h("td", {}, e.version || "(not kept)"),
      h("td", {}, e.previous || ""), h("td", {}, untrusted(e.by || "")), h("td", { class: "why" }, untrusted(e.reason || "")));
  }

  async function load({ newest = false } = {}) {
    try {
      const data = await get(`${paths.api}/models`);
      versions = data.versions || [];
      tbody.replaceChildren(...versions.map(row));
      if (!versions.length) tbody.append(h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No model versions yet.")));
      const events = [...(data.history || [])];
      for (const run of data.runs || []) {
        if (run.decision === "skip") {
          events.push({ kind: "retrain skipped", at: run.finished_at, version: "", by: run.requested_by, reason: run.why });
        }
      }
      events.sort((a, b) => (b.at || 0) - (a.at || 0));
      history.replaceChildren(...events.map(eventRow));
      const keep = (newest && versions[0]) || versions.find((v) => v.version === chosen)
        || versions.find((v) => v.serving) || versions[0];
      showDetail(keep);
      return data;
    } catch (err) {
      status(statusEl, `Could not load the models: ${err.message}`, true);
      return null;
    }
  }

  async function promoteVersion(version) {
    if (!(await ask(`Serve ${version} from now on?`, "Promote"))) return;
    try {
      await post(`${paths.api}/models/${encodeURIComponent(version)}/promote`, { reason: "promoted from the console" });
      status(statusEl, `${version} now serves.`);
    } catch (err) {
      status(statusEl, `Promotion failed: ${err.message}`, true);
    }
    load();
  }

  rollbackBtn.addEventListener("click", async () => {
    if (!(await ask("Serve the version the current one replaced?", "Roll back"))) return;
    try {
      const info = await post(`${paths.api}/models/rollback`, { reason: "rolled back from the console" });
      status(statusEl, `Rolled back: ${info.version} serves again.`);
    } catch (err) {
      status(statusEl, `Rollback failed: ${err.message}`, true);
    }
    load();
  });

  retrainBtn.addEventListener("click", async () => {
    retrainBtn.disabled = true;
    try {
      const started = await post(`${paths.api}/models/retrain`, { reason: "asked for from the console" });
      follow(started.job_id, started.status_url || `${paths.api}/jobs/${encodeURIComponent(started.job_id)}`);
    } catch (err) {
      status(statusEl, `Retrain not started: ${err.message}`, true);
      retrainBtn.disabled = !canRetrain;
    }
  });

  async function follow(jobId, url) {
    job.hidden = false;
    jobProgress.removeAttribute("value");
    jobStatus.textContent = `retrain ${jobId}: queued`;
    for (;;) {
      let s;
      try {
        s = await get(url);
      } catch (err) {
        jobStatus.textContent = `retrain ${jobId}: status unavailable (${err.message})`;
        await sleep(POLL_MS * 3);
        continue;
      }
      if (typeof s.progress === "number") jobProgress.value = s.progress;
      jobStatus.textContent = `retrain ${jobId}: ${s.status}${s.stage ? ` — ${s.stage}` : ""}`;
      if (s.status === "finished" || s.status === "failed" || s.status === "canceled" || s.status === "stopped") {
        const r = s.result || {};
        const outcome = s.status === "finished"
          ? `retrain ${jobId} finished: ${r.decision || "done"}${r.why ? ` (${r.why})` : ""}`
          : `retrain ${jobId} ${s.status}: ${s.error || ""}`;
        jobStatus.textContent = outcome;
        jobProgress.value = 1;
        status(statusEl, s.status === "finished" ? "" : outcome, s.status !== "finished");
        retrainBtn.disabled = !canRetrain;
        await load({ newest: true });
        return;
      }
      await sleep(POLL_MS);
    }
  }

  load();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
