// Log: the recent warnings and errors of every service (their messages carry no PHI).

import { get } from "./api.js";
import { button, every, field, fill, h, heading, notice, pager, table, when } from "./ui.js";

const PER_PAGE = 50;

function fields(values) {
  const entries = Object.entries(values || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${typeof v === "string" ? v
    : JSON.stringify(v)}`).join(" ") : "";
}

export default {
  id: "log",
  title: "Log",
  permission: "status",
  render(root) {
    const message = notice();
    const list = h("div");
    const service = h("input", { type: "search", maxLength: 64, spellcheck: false,
      autocomplete: "off" });
    const minutes = h("select", { name: "since" },
      h("option", { value: "60", text: "the last hour" }),
      h("option", { value: "1440", text: "the last day" }),
      h("option", { value: "10080", text: "the last week" }),
      h("option", { value: "0", text: "any time", selected: true }));
    let last = "";
    let page = 1;
    let rows = [];

    function draw() {
      const start = (page - 1) * PER_PAGE;
      fill(list, table({ caption: `Recent warnings and errors (${rows.length}, newest first)`,
        rows: rows.slice(start, start + PER_PAGE), empty: "No warning or error.",
        rowClass: (e) => e.level,
        columns: [
          { label: "When", cell: (e) => when(e.at), class: "when" },
          { label: "Service", cell: (e) => e.service },
          { label: "Level", cell: (e) => h("span", { class: `state ${e.level}`, text: e.level }) },
          { label: "Logger", cell: (e) => e.logger },
          { label: "Message", cell: (e) => e.message },
          { label: "Details", cell: (e) => fields(e.fields), class: "data" },
        ] }),
      rows.length > PER_PAGE ? pager({ page, hasMore: start + PER_PAGE < rows.length,
        label: "Pages of the log", onPage: (n) => { page = n; draw(); } }) : null);
    }

    async function load(force = false) {
      try {
        const answer = await get("/api/v1/log", { limit: 200, since_minutes: minutes.value,
          service: service.value.trim() });
        const json = JSON.stringify(answer);
        if (!force && json === last) return;
        last = json;
        rows = answer.items;
        if (force) page = 1;
        draw();
        message.clear();
      } catch (error) {
        message.error(error);
      }
    }

    const form = h("form", { class: "inline", "aria-label": "Which entries" },
      field("Service", service), field("Since", minutes),
      h("button", { type: "submit", text: "Show" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      load(true);
    });
    root.append(heading("Log"), form, message.node, list,
      h("p", {}, button("Refresh now", () => load(true))));
    return every(10000, () => load(false));
  },
};
