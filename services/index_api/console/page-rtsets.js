// RT sets: each study's set (complete, waiting for objects, inconsistent) and its problems.

import { get } from "./api.js";
import { field, fill, h, heading, notice, pager, table, when } from "./ui.js";

function problems(list) {
  if (!list || !list.length) return "";
  return h("ul", { class: "problems" }, list.map((p) => h("li", {},
    typeof p === "string" ? p : [h("strong", { text: p.code || "problem" }),
      p.modality ? ` (${p.modality})` : "", p.detail ? `: ${p.detail}` : "",
      p.object_uid ? h("span", { class: "uid muted", text: ` · object ${p.object_uid}` }) : null])));
}

export default {
  id: "rt-sets",
  title: "RT sets",
  permission: "status",
  render(root) {
    const message = notice();
    const list = h("div");
    let page = 1;
    const status = h("select", { name: "status" },
      h("option", { value: "", text: "every status" }),
      h("option", { value: "inconsistent", text: "inconsistent" }),
      h("option", { value: "waiting", text: "waiting" }),
      h("option", { value: "complete", text: "complete" }));
    const study = h("input", { type: "search", maxLength: 64, spellcheck: false,
      autocomplete: "off" });

    async function load() {
      try {
        const answer = await get("/api/v1/rt-sets", { page, page_size: 25,
          status: status.value, study: study.value.trim() });
        fill(list, table({ caption: "Sets by study, last checked first", rows: answer.items,
          empty: "No set matches.", rowClass: (s) => s.status, columns: [
            { label: "Study Instance UID (pseudonymous)", cell: (s) => s.pseudo_study_uid, class: "uid" },
            { label: "Kind", cell: (s) => (s.kind === "rt" ? "RT set" : "other objects") },
            { label: "Status", cell: (s) => h("span", { class: `state ${s.status}`, text: s.status }) },
            { label: "Objects", cell: (s) => String(s.objects), class: "num" },
            { label: "Problems", cell: (s) => problems(s.problems) },
            { label: "Checked", cell: (s) => when(s.checked_at) },
          ] }),
        page > 1 || answer.has_more ? pager({ page, hasMore: answer.has_more,
          label: "Pages of sets", onPage: (n) => { page = n; load(); } }) : null);
        message.clear();
      } catch (error) {
        message.error(error);
      }
    }

    const form = h("form", { class: "inline", "aria-label": "Which sets" },
      field("Status", status), field("Study Instance UID (pseudonymous)", study),
      h("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      page = 1;
      load();
    });
    root.append(heading("RT sets"), h("p", { text: "Whether each study's objects make a "
      + "complete, consistent set: RT structures, plans and doses referring to images and "
      + "to each other." }), form, message.node, list);
    load();
  },
};
