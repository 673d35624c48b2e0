// Filter and Script (admin): the document in force, edited, validated (an error shown at its
// line), saved, or reset to what the settings name; with its history.

import { get, send } from "./api.js";
import { button, confirming, field, fill, h, heading, notice, table, when } from "./ui.js";

const ABOUT = {
  filter: "The filter decides which received objects are de-identified; the others are "
    + "quarantined. An empty filter accepts every object. The language is CTP's DICOM filter "
    + "(for example !Modality.equals(\"SR\")).",
  script: "The anonymizer script says what happens to each element. Changing it is "
    + "discouraged: the built-in profile implements the de-identification protocol. CTP "
    + "scripts and the RSNA Anonymizer's scripts are both read.",
};

function editorFor(kind) {
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const text = h("textarea", { class: "code", spellcheck: false, wrap: "off", rows: 22,
    autocomplete: "off", name: kind, id: `${kind}-text`, "aria-describedby": `${kind}-problem` });
  let marked = null;

  function numbers() {
    const count = Math.max(1, text.value.split("\n").length);
    const lines = [];
    for (let n = 1; n <= count; n += 1) {
      lines.push(h("span", { class: n === marked ? "line bad" : "line", text: String(n) }), "\n");
    }
    fill(gutter, lines);
    gutter.scrollTop = text.scrollTop;
  }
  text.addEventListener("input", numbers);
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });

  return {
    node: h("div", { class: "editor" }, gutter, text),
    text,
    set(value) {
      text.value = value;
      marked = null;
      text.removeAttribute("aria-invalid");
      numbers();
    },
    mark(line) {
      marked = line || null;
      if (marked) text.setAttribute("aria-invalid", "true");
      else text.removeAttribute("aria-invalid");
      numbers();
    },
    goTo(line) {
      const lines = text.value.split("\n");
      const before = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
      text.focus();
      text.setSelectionRange(before, before + (lines[line - 1] || "").length);
      const height = text.scrollHeight / Math.max(1, lines.length);
      text.scrollTop = Math.max(0, (line - 3) * height);
    },
  };
}

function configPage(kind, title) {
  return {
    id: kind,
    title,
    permission: "configure",
    group: "admin",
    render(root) {
      const message = notice();
      const problem = h("div", { class: "problem", id: `${kind}-problem`, role: "alert" });
      const about = h("dl", { class: "facts" });
      const history = h("div");
      const editor = editorFor(kind);
      editor.text.readOnly = true; // until the document in force is in it
      // Scripts come in two languages; a filter is always CTP's.
      const dialect = h("select", { name: "dialect" },
        h("option", { value: "auto", text: "recognise it" }),
        h("option", { value: "ctp", text: "CTP" }),
        h("option", { value: "rsna", text: "RSNA Anonymizer" }));

      function showDocument(doc) {
        fill(about,
          h("div", {}, h("dt", { text: "In force" }), h("dd", { text: {
            index: "saved in the index", file: "the file the settings name",
            "built-in": kind === "script" ? "the built-in profile" : "the built-in rules",
          }[doc.source] || doc.source })),
          doc.version ? h("div", {}, h("dt", { text: "Version" }), h("dd", { text: String(doc.version) })) : null,
          doc.changed_by ? h("div", {}, h("dt", { text: "Changed by" }), h("dd", { text: doc.changed_by })) : null,
          doc.changed_at ? h("div", {}, h("dt", { text: "Changed" }), h("dd", { text: when(doc.changed_at) })) : null,
          doc.dialect ? h("div", {}, h("dt", { text: "Read as" }), h("dd", { text: doc.dialect })) : null,
          doc.name ? h("div", {}, h("dt", { text: "Name" }), h("dd", { text: doc.name })) : null,
          doc.options && doc.options.length ? h("div", {}, h("dt", { text: "Options" }),
            h("dd", { text: doc.options.join(", ") })) : null);
        editor.set(doc.text || "");
        editor.text.readOnly = false;
        fill(problem);
        if (doc.text === null && doc.source === "built-in") {
          message.info(`The built-in ${kind === "script" ? "profile" : "filter"} is in force; `
            + "it has no text here. Write one to replace it.");
        }
      }

      function showProblem(error) {
        const line = error.problem && Number.isInteger(error.problem.line) ? error.problem.line : null;
        const reason = (error.problem && error.problem.reason) || error.detail;
        editor.mark(line);
        fill(problem, h("p", { class: "message error" },
          line ? `Line ${line}: ${reason}` : reason),
        line ? button(`Go to line ${line}`, () => editor.goTo(line)) : null);
      }

      async function load() {
        try {
          showDocument(await get(`/api/v1/config/${kind}`));
          const changes = await get(`/api/v1/config/${kind}/history`, { limit: 20 });
          fill(history, table({ caption: "History (newest first)", rows: changes.items,
            empty: "Never changed here.", columns: [
              { label: "Version", cell: (c) => String(c.version), class: "num" },
              { label: "Source", cell: (c) => c.source },
              { label: "Changed by", cell: (c) => c.changed_by },
              { label: "Changed", cell: (c) => when(c.changed_at) },
              { label: "Replaced", cell: (c) => when(c.replaced_at) },
              { label: "Text", cell: (c) => (c.text !== null ? button("Load into the editor", () => {
                editor.set(c.text);
                message.info(`Version ${c.version} is in the editor; save it to put it in force.`);
              }, { "aria-label": `Load version ${c.version} into the editor` }) : "") },
            ] }));
        } catch (error) {
          message.error(error);
        }
      }

      async function check() {
        message.clear();
        try {
          const answer = await send("POST", `/api/v1/config/${kind}/check`,
            { text: editor.text.value, query: { dialect: dialect.value } });
          editor.mark(null);
          fill(problem);
          message.info(`Valid${answer.dialect ? ` (read as ${answer.dialect})` : ""}: `
            + "it can be saved.");
          return true;
        } catch (error) {
          if (error.status === 422) showProblem(error);
          else message.error(error);
          return false;
        }
      }

      async function save() {
        message.clear();
        try {
          const saved = await send("PUT", `/api/v1/config/${kind}`,
            { text: editor.text.value, query: { dialect: dialect.value } });
          await load();
          message.info(`Saved as version ${saved.version}: the workers take it within seconds.`);
        } catch (error) {
          if (error.status === 422) showProblem(error);
          else message.error(error);
        }
      }

      root.append(heading(title), h("p", { text: ABOUT[kind] }), about, message.node,
        h("label", { for: editor.text.id, text: `The ${kind}` }), editor.node, problem,
        h("div", { class: "actions" },
          kind === "script" ? field("Language", dialect) : null,
          button("Validate", check),
          button("Save", save, { class: "primary" }),
          button("Reload what is in force", load),
          confirming("Reset to the settings…", "Reset: use what the settings name", async () => {
            try {
              await send("DELETE", `/api/v1/config/${kind}`);
              await load();
              message.info("Reset: what the settings name is in force again.");
            } catch (error) {
              message.error(error);
            }
          })),
        h("section", { "aria-label": "History" }, history));
      load();
      return undefined;
    },
  };
}

export const filterPage = configPage("filter", "Filter");
export const scriptPage = configPage("script", "Script");
