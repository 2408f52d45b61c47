// Every call the console makes goes through here: the public API, with the
// signed-in API key as a Bearer token, exactly as any other client calls it.

const KEY = 'marketing.console.apiKey';
export const BASE = '/v1/dev/marketing';

// The key lives in this tab's sessionStorage only: it is gone when the tab
// closes, and is never written to localStorage or a cookie.
export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `The API answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return { message: text }; }
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${session.key()}`, ...extra };
}

// Money and other numbers the user typed go out as JSON number literals with
// the digits as typed ("10000.00" stays 10000.00: the API keeps the scale).
const NUMBER = '\u0000number:';
export function literal(text) { return NUMBER + text; }
/** Text the user typed as an amount: a JSON number literal if it is one, else the text, for the API to refuse by name; nothing if empty. */
export function amount(text) {
  const t = text.trim();
  if (t === '') return undefined;
  return /^-?\d+(\.\d+)?$/.test(t) ? literal(t) : text;
}
function encode(value) {
  return JSON.stringify(value).replace(/"\\u0000number:([^"]*)"/g, '$1');
}

/** A JSON call: `{ data, etag, status }`, or throws ApiError. */
export async function call(method, path, { json, form, ifMatch, headers = {} } = {}) {
  const h = authHeaders(headers);
  let body;
  if (json !== undefined) { h['Content-Type'] = 'application/json'; body = encode(json); }
  else if (form) { body = form; }
  if (ifMatch) h['If-Match'] = ifMatch;
  const response = await fetch(BASE + path, { method, headers: h, body });
  const data = response.status === 204 ? null : await bodyOf(response);
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, data);
  }
  return { data, etag: response.headers.get('ETag'), status: response.status };
}

export const get = (path) => call('GET', path);

/** Every item of a list, following `next_cursor` (at most `maxPages` pages of 500). */
export async function all(path, maxPages = 20) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page++) {
    const sep = path.includes('?') ? '&' : '?';
    const url = `${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const { data } = await get(url);
    items.push(...data.data);
    if (!data.next_cursor) return { items, complete: true };
    cursor = data.next_cursor;
  }
  return { items, complete: false };
}

/** A file download as a Blob (media, CSV export). */
export async function blob(path) {
  const response = await fetch(BASE + path, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, await bodyOf(response));
  return response.blob();
}

/** A multipart upload with progress (0..1) reported as it is sent. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', BASE + path);
    xhr.setRequestHeader('Authorization', `Bearer ${session.key()}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = { message: xhr.responseText }; }
      onProgress(1);
      if (xhr.status >= 200 && xhr.status < 300) resolve({ data, status: xhr.status });
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { message: 'The upload failed: no answer from the server' }));
    xhr.send(form);
  });
}

let vocabulary;
/** The closed sets of names and the status transition table, from the server's domain rules. */
export async function vocab() {
  if (!vocabulary) {
    const response = await fetch('/console/vocabulary.json');
    vocabulary = await response.json();
  }
  return vocabulary;
}
