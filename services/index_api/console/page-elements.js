// Elements: the elements of a de-identified object as the RSNA Anonymizer's Elements tab
// listed them (Element, Name, VR, VM, Length, Data), the transfer syntax above, sequence
// items indented by depth, a page at a time.

import { get } from "./api.js";
import { button, field, fill, h, heading, notice, pager, table } from "./ui.js";
import { objectPicker } from "./page-viewer.js";

const PER_PAGE = 100;
const MAX_DEPTH = 8;

export default {
  id: "elements",
  title: "Elements",
  permission: "status",
  render(root, ctx) {
    const message = notice();
    const picker = objectPicker(ctx, "elements", message);
    root.append(heading("Elements"), message.node, picker.node);
    if (!picker.uid) {
      root.append(h("p", { text: "Choose an object: in Index, open a patient's studies, a "
        + "study's objects, then Elements; or give its SOP Instance UID above." }));
      return undefined;
    }
    ctx.selection.uid = picker.uid;
    const syntax = h("p", { class: "syntax" });
    const find = h("input", { type: "search", spellcheck: false, autocomplete: "off" });
    const list = h("div");
    let rows = [];
    let page = 1;

    function draw() {
      const wanted = find.value.trim().toLowerCase();
      const shown = wanted ? rows.filter((r) => `${r.tag} ${r.name} ${r.keyword} ${r.value}`
        .toLowerCase().includes(wanted)) : rows;
      const start = (page - 1) * PER_PAGE;
      fill(list, table({ caption: `Elements (${shown.length})`, rows: shown.slice(start, start + PER_PAGE),
        empty: "No element matches.",
        rowClass: (r) => `depth-${Math.min(r.depth, MAX_DEPTH)}${r.meta ? " meta" : ""}`,
        columns: [
          { label: "Element", cell: (r) => h("span", { class: "tag", text: r.tag }), class: "indent" },
          { label: "Name", cell: (r) => r.name },
          { label: "VR", cell: (r) => r.vr },
          { label: "VM", cell: (r) => String(r.vm), class: "num" },
          { label: "Length", cell: (r) => String(r.length), class: "num" },
          { label: "Data", cell: (r) => r.value, class: "data" },
        ] }),
      shown.length > PER_PAGE ? pager({ page, hasMore: start + PER_PAGE < shown.length,
        label: "Pages of elements", onPage: (n) => { page = n; draw(); } }) : null);
    }

    const findForm = h("form", { class: "inline", "aria-label": "Find elements" },
      field("Find (tag, name or data)", find), h("button", { type: "submit", text: "Find" }),
      button("Show all", () => { find.value = ""; page = 1; draw(); }));
    findForm.addEventListener("submit", (event) => {
      event.preventDefault();
      page = 1;
      draw();
    });
    root.append(syntax, findForm, list,
      h("p", {}, button("View this object", () => ctx.go("viewer", picker.uid))));

    get(`/api/v1/instances/${picker.uid}/elements`).then((shown) => {
      const ts = shown.transfer_syntax;
      fill(syntax, h("strong", { text: "Transfer syntax: " }),
        `${ts.name || "unknown"} (${ts.uid})`, ` · ${shown.frames} `
        + `${shown.frames === 1 ? "frame" : "frames"}`);
      rows = [...shown.file_meta.map((r) => ({ ...r, meta: true })), ...shown.elements];
      draw();
    }).catch((error) => message.error(error));
    return undefined;
  },
};
