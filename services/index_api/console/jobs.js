// The jobs of one kind (retrieves or exports) with their progress item by item, polled
// while the page is shown: every second while one runs, every five seconds otherwise.

import { get } from "./api.js";
import { every, h, fill, notice, pager, table, when } from "./ui.js";

const OPEN = new Set(["queued", "running"]);
const ITEMS_PER_PAGE = 20;

// An export item counts the instances to send (expected), those the destination accepted
// (verified: sent) and those refused (failed); a retrieve item counts them as the PACS
// sent them (completed, failed, remaining) and as they arrived (verified, missing).

function unsent(counted) {
  return Math.max(0, (counted.expected || 0) - (counted.verified || 0) - (counted.failed || 0));
}

function progress(job) {
  const t = job.totals || {};
  const expected = t.expected || 0;
  if (!expected) return { value: t.items_finished || 0, max: t.items || 1, unit: "items" };
  const done = job.kind === "export" ? (t.verified || 0) + (t.failed || 0)
    : (t.completed || 0) + (t.failed || 0);
  return { value: Math.min(done, expected), max: expected, unit: "instances" };
}

function summary(job) {
  const t = job.totals || {};
  const p = progress(job);
  const parts = [`${job.kind === "export" ? "Export" : "Retrieve"} ${job.id}: ${job.status}`,
    `${p.value} of ${p.max} ${p.unit}`];
  if (job.kind === "export") {
    parts.push(`${t.verified || 0} sent`, `${t.failed || 0} failed`, `${unsent(t)} remaining`);
  } else {
    parts.push(`${t.remaining || 0} remaining`, `${t.completed || 0} completed`,
      `${t.failed || 0} failed`, `${t.verified || 0} verified`, `${t.missing || 0} missing`);
  }
  return parts.join(", ");
}

function counts(job) {
  const t = job.totals || {};
  const shown = job.kind === "export"
    ? [["instances", t.expected], ["sent", t.verified], ["failed", t.failed],
      ["remaining", unsent(t)]]
    : ["expected", "remaining", "completed", "failed", "verified", "missing"]
      .map((name) => [name, t[name]]);
  return h("dl", { class: "counts" }, shown.map(([name, value]) => h("div", {},
    h("dt", { text: name }), h("dd", { text: String(value || 0) }))));
}

function itemColumns(kind) {
  const status = { label: "Status", cell: (i) => h("span", { class: `state ${i.status}`, text: i.status }) };
  if (kind === "export") {
    return [
      { label: "Patient", cell: (i) => i.key },
      status,
      { label: "Instances", cell: (i) => String(i.expected ?? 0), class: "num" },
      { label: "Sent", cell: (i) => String(i.verified ?? 0), class: "num" },
      { label: "Failed", cell: (i) => String(i.failed ?? 0), class: "num" },
      { label: "Remaining", cell: (i) => String(unsent(i)), class: "num" },
      { label: "Message", cell: (i) => i.message },
    ];
  }
  return [
    { label: "Item", cell: (i) => String(i.position), class: "num" },
    { label: "Line", cell: (i) => (i.line ? String(i.line) : ""), class: "num" },
    status,
    { label: "Expected", cell: (i) => String(i.expected ?? 0), class: "num" },
    { label: "Verified", cell: (i) => String(i.verified ?? 0), class: "num" },
    { label: "Missing", cell: (i) => String(i.missing ?? 0), class: "num" },
    { label: "Remaining", cell: (i) => String(i.remaining ?? 0), class: "num" },
    { label: "Failed", cell: (i) => String(i.failed ?? 0), class: "num" },
    { label: "Message", cell: (i) => i.message },
  ];
}

/**
 * A panel of jobs of `kind`; `onFinished(job)` is called when a job seen open finishes.
 * Returns {node, refresh(), stop()}.
 */
export function jobsPanel(kind, { title, onFinished } = {}) {
  const message = notice();
  const list = h("div", { class: "jobs-list" });
  const pages = h("div");
  const node = h("section", { class: "jobs", "aria-labelledby": `jobs-${kind}` },
    h("h3", { id: `jobs-${kind}`, text: title || "Jobs" }), message.node, list, pages);
  const shown = new Map(); // job id -> {json, section, itemPage}
  const seenOpen = new Set();
  let page = 1;
  let anyOpen = false;

  function renderJob(job, state) {
    const p = progress(job);
    const live = h("p", { class: "job-summary", "aria-live": "polite", text: summary(job) });
    const bar = h("progress", { max: p.max, value: p.value, "aria-label": `Job ${job.id} progress` });
    const items = job.items || [];
    const start = (state.itemPage - 1) * ITEMS_PER_PAGE;
    const slice = items.slice(start, start + ITEMS_PER_PAGE);
    const missing = items.filter((i) => (i.missing || 0) > 0 || i.status === "failed");
    const section = h("article", { class: `job ${job.status}`, "data-job": String(job.id) },
      h("h4", {}, `${kind === "export" ? "Export" : "Retrieve"} ${job.id} `,
        h("span", { class: `state ${job.status}`, text: job.status })),
      h("p", { class: "muted", text: `${job.summary} · asked ${when(job.created_at)}`
        + (job.finished_at ? ` · finished ${when(job.finished_at)}` : "") }),
      bar, live, counts(job),
      missing.length ? h("p", { class: "warn", text: `${missing.length} item(s) failed or have `
        + "missing instances; see their messages below." }) : null,
      table({ caption: `Items of job ${job.id}`, columns: itemColumns(kind), rows: slice,
        empty: "No items." }),
      items.length > ITEMS_PER_PAGE ? pager({ page: state.itemPage,
        hasMore: start + ITEMS_PER_PAGE < items.length, label: `Items of job ${job.id}`,
        onPage: (n) => { state.itemPage = n; state.json = ""; draw(job); } }) : null);
    return section;
  }

  function draw(job) {
    const state = shown.get(job.id) || { json: "", section: null, itemPage: 1 };
    const json = JSON.stringify(job);
    if (state.json === json && state.section) return state.section;
    const section = renderJob(job, state);
    if (state.section && state.section.isConnected) {
      // Keep focus inside the job if the user was there.
      const focused = state.section.contains(document.activeElement)
        ? document.activeElement.textContent : null;
      state.section.replaceWith(section);
      if (focused) {
        const again = [...section.querySelectorAll("button")].find((b) => b.textContent === focused);
        if (again && !again.disabled) again.focus();
      }
    }
    state.json = json;
    state.section = section;
    shown.set(job.id, state);
    return section;
  }

  async function refresh() {
    try {
      const answer = await get("/api/v1/jobs", { kind, page, page_size: 5 });
      message.clear();
      anyOpen = answer.items.some((j) => OPEN.has(j.status));
      const sections = answer.items.map((job) => {
        if (OPEN.has(job.status)) seenOpen.add(job.id);
        else if (seenOpen.delete(job.id) && onFinished) onFinished(job);
        return draw(job);
      });
      const current = [...list.children];
      if (sections.length !== current.length || sections.some((s, n) => s !== current[n])) {
        fill(list, sections.length ? sections : h("p", { class: "muted", text: "No jobs yet." }));
      }
      fill(pages, page > 1 || answer.has_more ? pager({ page, hasMore: answer.has_more,
        label: `Pages of ${kind} jobs`, onPage: (n) => { page = n; refresh(); } }) : null);
    } catch (error) {
      message.error(error);
    }
  }

  const stop = every(() => (anyOpen ? 1000 : 5000), refresh);
  return {
    node, refresh,
    stop,
    watch(id) { seenOpen.add(id); page = 1; refresh(); },
  };
}
