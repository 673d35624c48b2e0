// Index: search by pseudonymous patient ID, the patients (paged), their studies and
// de-identified objects (to the Viewer and Elements), and the Excel workbook.
// A phi-reader may also ask for original values: the pseudonym lookup, or the list with
// them; each such read is recorded by the API in the audit trail.

import { blob, get, saveBlob } from "./api.js";
import { button, checkbox, day, dicomDate, field, fill, h, heading, notice, pager, table,
  when } from "./ui.js";

const PHI_NOTE = "Original values: this read is recorded in the audit trail.";

function lookupSection(ctx, message, openStudies) {
  const input = h("input", { type: "search", name: "pseudonym", maxLength: 64,
    spellcheck: false, autocomplete: "off", value: ctx.param || "" });
  const found = h("div", { class: "lookup-result", "aria-live": "polite" });
  const original = h("div", { class: "phi-result" });
  let current = null;

  async function lookUp() {
    const pseudonym = input.value.trim();
    fill(original);
    if (!pseudonym) {
      fill(found);
      return;
    }
    try {
      const patient = await get(`/api/v1/patients/${encodeURIComponent(pseudonym)}`);
      current = patient;
      message.clear();
      fill(found, h("dl", { class: "facts" },
        h("div", {}, h("dt", { text: "Pseudonymous patient ID" }),
          h("dd", { text: patient.pseudo_patient_id })),
        h("div", {}, h("dt", { text: "Pseudonymous name" }),
          h("dd", { text: patient.pseudo_patient_name })),
        h("div", {}, h("dt", { text: "Studies" }), h("dd", { text: String(patient.studies) })),
        h("div", {}, h("dt", { text: "Instances" }), h("dd", { text: String(patient.instances) })),
        h("div", {}, h("dt", { text: "Export date" }), h("dd", { text: day(patient.exported_at) || "not exported" }))),
      h("div", { class: "actions" },
        button("Studies and objects", () => openStudies(patient.pseudo_patient_id)),
        ctx.may("phi") ? button("Show original values", showOriginal, { class: "phi-button" }) : null));
    } catch (error) {
      current = null;
      fill(found);
      message.error(error);
    }
  }

  async function showOriginal() {
    if (!current) return;
    try {
      const who = await get(`/api/v1/patients/${encodeURIComponent(current.pseudo_patient_id)}/original`);
      fill(original, h("section", { class: "card phi", "aria-labelledby": "original-title" },
        h("h4", { id: "original-title", text: `Original values of ${who.pseudo_patient_id}` }),
        h("p", { class: "muted", text: PHI_NOTE }),
        h("dl", { class: "facts" },
          h("div", {}, h("dt", { text: "Original patient name" }),
            h("dd", { text: who.original_patient_name, class: "original-name" })),
          h("div", {}, h("dt", { text: "Original patient ID" }),
            h("dd", { text: who.original_patient_id })),
          h("div", {}, h("dt", { text: "Issuer" }), h("dd", { text: who.original_issuer || "—" })),
          h("div", {}, h("dt", { text: "Date offset (days)" }),
            h("dd", { text: String(who.date_offset_days) }))),
        table({ caption: "Studies", rows: who.studies, columns: [
          { label: "Pseudonymous study UID", cell: (s) => s.pseudo_study_uid, class: "uid" },
          { label: "Study date", cell: (s) => dicomDate(s.pseudo_study_date) },
          { label: "Original study date", cell: (s) => dicomDate(s.original_study_date) },
          { label: "Accession", cell: (s) => s.pseudo_accession },
          { label: "Original accession", cell: (s) => s.original_accession },
          { label: "Original study UID", cell: (s) => s.original_study_uid, class: "uid" },
        ] }),
        button("Hide original values", () => fill(original))));
    } catch (error) {
      message.error(error);
    }
  }

  const form = h("form", { class: "inline", "aria-label": "Search the patient index" },
    field("Pseudonymous patient ID", input), h("button", { type: "submit", text: "Search" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    lookUp();
  });
  if (input.value) lookUp();
  return h("section", { "aria-labelledby": "lookup-title" },
    h("h3", { id: "lookup-title", text: "Search the patient index" }), form, found, original);
}

function detailSection(ctx, message) {
  const node = h("section", { class: "detail", "aria-live": "polite" });
  let patient = null;
  let studies = [];

  async function openPatient(pseudonym) {
    patient = pseudonym;
    try {
      const answer = await get("/api/v1/studies", { patient: pseudonym, page_size: 500 });
      studies = answer.items;
      drawStudies();
      const title = node.querySelector("h3");
      if (title) title.focus();
    } catch (error) {
      message.error(error);
    }
  }

  function drawStudies(instancesOf = null, instances = null, page = 1, hasMore = false) {
    fill(node, h("h3", { text: `Studies of ${patient}`, tabIndex: -1 }),
      table({ caption: `Studies of ${patient}`, rows: studies, columns: [
        { label: "Study date", cell: (s) => dicomDate(s.pseudo_study_date) },
        { label: "Accession", cell: (s) => s.pseudo_accession },
        { label: "Study Instance UID", cell: (s) => s.pseudo_study_uid, class: "uid" },
        { label: "Series", cell: (s) => String(s.series), class: "num" },
        { label: "Instances", cell: (s) => String(s.instances), class: "num" },
        { label: "Set", cell: (s) => s.set_status },
        { label: "Exported", cell: (s) => day(s.exported_at) },
        { label: "Objects", cell: (s) => button("Objects", () => openStudy(s, 1),
          { "aria-label": `Objects of the study of ${dicomDate(s.pseudo_study_date)}` }) },
      ] }),
      instances ? instanceTable(instancesOf, instances, page, hasMore) : null);
  }

  async function openStudy(study, page) {
    try {
      const answer = await get(`/api/v1/studies/${encodeURIComponent(study.pseudo_study_uid)}/instances`,
        { page, page_size: 50 });
      drawStudies(study, answer.items, page, answer.has_more);
      const title = node.querySelector(".instances h4");
      if (title) title.focus();
    } catch (error) {
      message.error(error);
    }
  }

  function choose(study, instances, n, pageId) {
    const item = instances[n];
    Object.assign(ctx.selection, { uid: item.pseudo_sop_instance_uid,
      study: study.pseudo_study_uid, patient, list: instances.filter((i) => i.stored)
        .map((i) => i.pseudo_sop_instance_uid) });
    ctx.go(pageId, item.pseudo_sop_instance_uid);
  }

  function instanceTable(study, instances, page, hasMore) {
    return h("section", { class: "instances" },
      h("h4", { text: `Objects of the study of ${dicomDate(study.pseudo_study_date)}`, tabIndex: -1 }),
      table({ caption: "De-identified objects", rows: instances.map((i, n) => ({ ...i, n })),
        columns: [
          { label: "Modality", cell: (i) => i.modality },
          { label: "Series Instance UID", cell: (i) => i.pseudo_series_uid, class: "uid" },
          { label: "SOP Instance UID", cell: (i) => i.pseudo_sop_instance_uid, class: "uid" },
          { label: "Size", cell: (i) => `${Math.round(i.size_bytes / 1024)} KiB`, class: "num" },
          { label: "Open", cell: (i) => (i.stored ? h("span", { class: "buttons" },
            button("View", () => choose(study, instances, i.n, "viewer"),
              { "aria-label": `View object ${page * 50 - 49 + i.n}` }),
            button("Elements", () => choose(study, instances, i.n, "elements"),
              { "aria-label": `Elements of object ${page * 50 - 49 + i.n}` }))
            : "not stored") },
        ] }),
      page > 1 || hasMore ? pager({ page, hasMore, label: "Pages of objects",
        onPage: (n) => openStudy(study, n) }) : null);
  }

  return { node, openPatient };
}

export default {
  id: "index",
  title: "Index",
  permission: "status",
  render(root, ctx) {
    const message = notice();
    const detail = detailSection(ctx, message);
    const list = h("div");
    let page = 1;
    let search = "";
    let withPhi = false;

    const phi = ctx.may("phi") ? checkbox("Show original values in the list") : null;
    if (phi) {
      phi.box.addEventListener("change", () => {
        withPhi = phi.box.checked;
        load();
      });
    }

    async function load() {
      try {
        const answer = await get("/api/v1/patients", { page, page_size: 25, search,
          phi: withPhi ? "true" : "" });
        const columns = [
          { label: "Patient ID", cell: (p) => p.pseudo_patient_id },
          { label: "Patient name", cell: (p) => p.pseudo_patient_name },
        ];
        if (withPhi) {
          columns.push(
            { label: "Original name", cell: (p) => p.original?.patient_name, class: "phi" },
            { label: "Original ID", cell: (p) => p.original?.patient_id, class: "phi" });
        }
        columns.push(
          { label: "Studies", cell: (p) => String(p.studies), class: "num" },
          { label: "Instances", cell: (p) => String(p.instances), class: "num" },
          { label: "First seen", cell: (p) => when(p.first_seen) },
          { label: "Export date", cell: (p) => day(p.exported_at) },
          { label: "Studies", cell: (p) => button("Studies", () => detail.openPatient(p.pseudo_patient_id),
            { "aria-label": `Studies of ${p.pseudo_patient_id}` }) });
        fill(list,
          withPhi ? h("p", { class: "muted", text: PHI_NOTE }) : null,
          table({ caption: "Patient index", columns, rows: answer.items,
            empty: search ? "No pseudonymous ID begins with this." : "The index is empty." }),
          page > 1 || answer.has_more ? pager({ page, hasMore: answer.has_more,
            label: "Pages of the index", onPage: (n) => { page = n; load(); } }) : null);
      } catch (error) {
        message.error(error);
      }
    }

    const searchInput = h("input", { type: "search", maxLength: 64, spellcheck: false,
      autocomplete: "off" });
    const filterForm = h("form", { class: "inline", "aria-label": "Filter the list" },
      field("Pseudonymous ID begins with", searchInput),
      h("button", { type: "submit", text: "List" }));
    filterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      search = searchInput.value.trim();
      page = 1;
      load();
    });

    const workbookPhi = ctx.may("phi") ? checkbox("with original values (recorded in the audit trail)") : null;
    const download = button("Download the Excel workbook", async () => {
      download.disabled = true;
      message.info("Preparing the workbook…");
      try {
        const { blob: data, filename } = await blob("/api/v1/index.xlsx",
          workbookPhi && workbookPhi.box.checked ? { phi: "true" } : {});
        saveBlob(data, filename || "index.xlsx");
        message.info(`${filename || "index.xlsx"} downloaded.`);
      } catch (error) {
        message.error(error);
      } finally {
        download.disabled = false;
      }
    });

    root.append(heading("Index"), message.node,
      lookupSection(ctx, message, (p) => detail.openPatient(p)),
      h("section", { "aria-labelledby": "list-title" },
        h("h3", { id: "list-title", text: "Patient index list" }),
        filterForm, phi ? phi.node : null, list),
      detail.node,
      h("section", { "aria-labelledby": "workbook-title" },
        h("h3", { id: "workbook-title", text: "Excel workbook" }),
        h("p", { text: "The whole index, one row per study, with the columns of the RSNA "
          + "Anonymizer's index workbook." }),
        h("div", { class: "actions" }, download, workbookPhi ? workbookPhi.node : null)));
    load();
  },
};
