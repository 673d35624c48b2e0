// Viewer: one frame of a de-identified object as the API renders it (PNG), with window
// centre and width, frame by frame, and the other objects of the study it was chosen from.

import { blob, get } from "./api.js";
import { button, field, fill, h, heading, notice } from "./ui.js";

const PRESETS = [["Soft tissue", 40, 400], ["Lung", -600, 1500], ["Bone", 400, 1800],
  ["Brain", 40, 80]];

/** The object picker shared by Viewer and Elements: a UID field and the study's list. */
export function objectPicker(ctx, pageId, message) {
  const input = h("input", { type: "text", name: "uid", maxLength: 64, spellcheck: false,
    autocomplete: "off", inputMode: "decimal", value: ctx.param || ctx.selection.uid || "" });
  const form = h("form", { class: "inline", "aria-label": "Choose an object" },
    field("SOP Instance UID (pseudonymous)", input),
    h("button", { type: "submit", text: "Open" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const uid = input.value.trim();
    if (!/^[0-9.]{1,64}$/.test(uid)) {
      message.info("A SOP Instance UID is digits and dots, at most 64.");
      return;
    }
    if (!ctx.selection.list.includes(uid)) ctx.selection.list = [uid];
    ctx.selection.uid = uid;
    ctx.go(pageId, uid);
  });
  const uid = input.value.trim();
  const list = ctx.selection.list.includes(uid) ? ctx.selection.list : [uid];
  const n = list.indexOf(uid);
  const nav = list.length > 1 ? h("div", { class: "actions", role: "group",
    "aria-label": "Objects of the study" },
    button("Previous object", () => ctx.go(pageId, list[n - 1]), { disabled: n <= 0 }),
    h("span", { text: `Object ${n + 1} of ${list.length}` }),
    button("Next object", () => ctx.go(pageId, list[n + 1]), { disabled: n >= list.length - 1 }))
    : null;
  return { node: h("div", { class: "picker" }, form, nav), uid: uid || null };
}

export default {
  id: "viewer",
  title: "Viewer",
  permission: "status",
  render(root, ctx) {
    const message = notice();
    const picker = objectPicker(ctx, "viewer", message);
    root.append(heading("Viewer"), message.node, picker.node);
    if (!picker.uid) {
      root.append(h("p", { text: "Choose an object: in Index, open a patient's studies, a "
        + "study's objects, then View; or give its SOP Instance UID above." }));
      return undefined;
    }
    ctx.selection.uid = picker.uid;
    const uid = picker.uid;
    const center = h("input", { type: "number", step: "any", name: "center" });
    const width = h("input", { type: "number", step: "any", min: 1, name: "width" });
    const frameInput = h("input", { type: "number", min: 1, step: 1, value: 1, name: "frame" });
    const frameCount = h("span", { class: "muted" });
    const image = h("img", { class: "frame", alt: "" });
    const caption = h("p", { class: "muted", "aria-live": "polite" });
    let frames = 1;
    let frame = 1;
    let url = null;
    let controller = null;

    async function draw() {
      if (controller) controller.abort();
      controller = new AbortController();
      const query = {};
      if (center.value !== "" && width.value !== "") {
        query.center = center.value;
        query.width = width.value;
      }
      caption.textContent = `Loading frame ${frame}…`;
      try {
        const { blob: png } = await blob(`/api/v1/instances/${uid}/frames/${frame}`, query,
          controller.signal);
        const next = URL.createObjectURL(png);
        await new Promise((resolve, reject) => {
          image.onload = resolve;
          image.onerror = () => reject(new Error("The frame could not be shown."));
          image.src = next;
        });
        if (url) URL.revokeObjectURL(url);
        url = next;
        // A small matrix is scaled up with its pixels kept square and sharp.
        image.classList.toggle("small", image.naturalWidth < 256);
        const windowText = query.center !== undefined
          ? `window centre ${query.center}, width ${query.width}` : "the object's own window";
        image.alt = `Frame ${frame} of ${frames} of the de-identified object, ${windowText}`;
        caption.textContent = `Frame ${frame} of ${frames}, ${windowText}; `
          + `${image.naturalWidth} × ${image.naturalHeight} pixels.`;
        message.clear();
      } catch (error) {
        if (error.name === "AbortError") return;
        caption.textContent = "";
        message.error(error);
      }
    }

    function goFrame(n) {
      frame = Math.max(1, Math.min(frames, n));
      frameInput.value = frame;
      prev.disabled = frame <= 1;
      next.disabled = frame >= frames;
      draw();
    }

    const prev = button("Previous frame", () => goFrame(frame - 1), { disabled: true });
    const next = button("Next frame", () => goFrame(frame + 1), { disabled: true });
    frameInput.addEventListener("change", () => goFrame(Number(frameInput.value) || 1));
    const windowForm = h("form", { class: "inline", "aria-label": "Window" },
      field("Window centre", center), field("Window width", width),
      h("button", { type: "submit", text: "Apply window" }),
      button("Object's window", () => {
        center.value = "";
        width.value = "";
        draw();
      }));
    windowForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if ((center.value === "") !== (width.value === "") || (width.value !== "" && Number(width.value) <= 0)) {
        message.info("Give both a centre and a width greater than 0, or neither.");
        return;
      }
      draw();
    });
    const presets = h("div", { class: "actions", role: "group", "aria-label": "Window presets" },
      PRESETS.map(([label, c, w]) => button(`${label} (${c}/${w})`, () => {
        center.value = c;
        width.value = w;
        draw();
      }, { class: "chip" })));
    root.append(windowForm, presets,
      h("div", { class: "actions", role: "group", "aria-label": "Frames" }, prev,
        field("Frame", frameInput), frameCount, next),
      h("figure", { class: "viewer" }, image, h("figcaption", {}, caption)),
      h("p", {}, button("Elements of this object", () => ctx.go("elements", uid))));

    get(`/api/v1/instances/${uid}/elements`).then((shown) => {
      frames = Math.max(1, shown.frames || 1);
      frameInput.max = frames;
      frameCount.textContent = `of ${frames}`;
      next.disabled = frames <= 1;
    }).catch((error) => message.error(error));
    draw();
    return () => {
      if (controller) controller.abort();
      if (url) URL.revokeObjectURL(url);
    };
  },
};
