// Building the page: elements from properties and text only (never markup), tables,
// pagers, messages, polling that never blocks.

const FORBIDDEN = new Set(["innerHTML", "outerHTML", "insertAdjacentHTML", "srcdoc"]);

/**
 * An element: `props` sets properties (`text` is textContent, `class` the class name, `on`
 * event handlers, names with a dash or `role` are attributes); children are nodes or text.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (FORBIDDEN.has(name)) throw new Error(`h(): ${name} is not allowed`);
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name.includes("-") || name === "role" || name === "scope" || name === "for"
               || name === "list" || name === "form") {
      node.setAttribute(name, String(value));
    } else node[name] = value;
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** Replace what `node` holds with `children`. */
export function fill(node, ...children) {
  clear(node);
  append(node, children);
  return node;
}

let counter = 0;

/** A unique id for label/aria wiring. */
export function uid(prefix = "f") {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A labelled input; `input` is built by h() with a fresh id unless it has one. */
export function field(label, input, hint) {
  if (!input.id) input.id = uid("field");
  const parts = [h("label", { for: input.id, text: label }), input];
  if (hint) {
    const note = h("span", { class: "hint", id: uid("hint"), text: hint });
    input.setAttribute("aria-describedby", note.id);
    parts.push(note);
  }
  return h("div", { class: "field" }, parts);
}

export function checkbox(label, props = {}) {
  const box = h("input", { type: "checkbox", id: uid("check"), ...props });
  return { box, node: h("label", { class: "check", for: box.id }, box, " ", label) };
}

export function button(text, onClick, props = {}) {
  return h("button", { type: "button", text, on: { click: onClick }, ...props });
}

/** A page's heading, focusable so that navigation can move focus to it. */
export function heading(text) {
  return h("h2", { text, tabIndex: -1, class: "page-title" });
}

/**
 * A table: `columns` are {label, cell(row) -> text | Node, class}; `rows` the data.
 * `empty` is shown in one cell when there are no rows.
 */
export function table({ caption, columns, rows, empty = "Nothing to show.", rowClass }) {
  const head = h("thead", {}, h("tr", {}, columns.map(
    (c) => h("th", { scope: "col", class: c.class || "", text: c.label }))));
  const body = h("tbody");
  if (!rows.length) {
    body.append(h("tr", {}, h("td", { colSpan: columns.length, class: "empty", text: empty })));
  }
  for (const row of rows) {
    const tr = h("tr", { class: rowClass ? rowClass(row) || "" : "" });
    for (const column of columns) {
      const value = column.cell(row);
      const td = h("td", { class: column.class || "" });
      append(td, [value === null || value === undefined || value === "" ? "—" : value]);
      tr.append(td);
    }
    body.append(tr);
  }
  const captioned = caption ? h("caption", { text: caption }) : null;
  return h("div", { class: "table-wrap" }, h("table", {}, captioned, head, body));
}

/** Previous / Next over pages of a listing answered with `has_more`. */
export function pager({ page, hasMore, onPage, label = "Pages" }) {
  return h("nav", { class: "pager", "aria-label": label },
    button("Previous page", () => onPage(page - 1), { disabled: page <= 1 }),
    h("span", { class: "page-number", text: `Page ${page}` }),
    button("Next page", () => onPage(page + 1), { disabled: !hasMore }));
}

/** A message line: `error(e)` shows an API error's detail plainly, `info(text)` news. */
export function notice() {
  const node = h("p", { class: "message", role: "status", "aria-live": "polite" });
  return {
    node,
    info(text) {
      node.className = "message info";
      node.textContent = text;
    },
    error(error) {
      node.className = "message error";
      node.textContent = error && error.detail ? error.detail
        : error && error.message ? error.message : String(error);
    },
    clear() {
      node.className = "message";
      node.textContent = "";
    },
  };
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso)
    : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function day(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleDateString();
}

/** A DICOM date (YYYYMMDD) as YYYY-MM-DD. */
export function dicomDate(text) {
  return /^\d{8}$/.test(text || "") ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}`
    : text || "";
}

/**
 * Run `work` now and again `delay` ms after each run ends (never overlapping, skipped while
 * the tab is hidden); `delay` may be a function. Returns the function that stops it.
 */
export function every(delay, work) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      if (!document.hidden) await work();
    } catch (error) {
      // The work shows its own errors; the loop goes on.
    }
    if (!stopped) timer = setTimeout(tick, typeof delay === "function" ? delay() : delay);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A button that asks once more before doing something that cannot be undone. */
export function confirming(text, confirmText, action, props = {}) {
  const first = button(text, () => {
    first.hidden = true;
    second.hidden = false;
    cancel.hidden = false;
    second.focus();
  }, props);
  const second = button(confirmText, async () => {
    second.disabled = true;
    try {
      await action();
    } finally {
      second.disabled = false;
      reset();
    }
  }, { hidden: true, class: "danger" });
  const cancel = button("Cancel", () => {
    reset();
    first.focus();
  }, { hidden: true });
  function reset() {
    first.hidden = false;
    second.hidden = true;
    cancel.hidden = true;
  }
  return h("span", { class: "confirming" }, first, second, cancel);
}
