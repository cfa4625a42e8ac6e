// HTTP layer: the stored session and its refresh, fetch with the Bearer token, uploads with progress, error bodies.

const KEY = 'ragd.session';
let current = readStored();
let onUnauthorized = () => {};
let refreshTimer = 0;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    Object.assign(this, { status, code });
  }
}

const offline = () => new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
const unreadable = (status) => new ApiError(status, 'bad_response', 'The server sent an unreadable answer.');

function readStored() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY));
    return s?.token && s.expires_at ? s : null;
  } catch {
    return null;
  }
}

/** The instant (ms) when half of the token's life (iat..exp) is used up. */
function halfLife(s) {
  const exp = Date.parse(s.expires_at);
  let iat = exp - 24 * 3600e3; // if the JWT cannot be read: assume the default 24 h
  try {
    const claims = JSON.parse(atob(s.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    if (Number.isFinite(claims.iat)) iat = claims.iat * 1000;
  } catch { /* keep the assumption */ }
  return iat + (exp - iat) / 2;
}

export const session = {
  get: () => current,
  /** Stores the body of register, login or refresh. */
  set({ token, expires_at, user }) {
    current = { token, expires_at, email: user.email, user_id: user.id };
    localStorage.setItem(KEY, JSON.stringify(current));
  },
  clear() {
    current = null;
    clearTimeout(refreshTimer);
    localStorage.removeItem(KEY);
  },
  /** Re-reads the stored session (another tab may have refreshed or cleared it). */
  reload: () => (current = readStored()),
  valid: (marginMs = 0) => !!current && Date.parse(current.expires_at) > Date.now() + marginMs,
};

/** `fn(message)` runs when a request made with the current token answers 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function errorFrom(status, text, retryAfter, token) {
  let code = 'http_error';
  let message = `The server answered ${status}.`;
  try {
    const e = JSON.parse(text).error;
    if (e?.message) ({ code, message } = e);
  } catch { /* no JSON body (431, a proxy's page) */ }
  if (retryAfter && [429, 503, 507].includes(status)) message += ` (try again in ${retryAfter} s)`;
  if (status === 401 && token && token === current?.token) onUnauthorized('Your session has ended. Please log in again.');
  return new ApiError(status, code, message);
}

/** One call: `body` goes as JSON; returns the JSON (null for 204) or, with `raw`, the Response. Throws ApiError. */
export async function api(method, path, { body, headers = {}, auth = true, raw = false } = {}) {
  const token = auth ? current?.token : null;
  const init = { method, headers: { ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw offline();
  }
  if (!res.ok) throw errorFrom(res.status, await res.text().catch(() => ''), res.headers.get('Retry-After'), token);
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json().catch(() => Promise.reject(unreadable(res.status)));
}

/** Uploads one file with XMLHttpRequest (fetch reports no upload progress). */
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const token = current?.token;
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/documents');
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status !== 201 && xhr.status !== 200) {
        return reject(errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After'), token));
      }
      try {
        resolve(JSON.parse(xhr.responseText));
      } catch {
        reject(unreadable(xhr.status));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'network',
      'The upload was cut off: the server is unreachable, or the file is above its size limit.'));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

/** Fetches a file with the token (a plain link could not send it) and saves it as `filename`. */
export async function download(path, filename) {
  const res = await api('GET', path, { raw: true });
  const url = URL.createObjectURL(await res.blob().catch(() => Promise.reject(offline())));
  const a = Object.assign(document.createElement('a'), { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60e3);
}

/** Schedules the next refresh for when half of the token's life is left. */
export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (current) refreshTimer = setTimeout(refreshSession, Math.min(Math.max(halfLife(current) - Date.now(), 0), 2 ** 31 - 1));
}

export const refreshDue = () => !!current && Date.now() > halfLife(current);

/** Swaps the token for a fresh one (POST /api/auth/refresh); retries after network errors. */
export async function refreshSession() {
  if (!current) return;
  const stored = readStored();
  if (stored?.user_id === current.user_id && stored.expires_at > current.expires_at) {
    current = stored; // another tab refreshed it already
    return scheduleRefresh();
  }
  const { token } = current;
  try {
    const body = await api('POST', '/api/auth/refresh');
    if (current?.token === token) session.set(body);
    scheduleRefresh();
  } catch (e) {
    clearTimeout(refreshTimer);
    if (e.status !== 401 && current) refreshTimer = setTimeout(refreshSession, 30e3);
  }
}
