// Calls to the index API with the signed-in token. The token lives in sessionStorage only
// (this tab, until sign-out or the tab closes); every refusal becomes an ApiError carrying
// the problem document's detail, written by the API for the user.

const KEY = "anon-console-token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.problem = problem || {};
  }
}

let unauthorized = () => {};

/** Called with the error when the API answers 401 (the token is unknown or revoked). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function url(path, query) {
  const address = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") {
      address.searchParams.set(name, String(value));
    }
  }
  return address;
}

/**
 * One request: `json` (a JSON body), `text` (text/plain), or `form` (multipart FormData).
 * Resolves to the Response when it is 2xx; rejects with an ApiError otherwise.
 */
export async function call(method, path, options = {}) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  let body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["Content-Type"] = "application/json";
  } else if (options.text !== undefined) {
    body = options.text;
    headers["Content-Type"] = "text/plain; charset=utf-8";
  } else if (options.form !== undefined) {
    body = options.form;
  }
  let response;
  try {
    response = await fetch(url(path, options.query), {
      method, headers, body, signal: options.signal, cache: "no-store",
      credentials: "omit", referrerPolicy: "no-referrer",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The index API does not answer: is the system running?");
  }
  if (!response.ok) {
    let detail = `The API answered ${response.status} ${response.statusText}`.trim();
    let problem = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try {
        problem = await response.json();
        if (problem && typeof problem.detail === "string" && problem.detail) {
          detail = problem.detail;
        }
      } catch {
        problem = null;
      }
    }
    const error = new ApiError(response.status, detail, problem);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return response;
}

export async function get(path, query) {
  return (await call("GET", path, { query })).json();
}

export async function send(method, path, options) {
  const response = await call(method, path, options);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : null;
}

/** A binary answer (a PNG frame, the workbook) as a Blob, with its file name if given. */
export async function blob(path, query, signal) {
  const response = await call("GET", path, { query, signal });
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = /filename="([^"]+)"/.exec(disposition);
  return { blob: await response.blob(), filename: named ? named[1] : "" };
}

/** Save a Blob as a file: a link to a blob URL, clicked, then let go. */
export function saveBlob(data, filename) {
  const address = URL.createObjectURL(data);
  const link = document.createElement("a");
  link.href = address;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(address), 60_000);
}
