// The console: sign-in, the pages the token's role may see, and hash routing between them
// (#/query, #/viewer/<uid>, ...). Every page talks to the index API only.

import { forgetToken, get, keepToken, onUnauthorized, token } from "./api.js";
import { h } from "./ui.js";
import query from "./page-query.js";
import receiving from "./page-receiving.js";
import exporting from "./page-export.js";
import index from "./page-index.js";
import viewer from "./page-viewer.js";
import elements from "./page-elements.js";
import { filterPage, scriptPage } from "./page-config.js";
import rtSets from "./page-rtsets.js";
import log from "./page-log.js";
import audit from "./page-audit.js";

const PAGES = [query, receiving, exporting, index, viewer, elements, filterPage, scriptPage,
  rtSets, log, audit];

const state = {
  session: null,
  page: null,
  leave: null,
  // The object the Viewer and Elements pages show, and the list it was chosen from.
  selection: { uid: null, study: null, patient: null, list: [] },
};

const $ = (id) => document.getElementById(id);

function may(permission) {
  return Boolean(state.session && state.session.permissions.includes(permission));
}

function allowed() {
  return PAGES.filter((p) => may(p.permission));
}

function route() {
  const [, id = "", ...rest] = window.location.hash.split("/");
  return { id, param: rest.length ? decodeURIComponent(rest.join("/")) : "" };
}

export function go(id, param = "") {
  const target = `#/${id}${param ? `/${encodeURIComponent(param)}` : ""}`;
  if (window.location.hash === target) show();
  else window.location.hash = target;
}

function drawTabs() {
  const nav = $("tabs");
  const current = state.page ? state.page.id : "";
  nav.replaceChildren(h("ul", {}, allowed().map((p) => h("li", {},
    h("a", { href: `#/${p.id}`, text: p.title, "aria-current": p.id === current ? "page" : null,
      class: p.group === "admin" ? "admin-tab" : "" })))));
}

function show() {
  if (!state.session) return;
  const { id, param } = route();
  const pages = allowed();
  const page = pages.find((p) => p.id === id) || pages[0];
  if (state.leave) {
    try { state.leave(); } catch { /* a page's cleanup never stops navigation */ }
  }
  state.leave = null;
  const root = $("page");
  root.replaceChildren();
  const moved = state.page !== null && state.page !== page;
  state.page = page;
  drawTabs();
  document.title = `${page.title} · De-identification console`;
  const ctx = { session: state.session, may, go, param, selection: state.selection };
  const leave = page.render(root, ctx);
  state.leave = typeof leave === "function" ? leave : null;
  if (moved) {
    const title = root.querySelector(".page-title");
    if (title) title.focus();
  }
}

function signedIn(session) {
  state.session = session;
  $("sign-in").hidden = true;
  $("page").hidden = false;
  $("tabs").hidden = false;
  $("sign-out").hidden = false;
  const who = $("who");
  who.hidden = false;
  who.textContent = `Signed in as ${session.name} (${session.role})`;
  show();
  const title = $("page").querySelector(".page-title");
  if (title) title.focus();
}

function signedOut(text) {
  forgetToken();
  if (state.leave) {
    try { state.leave(); } catch { /* nothing to keep */ }
  }
  state.leave = null;
  state.session = null;
  state.page = null;
  $("page").replaceChildren();
  $("page").hidden = true;
  $("tabs").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-message").textContent = text || "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const field = $("token");
  const value = field.value.trim();
  field.value = "";
  if (!value) return;
  keepToken(value);
  $("sign-in-message").textContent = "Signing in…";
  try {
    signedIn(await get("/api/v1/session"));
    $("sign-in-message").textContent = "";
  } catch (error) {
    forgetToken();
    $("sign-in-message").textContent = error.detail || String(error);
    field.focus();
  }
}

function signOut() {
  signedOut("");
  // A fresh page: nothing shown before sign-out stays in memory or in the document.
  window.location.replace(window.location.pathname);
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", show);
  onUnauthorized((error) => {
    if (state.session) signedOut(`${error.detail}. Sign in again.`);
  });
  if (token()) {
    try {
      signedIn(await get("/api/v1/session"));
      return;
    } catch (error) {
      signedOut(error.detail || String(error));
      return;
    }
  }
  signedOut("");
}

start();
