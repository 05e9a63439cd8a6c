// Activity over the last days: checks and the model's verdicts, the spam rate, labels and who gave them.
import { get, paths } from "./api.js";
import { barChart, COLORS, hbarChart, rateChart } from "./charts.js";
import { fillSites } from "./common.js";
import { h, status } from "./dom.js";

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

export function start(root) {
  const statusEl = root.querySelector("#status");
  const siteSel = root.querySelector("#filter-site");
  const daysSel = root.querySelector("#filter-days");
  const kpis = root.querySelector("#kpis");
  const boxes = {
    checks: root.querySelector("#chart-checks"),
    rate: root.querySelector("#chart-spam-rate"),
    labels: root.querySelector("#chart-labels"),
    moderators: root.querySelector("#chart-moderators"),
  };

  function kpi(value, label) {
    return h("div", { class: "kpi" }, h("div", { class: "v" }, value), h("div", { class: "k" }, label));
  }

  async function load() {
    status(statusEl, "Loading…");
    try {
      const d = await get(`${paths.console}api/activity`, { days: daysSel.value, site: siteSel.value });
      const v = d.verdicts;
      const spamRate = d.days.map((_, i) => (d.checks[i] ? v.spam[i] / d.checks[i] : null));
      const totalChecks = sum(d.checks);
      kpis.replaceChildren(
        kpi(String(totalChecks), "checks"),
        kpi(totalChecks ? `${((sum(v.spam) / totalChecks) * 100).toFixed(1)}%` : "—", "judged spam"),
        kpi(String(sum(v.unsure)), "unsure"),
        kpi(String(sum(d.labels)), "labels given"),
      );
      boxes.checks.replaceChildren(barChart({
        title: "Checks per day", days: d.days,
        series: [{ name: "ham", values: v.ham, color: COLORS.ham }, { name: "unsure", values: v.unsure, color: COLORS.unsure },
          { name: "spam", values: v.spam, color: COLORS.spam }],
      }));
      boxes.rate.replaceChildren(rateChart({
        title: "Spam rate", days: d.days, series: [{ name: "spam share of checks", values: spamRate, color: COLORS.spam }],
      }));
      boxes.labels.replaceChildren(barChart({
        title: "Labels per day", days: d.days,
        series: [{ name: "ham", values: d.labelled.ham, color: COLORS.ham }, { name: "spam", values: d.labelled.spam, color: COLORS.spam }],
      }));
      const rows = Object.entries(d.moderators).map(([name, value]) => ({ name, value })).sort((a, b) => b.value - a.value);
      boxes.moderators.replaceChildren(hbarChart({ title: "Labels per moderator", rows: rows.slice(0, 15) }));
      status(statusEl, "");
    } catch (err) {
      status(statusEl, `Could not load activity: ${err.message}`, true);
    }
  }

  siteSel.addEventListener("change", load);
  daysSel.addEventListener("change", load);
  fillSites(siteSel, new URLSearchParams(window.location.search).get("site")).finally(load);
}
