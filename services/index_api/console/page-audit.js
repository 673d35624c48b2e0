// Audit (admin): the audit trail, newest first, a page at a time. Reading it is audited too.

import { get } from "./api.js";
import { button, field, fill, h, heading, notice, table, when } from "./ui.js";

const PER_PAGE = 50;

function detail(values) {
  const entries = Object.entries(values || {});
  return entries.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join("; ");
}

export default {
  id: "audit",
  title: "Audit",
  permission: "configure",
  group: "admin",
  render(root) {
    const message = notice();
    const list = h("div");
    const actor = h("input", { type: "search", maxLength: 80, spellcheck: false,
      autocomplete: "off" });
    const since = h("input", { type: "date" });
    const pages = [0]; // the `before` of each page shown so far (0: the newest)

    async function load() {
      try {
        const before = pages[pages.length - 1];
        const answer = await get("/api/v1/audit", { limit: PER_PAGE + 1, before: before || "",
          actor: actor.value.trim(), since: since.value });
        const rows = answer.items.slice(0, PER_PAGE);
        const more = answer.items.length > PER_PAGE;
        fill(list, table({ caption: "Audit trail, newest first", rows, empty: "No record.",
          rowClass: (e) => (e.outcome !== "ok" ? "refused" : ""), columns: [
            { label: "Record", cell: (e) => String(e.id), class: "num" },
            { label: "When", cell: (e) => when(e.at), class: "when" },
            { label: "Who", cell: (e) => e.actor },
            { label: "Role", cell: (e) => e.role },
            { label: "From", cell: (e) => e.client },
            { label: "Action", cell: (e) => e.action },
            { label: "Target", cell: (e) => e.target, class: "uid" },
            { label: "Outcome", cell: (e) => h("span", { class: `state ${e.outcome}`, text: e.outcome }) },
            { label: "Status", cell: (e) => (e.status === null ? "" : String(e.status)), class: "num" },
            { label: "Detail", cell: (e) => detail(e.detail), class: "data" },
          ] }),
        h("nav", { class: "pager", "aria-label": "Pages of the audit trail" },
          button("Newer records", () => { pages.pop(); load(); }, { disabled: pages.length <= 1 }),
          h("span", { class: "page-number", text: `Page ${pages.length}` }),
          button("Older records", () => { pages.push(rows[rows.length - 1].id); load(); },
            { disabled: !more })));
        message.clear();
      } catch (error) {
        message.error(error);
      }
    }

    const form = h("form", { class: "inline", "aria-label": "Which records" },
      field("Who (token name)", actor), field("Since", since),
      h("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      pages.length = 1;
      load();
    });
    root.append(heading("Audit trail"), h("p", { text: "Every read of original values, "
      + "every change of configuration or tokens, every query, retrieve and export, and "
      + "every refusal of those. It holds no original value." }), form, message.node, list);
    load();
  },
};
