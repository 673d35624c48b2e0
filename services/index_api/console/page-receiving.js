// Receiving: the Storage SCP (address, AE title, state), what arrived, was de-identified or
// quarantined, refreshed every few seconds; the quarantine with its reasons, and for an
// admin release and purge.

import { get, send } from "./api.js";
import { button, checkbox, confirming, every, field, fill, h, heading, notice, pager, table,
  when } from "./ui.js";

const STATES = { listening: "listening", elsewhere: "a separate service (scp-ingest)" };

function scpBox(status) {
  const scp = status.storage_scp;
  const host = window.location.hostname || "this machine";
  const state = STATES[scp.state] || scp.state || "unknown";
  return h("section", { class: "card scp", "aria-labelledby": "scp-title" },
    h("h3", { id: "scp-title", text: "DICOM Storage SCP" }),
    h("dl", { class: "facts" },
      h("div", {}, h("dt", { text: "Address" }), h("dd", { text: `${host}:${scp.port}` })),
      h("div", {}, h("dt", { text: "AE title" }), h("dd", { text: scp.ae_title })),
      h("div", {}, h("dt", { text: "State" }), h("dd", { text: state }))));
}

function countsBox(status) {
  const facts = [
    ["Received", status.received], ["De-identified", status.deidentified],
    ["Quarantined", status.quarantined], ["Patients", status.patients],
    ["Studies", status.studies], ["Patients exported", status.exported.patients],
    ["RT sets complete", status.rt_sets.complete], ["RT sets waiting", status.rt_sets.waiting],
    ["RT sets inconsistent", status.rt_sets.inconsistent],
  ];
  return h("section", { class: "card", "aria-labelledby": "counts-title" },
    h("h3", { id: "counts-title", text: "Objects" }),
    h("dl", { class: "counts big" }, facts.map(([label, value]) => h("div", {
      "data-count": label }, h("dt", { text: label }), h("dd", { text: String(value) })))));
}

export default {
  id: "receiving",
  title: "Receiving",
  permission: "status",
  render(root, ctx) {
    const admin = ctx.may("configure");
    const message = notice();
    const updated = h("p", { class: "muted", "aria-live": "off" });
    const overview = h("div", { class: "cards" });
    const reasons = h("div", { class: "reasons" });
    const quarantine = h("div");
    const actions = h("div");
    let page = 1;
    let reason = "";
    let lastStatus = "";
    let lastList = "";

    async function loadQuarantine(force = false) {
      const answer = await get("/api/v1/quarantine", { page, page_size: 20,
        reason_code: reason });
      const json = JSON.stringify(answer);
      if (!force && json === lastList) return;
      lastList = json;
      const columns = [
        { label: "Quarantined", cell: (q) => when(q.quarantined_at) },
        { label: "Stage", cell: (q) => q.stage },
        { label: "Reason", cell: (q) => h("span", {}, h("strong", { text: q.reason_code }),
          h("br"), q.reason) },
        { label: "Object", cell: (q) => h("code", { class: "key", text: q.key }) },
      ];
      if (admin) {
        columns.push({ label: "Release", cell: (q) => releaseCell(q) });
      }
      fill(quarantine,
        table({ caption: `Quarantined objects${reason ? ` (${reason})` : ""}`, columns,
          rows: answer.items, empty: "Nothing is quarantined." }),
        page > 1 || answer.has_more ? pager({ page, hasMore: answer.has_more,
          label: "Pages of the quarantine",
          onPage: (n) => { page = n; loadQuarantine(true).catch((e) => message.error(e)); } })
          : null);
    }

    function releaseCell(entry) {
      const burned = entry.reason_code === "burned-in-annotation";
      const accept = burned ? checkbox("accept burned-in annotation") : null;
      const go = button("Release", async () => {
        go.disabled = true;
        try {
          await send("POST", "/api/v1/quarantine/release", { json: {
            key: entry.key, accept_burned_in_annotation: Boolean(accept && accept.box.checked) } });
          message.info("Released: the object goes through de-identification again.");
          await refresh(true);
        } catch (error) {
          message.error(error);
        } finally {
          go.disabled = false;
        }
      }, { "aria-label": `Release the object quarantined ${when(entry.quarantined_at)}` });
      return h("div", { class: "stack" }, accept ? accept.node : null, go);
    }

    function drawReasons(status) {
      const chips = status.quarantine_reasons.map((r) => button(
        `${r.reason_code}: ${r.objects}`, () => {
          reason = reason === r.reason_code ? "" : r.reason_code;
          page = 1;
          drawReasons(status);
          loadQuarantine(true).catch((e) => message.error(e));
        }, { "aria-pressed": reason === r.reason_code ? "true" : "false", class: "chip" }));
      fill(reasons, chips.length ? h("div", { class: "chips", role: "group",
        "aria-label": "Show only one reason" }, chips) : null);
    }

    async function refresh(force = false) {
      try {
        const status = await get("/api/v1/status");
        const json = JSON.stringify(status);
        if (force || json !== lastStatus) {
          lastStatus = json;
          fill(overview, scpBox(status), countsBox(status));
          drawReasons(status);
        }
        await loadQuarantine(force);
        updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every 3 s.`;
      } catch (error) {
        message.error(error);
      }
    }

    if (admin) {
      const days = h("input", { type: "number", min: 0, max: 36500, step: 1, name: "days" });
      actions.append(h("section", { class: "card", "aria-labelledby": "purge-title" },
        h("h3", { id: "purge-title", text: "Purge the quarantine" }),
        field("Only objects older than (days)", days, "empty: every quarantined object"),
        confirming("Purge…", "Delete them for good", async () => {
          try {
            const older = days.value === "" ? null : Number(days.value);
            const done = await send("POST", "/api/v1/quarantine/purge",
              { json: { older_than_days: older } });
            message.info(`${done.purged} quarantined ${done.purged === 1 ? "object" : "objects"} deleted.`);
            await refresh(true);
          } catch (error) {
            message.error(error);
          }
        })));
    }

    root.append(heading("Receiving"), updated, message.node, overview,
      h("section", { "aria-labelledby": "quarantine-title" },
        h("h3", { id: "quarantine-title", text: "Quarantine" }), reasons, quarantine),
      actions);
    const stop = every(3000, () => refresh(false));
    return stop;
  },
};
