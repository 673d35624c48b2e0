// Query / Retrieve: query the PACS, pick studies, retrieve them; or retrieve an accession
// list or a batch spreadsheet. The jobs below show their progress.
//
// An operator sees each study by its modalities and counts (and, once imported, its
// pseudonyms); a phi-reader may switch on the original values, each query then audited.

import { send } from "./api.js";
import { jobsPanel } from "./jobs.js";
import { button, checkbox, dicomDate, field, fill, h, heading, notice, pager, table } from "./ui.js";

const PER_PAGE = 50;
const MODALITIES = ["CT", "MR", "CR", "DX", "MG", "US", "NM", "PT", "XA", "RF", "RTSTRUCT",
  "RTPLAN", "RTDOSE", "RTIMAGE", "SR", "OT"];

function digits(dateInput) {
  return dateInput.value ? dateInput.value.replaceAll("-", "") : "";
}

function queryForm(ctx, results, message, retrieved) {
  const name = h("input", { type: "text", name: "patient_name", autocomplete: "off",
    spellcheck: false, maxLength: 64 });
  const id = h("input", { type: "text", name: "patient_id", autocomplete: "off",
    spellcheck: false, maxLength: 64 });
  const from = h("input", { type: "date", name: "date_from" });
  const to = h("input", { type: "date", name: "date_to" });
  const accession = h("input", { type: "text", name: "accession", autocomplete: "off",
    spellcheck: false, maxLength: 64 });
  const modality = h("input", { type: "text", name: "modality", list: "modalities",
    autocomplete: "off", maxLength: 16 });
  const phi = ctx.may("phi") ? checkbox("Show original values (each query with them is "
    + "recorded in the audit trail)", { name: "phi" }) : null;
  const go = h("button", { type: "submit", text: "Query" });
  const form = h("form", { class: "query-form", "aria-label": "Query the PACS" },
    h("div", { class: "grid" },
      field("Patient name", name, "* matches any characters"),
      field("Patient ID", id),
      field("Study date from", from),
      field("Study date to", to, "one date, or both for a range"),
      field("Accession number", accession),
      field("Modality", modality)),
    h("datalist", { id: "modalities" }, MODALITIES.map((m) => h("option", { value: m }))),
    phi ? phi.node : null,
    h("div", { class: "actions" }, go,
      button("Clear the query fields", () => {
        form.reset();
        message.clear();
      })));
  let found = [];
  let shownPhi = false;
  let page = 1;
  const chosen = new Set(); // the refs ticked, on every page of the results

  function selected() {
    return found.filter((s) => chosen.has(s.ref));
  }

  function choose(rows) {
    chosen.clear();
    for (const s of rows) chosen.add(s.ref);
    draw();
  }

  const count = h("span", { class: "muted", "aria-live": "polite" });
  const retrieve = button("Retrieve the selected studies", async () => {
    const refs = selected().map((s) => s.ref);
    if (!refs.length) {
      message.info("Select at least one study first.");
      return;
    }
    retrieve.disabled = true;
    try {
      const started = await send("POST", "/api/v1/retrieves", { json: { refs } });
      message.info(`Retrieve ${started.job} started for ${started.items} `
        + `${started.items === 1 ? "study" : "studies"}; its progress is below.`);
      retrieved(started.job);
      choose([]);
    } catch (error) {
      message.error(error);
    } finally {
      retrieve.disabled = false;
    }
  });

  function updateCount() {
    const n = selected().length;
    count.textContent = `${n} of ${found.length} selected`;
  }

  function draw() {
    const columns = [
      { label: "Select", cell: (s) => {
        const box = h("input", { type: "checkbox", "aria-label": `Select study ${s.n}`,
          checked: chosen.has(s.ref) });
        box.addEventListener("change", () => {
          if (box.checked) chosen.add(s.ref);
          else chosen.delete(s.ref);
          updateCount();
        });
        return box;
      } },
      { label: "Study", cell: (s) => String(s.n), class: "num" },
    ];
    if (shownPhi) {
      columns.push(
        { label: "Patient name", cell: (s) => s.original.patient_name, class: "phi" },
        { label: "Patient ID", cell: (s) => s.original.patient_id, class: "phi" },
        { label: "Study date", cell: (s) => dicomDate(s.original.study_date), class: "phi" },
        { label: "Accession", cell: (s) => s.original.accession, class: "phi" },
        { label: "Description", cell: (s) => s.original.description, class: "phi" });
    }
    columns.push(
      { label: "Modalities", cell: (s) => s.modalities.join(", ") },
      { label: "Series", cell: (s) => (s.series ?? "").toString(), class: "num" },
      { label: "Images", cell: (s) => (s.instances ?? "").toString(), class: "num" },
      { label: "Already imported", cell: (s) => (s.already_imported
        ? h("span", { class: "imported" }, "Yes",
          s.pseudo_patient_id ? [" (as ", h("a", {
            href: `#/index/${encodeURIComponent(s.pseudo_patient_id)}`,
            text: s.pseudo_patient_id }), ")"] : "")
        : "No") });
    const start = (page - 1) * PER_PAGE;
    fill(results,
      h("div", { class: "actions" },
        button("Select all", () => choose(found)),
        button("Select none", () => choose([])),
        button("Select those not imported", () => choose(found.filter((s) => !s.already_imported))),
        retrieve, count),
      table({ caption: `Studies found on the PACS (${found.length})`, columns,
        rows: found.slice(start, start + PER_PAGE),
        empty: "The PACS has no study matching the query.",
        rowClass: (s) => (s.already_imported ? "done" : "") }),
      found.length > PER_PAGE ? pager({ page, hasMore: start + PER_PAGE < found.length,
        label: "Pages of the results", onPage: (n) => { page = n; draw(); } }) : null);
    updateCount();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [key, input] of [["patient_name", name], ["patient_id", id],
      ["accession", accession], ["modality", modality]]) {
      if (input.value.trim()) body[key] = input.value.trim();
    }
    const start = digits(from);
    const end = digits(to);
    if (start || end) body.study_date = start === end ? start : `${start}-${end}`;
    if (!Object.keys(body).length) {
      message.info("Fill in at least one query field (* alone matches every patient name).");
      return;
    }
    go.disabled = true;
    message.info("Querying the PACS…");
    try {
      const wantPhi = Boolean(phi && phi.box.checked);
      const answer = await send("POST", "/api/v1/query",
        { json: body, query: wantPhi ? { phi: "true" } : {} });
      found = answer.studies.map((s, n) => ({ ...s, n: n + 1 }));
      shownPhi = wantPhi;
      page = 1;
      chosen.clear();
      draw();
      const imported = found.filter((s) => s.already_imported).length;
      message.info(`${found.length} ${found.length === 1 ? "study" : "studies"} found, `
        + `${imported} already imported.`);
    } catch (error) {
      message.error(error);
    } finally {
      go.disabled = false;
    }
  });
  if (phi) {
    phi.box.addEventListener("change", () => {
      if (!phi.box.checked && shownPhi) {
        // Original values leave the page as soon as the switch is off.
        found = found.map(({ original, ...rest }) => rest);
        shownPhi = false;
        draw();
      }
    });
  }
  return form;
}

function accessionForm(message, retrieved) {
  const text = h("textarea", { rows: 10, cols: 50, spellcheck: false, name: "accessions",
    placeholder: "// One accession number per line; SI: before a Study Instance UID.\n"
      + "// Blank lines and everything after // are ignored." });
  const file = h("input", { type: "file", accept: ".txt,.csv,text/plain,text/csv" });
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    text.value = await chosen.text();
    message.info(`${chosen.name} opened: review the list, then retrieve it.`);
  });
  const go = h("button", { type: "submit", text: "Retrieve the accession list" });
  const lines = h("div", { class: "lines" });
  const form = h("form", { "aria-label": "Retrieve an accession list" },
    field("Accession numbers, one per line", text),
    field("Or open an accession list file", file),
    h("div", { class: "actions" }, go), lines);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!text.value.trim()) {
      message.info("The list is empty: type, paste or open a list first.");
      return;
    }
    go.disabled = true;
    try {
      const started = await send("POST", "/api/v1/retrieves/accession-list",
        { text: text.value });
      const duplicates = (started.lines || []).filter((l) => l.status === "duplicate");
      message.info(`Retrieve ${started.job} started for ${started.items} `
        + `${started.items === 1 ? "key" : "keys"}; its progress is below.`);
      fill(lines, duplicates.length ? h("ul", {}, duplicates.map((l) => h("li", {
        text: `Line ${l.line}: the same key as line ${l.duplicate_of}, retrieved once.` })))
        : null);
      retrieved(started.job);
    } catch (error) {
      message.error(error);
    } finally {
      go.disabled = false;
    }
  });
  return form;
}

function batchForm(message, retrieved) {
  const file = h("input", { type: "file", required: true,
    accept: ".xlsx,.csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet,text/csv" });
  const go = h("button", { type: "submit", text: "Retrieve every row" });
  const form = h("form", { "aria-label": "Retrieve a batch spreadsheet" },
    h("p", { text: "A spreadsheet (xlsx or CSV) with a patient ID, accession number, study "
      + "date or modality per row, or the results file of a batch query: one retrieve per row." }),
    field("Batch spreadsheet", file), h("div", { class: "actions" }, go));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files && file.files[0];
    if (!chosen) {
      message.info("Choose a spreadsheet first.");
      return;
    }
    const upload = new FormData();
    upload.append("file", chosen, chosen.name);
    go.disabled = true;
    try {
      const started = await send("POST", "/api/v1/retrieves/batch", { form: upload });
      message.info(`Retrieve ${started.job} started for ${started.items} `
        + `${started.items === 1 ? "row" : "rows"}; its progress is below.`);
      retrieved(started.job);
      form.reset();
    } catch (error) {
      message.error(error);
    } finally {
      go.disabled = false;
    }
  });
  return form;
}

export default {
  id: "query",
  title: "Query / Retrieve",
  permission: "commands",
  render(root, ctx) {
    const message = notice();
    const jobs = jobsPanel("retrieve", { title: "Retrieves" });
    const retrieved = (job) => jobs.watch(job);
    const results = h("div", { class: "results" });
    const modes = [
      ["Query the PACS", h("div", {}, queryForm(ctx, results, message, retrieved), results)],
      ["Accession list", accessionForm(message, retrieved)],
      ["Batch spreadsheet", batchForm(message, retrieved)],
    ];
    const panel = h("div", { class: "mode-panel" });
    const switches = modes.map(([label, content], n) => button(label, () => choose(n),
      { "aria-pressed": n === 0 ? "true" : "false", class: "mode" }));
    function choose(n) {
      switches.forEach((b, m) => b.setAttribute("aria-pressed", m === n ? "true" : "false"));
      fill(panel, modes[n][1]);
      message.clear();
    }
    choose(0);
    root.append(heading("Query / Retrieve"),
      h("div", { class: "modes", role: "group", "aria-label": "Mode" }, switches),
      message.node, panel, jobs.node);
    return () => jobs.stop();
  },
};
