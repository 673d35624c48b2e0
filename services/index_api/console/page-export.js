// Export: the patients with their export dates, selection (all not exported), Export, the
// export switch, and each export job's progress and failures patient by patient.

import { get, send } from "./api.js";
import { jobsPanel } from "./jobs.js";
import { button, checkbox, day, field, fill, h, heading, notice, pager, table, when } from "./ui.js";

export default {
  id: "export",
  title: "Export",
  permission: "commands",
  render(root) {
    const message = notice();
    const list = h("div");
    const count = h("span", { class: "muted", "aria-live": "polite" });
    const boxes = new Map();
    let page = 1;
    let shown = [];
    let filter = "";
    let search = "";

    const jobs = jobsPanel("export", { title: "Exports",
      onFinished: () => load().catch((e) => message.error(e)) });

    const enabled = checkbox("Export enabled");
    const switchNote = h("span", { class: "muted", "aria-live": "polite" });
    enabled.box.addEventListener("change", async () => {
      const wanted = enabled.box.checked;
      enabled.box.disabled = true;
      try {
        const answer = await send("PUT", "/api/v1/export/enabled", { json: { enabled: wanted } });
        enabled.box.checked = answer.enabled;
        switchNote.textContent = answer.enabled ? "Export is on."
          : "Export is off: requests are refused and waiting items are kept until it is on.";
      } catch (error) {
        enabled.box.checked = !wanted;
        message.error(error);
      } finally {
        enabled.box.disabled = false;
      }
    });
    enabled.box.disabled = true; // until the API has said whether it is on
    get("/api/v1/export/enabled").then((answer) => {
      enabled.box.disabled = false;
      enabled.box.checked = answer.enabled;
      switchNote.textContent = answer.enabled ? "Export is on." : "Export is off.";
    }).catch((e) => message.error(e));

    function selected() {
      return shown.filter((p) => boxes.get(p.pseudo_patient_id)?.checked)
        .map((p) => p.pseudo_patient_id);
    }

    function updateCount() {
      count.textContent = `${selected().length} selected on this page`;
    }

    async function load() {
      const answer = await get("/api/v1/patients", { page, page_size: 50,
        exported: filter, search });
      shown = answer.items;
      const before = new Set(selected());
      boxes.clear();
      const columns = [
        { label: "Select", cell: (p) => {
          const box = h("input", { type: "checkbox", checked: before.has(p.pseudo_patient_id),
            "aria-label": `Select ${p.pseudo_patient_id}`, on: { change: updateCount } });
          boxes.set(p.pseudo_patient_id, box);
          return box;
        } },
        { label: "Patient ID", cell: (p) => p.pseudo_patient_id },
        { label: "Studies", cell: (p) => String(p.studies), class: "num" },
        { label: "Instances", cell: (p) => String(p.instances), class: "num" },
        { label: "First seen", cell: (p) => day(p.first_seen) },
        { label: "Export date", cell: (p) => (p.exported_at
          ? h("time", { dateTime: p.exported_at, title: when(p.exported_at),
            text: day(p.exported_at) }) : "") },
      ];
      fill(list, table({ caption: "Patients", columns, rows: shown,
        empty: "No patient matches.", rowClass: (p) => (p.exported_at ? "done" : "") }),
      page > 1 || answer.has_more ? pager({ page, hasMore: answer.has_more,
        label: "Pages of patients", onPage: (n) => { page = n; load().catch((e) => message.error(e)); } })
        : null);
      updateCount();
    }

    const force = checkbox("Send again patients already exported");
    async function exportPatients(body, what) {
      try {
        const started = await send("POST", "/api/v1/exports", { json: body });
        message.info(`Export ${started.job} started for ${what}; its progress is below.`);
        jobs.watch(started.job);
        for (const box of boxes.values()) box.checked = false;
        updateCount();
      } catch (error) {
        message.error(error);
      }
    }

    const searchInput = h("input", { type: "search", maxLength: 64, spellcheck: false,
      autocomplete: "off" });
    const which = h("select", {},
      h("option", { value: "", text: "every patient" }),
      h("option", { value: "false", text: "not exported" }),
      h("option", { value: "true", text: "exported" }));
    const filters = h("form", { class: "inline", "aria-label": "Which patients" },
      field("Pseudonymous ID begins with", searchInput), field("Show", which),
      h("button", { type: "submit", text: "Show" }));
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      search = searchInput.value.trim();
      filter = which.value;
      page = 1;
      load().catch((e) => message.error(e));
    });

    root.append(heading("Export"),
      h("div", { class: "switch" }, enabled.node, " ", switchNote),
      message.node, filters,
      h("div", { class: "actions" },
        button("Select all not exported", () => {
          for (const p of shown) boxes.get(p.pseudo_patient_id).checked = !p.exported_at;
          updateCount();
        }),
        button("Select none", () => {
          for (const b of boxes.values()) b.checked = false;
          updateCount();
        }),
        button("Export the selected patients", () => {
          const patients = selected();
          if (!patients.length) {
            message.info("Select at least one patient first.");
            return;
          }
          exportPatients({ patients, force: force.box.checked },
            `${patients.length} ${patients.length === 1 ? "patient" : "patients"}`);
        }, { class: "primary" }),
        button("Export every patient not yet exported", () => exportPatients(
          { all_pending: true }, "every patient not yet exported")),
        count),
      force.node, list, jobs.node);
    load().catch((e) => message.error(e));
    return () => jobs.stop();
  },
};
