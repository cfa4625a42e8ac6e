// Documents view: uploads with progress, the live list (status, attempts, reprocess, delete) and search.

import { api, upload } from './api.js';
import { $, h, fmtSize, fmtTime, fmtClock, confirmAction, notice, announce, reconcile, busy } from './ui.js';

const PAGE = 50;
let docs = new Map(); // id -> document
let next = null; // cursor of the list's next page
let loaded = false;
let gen = 0;
let jobs = new Map(); // document id -> Map(job id -> job), from when "Attempts" opens; .ready once loaded
let loadError = null; // why the first load failed (it is retried)
let chain = Promise.resolve(); // uploads go one after another
let E = {};

const newestFirst = (a, b) => (a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1);
const itemOf = (id) => E.list.querySelector(`li[data-document-id="${CSS.escape(id)}"]`);
const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
const docPath = (id, rest = '') => `/api/documents/${encodeURIComponent(id)}${rest}`;
const note = (text) => h('p', { class: 'muted small', text });

export function init() {
  E = {
    list: $('#documents'), more: $('#more-docs'), status: $('#docs-status'), uploads: $('#uploads'),
    drop: $('#drop'), file: $('#file'), results: $('#search-results'), searchStatus: $('#search-status'),
  };
  E.file.addEventListener('change', () => {
    addFiles(E.file.files);
    E.file.value = '';
  });
  const over = (on) => E.drop.classList.toggle('over', on);
  for (const type of ['dragenter', 'dragover']) {
    E.drop.addEventListener(type, (e) => hasFiles(e) && (e.preventDefault(), over(true)));
  }
  E.drop.addEventListener('dragleave', (e) => E.drop.contains(e.relatedTarget) || over(false));
  E.drop.addEventListener('drop', (e) => {
    e.preventDefault();
    over(false);
    addFiles(e.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser open it in place of the app.
  for (const type of ['dragover', 'drop']) addEventListener(type, (e) => hasFiles(e) && e.preventDefault());
  E.uploads.addEventListener('click', (e) => e.target.closest('[data-act=dismiss]')?.closest('li').remove());
  E.more.addEventListener('click', () => busy(E.more, async () => {
    const page = await api('GET', `/api/documents?limit=${PAGE}&before=${encodeURIComponent(next)}`);
    page.items.forEach((d) => docs.has(d.id) || docs.set(d.id, d));
    next = page.next_before;
    paint();
  }));
  E.list.addEventListener('click', (e) => {
    const btn = e.target.closest('button[data-act]');
    const id = btn?.closest('li').dataset.documentId;
    if (btn) (btn.dataset.act === 'reprocess' ? reprocess : remove)(id, btn);
  });
  // "toggle" does not bubble: listen in the capture phase.
  E.list.addEventListener('toggle', (e) => e.target.open && loadJobs(e.target.closest('li').dataset.documentId), true);
  $('#search-form').addEventListener('submit', search);
}

export function reset() {
  docs = new Map();
  jobs = new Map();
  next = loadError = null;
  loaded = false;
  gen++;
  for (const el of [E.list, E.uploads, E.results]) el.replaceChildren();
  E.searchStatus.textContent = $('#search').value = '';
  paint();
}

/** The first load failed (app.js tries again). */
export function failed(why) {
  loadError = why;
  paint();
}

/** Refetches the list (resync). Throws on failure. */
export async function refresh() {
  const g = ++gen;
  const page = await api('GET', `/api/documents?limit=${Math.min(200, Math.max(PAGE, docs.size))}`);
  if (g !== gen) return;
  docs = new Map(page.items.map((d) => [d.id, d]));
  next = page.next_before;
  loaded = true;
  jobs = new Map();
  paint();
  E.list.querySelectorAll('details[open]').forEach((d) => loadJobs(d.closest('li').dataset.documentId));
}

// ---- live ----

export function onEvent({ type, data }) {
  if (type === 'document.deleted' || (type.startsWith('document.') && data.deleted)) return forget(data.id);
  if (type === 'document.created' || type === 'document.status_updated') return put(data);
  if (type === 'job.status_updated' && !data.deleted) putJob(data);
}

function put(d) {
  const cur = docs.get(d.id);
  if (cur && d.updated_at < cur.updated_at) return; // an older snapshot
  if (cur && cur.status !== d.status && (d.status === 'ready' || d.status === 'failed')) {
    announce(d.status === 'ready' ? `${d.filename} is ready.` : `${d.filename} failed: ${d.error || 'processing failed'}`);
  }
  docs.set(d.id, d);
  paint();
}

function forget(id) {
  if (!docs.delete(id)) return;
  jobs.delete(id);
  paint();
}

/** Keeps the newer of `job` and the one in `map` (events and the jobs fetch cross); `tie`: `job` wins a tie. */
function merge(map, job, tie) {
  const cur = map.get(job.id);
  if (!cur || job.updated_at > cur.updated_at || (tie && job.updated_at === cur.updated_at)) map.set(job.id, job);
}

function putJob(job) {
  const id = job.document_id;
  const map = jobs.get(id);
  if (!map) return; // "Attempts" never opened: it fetches them when it opens
  merge(map, job, true);
  const li = itemOf(id);
  if (li) paintJobs(li, id);
}

// ---- rendering ----

function paint() {
  const items = [...docs.values()].sort(newestFirst);
  reconcile(E.list, items, 'documentId', docItem, paintDoc);
  E.more.hidden = !next;
  E.status.textContent = loaded ? (items.length ? '' : 'No documents yet. Upload files to ask questions about them.')
    : loadError ? `Could not load the documents: ${loadError} Trying again…` : 'Loading…';
}

function docItem(d) {
  const nameId = `doc-${d.id}`;
  const action = (act, text, cls = '') => h('button', { class: `small-btn ${cls}`, 'data-act': act, 'aria-describedby': nameId, text });
  return h('li', { 'data-document-id': d.id },
    h('div', { class: 'doc-head' }, h('span', { class: 'name', id: nameId }), h('span', { class: 'status badge' })),
    h('p', { class: 'meta muted small' }),
    h('details', {}, h('summary', { text: 'Attempts' }), h('div', { class: 'attempts' })),
    h('div', { class: 'actions' }, action('reprocess', 'Reprocess'), action('delete', 'Delete', 'danger-text')));
}

/** Shows (or removes) the error paragraph of `li`, before its <details>. */
function errorLine(li, text) {
  let p = li.querySelector(':scope > p.error');
  if (!text) return p?.remove();
  if (!p) li.querySelector('details').before((p = h('p', { class: 'error' })));
  p.textContent = text;
}

function paintDoc(li, d) {
  li.dataset.status = d.status;
  li.querySelector('.name').textContent = d.filename;
  const status = li.querySelector('.status');
  status.textContent = d.status[0].toUpperCase() + d.status.slice(1);
  status.dataset.status = d.status;
  const chunks = d.status === 'ready' || d.chunk_count ? ` · ${d.chunk_count} chunk${d.chunk_count === 1 ? '' : 's'}` : '';
  li.querySelector('.meta').textContent = `${fmtSize(d.size_bytes)}${chunks} · ${fmtTime(d.created_at)}`;
  errorLine(li, d.status === 'failed' && (d.error || 'Processing failed.'));
  li.querySelector('[data-act=reprocess]').disabled = d.status !== 'ready' && d.status !== 'failed'; // 409 while it runs
  if (li.querySelector('details').open) paintJobs(li, d.id);
}

async function loadJobs(id) {
  const li = itemOf(id);
  if (!li) return;
  let map = jobs.get(id);
  if (!map) jobs.set(id, (map = new Map())); // events from now on are kept, the fetch merges into them
  if (!map.ready) paintJobs(li, id);
  try {
    const { items } = await api('GET', docPath(id, '/jobs'));
    if (jobs.get(id) !== map) return; // a resync started over
    items.forEach((j) => merge(map, j, false));
    map.ready = true;
    const fresh = itemOf(id);
    if (fresh) paintJobs(fresh, id);
  } catch (e) {
    if (e.status !== 404) li.querySelector('.attempts').replaceChildren(note(`Could not load the attempts: ${e.message}`));
  }
}

function paintJobs(li, id) {
  const map = jobs.get(id);
  const list = map?.ready && [...map.values()].sort(newestFirst);
  li.querySelector('.attempts').replaceChildren(...(!list ? [note('Loading…')] : !list.length ? [note('No attempts yet.')]
    : list.map((job) => h('div', { class: 'job' },
      h('p', { class: 'small', text: `Job ${job.status}${job.status === 'queued' && job.attempts.length
        ? ` · next try ${fmtClock(job.run_after)}` : ''} · created ${fmtTime(job.created_at)}` }),
      job.attempts.length
        ? h('ol', {}, ...job.attempts.map((a) => h('li', {},
          h('strong', { text: `Attempt ${a.n}` }), ' ',
          h('span', { class: 'muted', text: `${fmtClock(a.started_at)} → ${a.finished_at ? fmtClock(a.finished_at) : 'running'}` }),
          a.error && h('span', { class: 'attempt-error', text: a.error }))))
        : note('Not started yet.')))));
}

// ---- actions ----

async function reprocess(id, btn) {
  btn.disabled = true;
  try {
    putJob(await api('POST', docPath(id, '/reprocess')));
    put(await api('GET', docPath(id))); // right even while the socket is down
  } catch (e) {
    notice(e.status === 409 ? 'This document is being processed already.' : `Could not reprocess: ${e.message}`);
    btn.disabled = false;
  }
}

function remove(id) {
  const d = docs.get(id);
  confirmAction(`Delete “${d.filename}”? Its file and search entries are removed.`, async () => {
    await api('DELETE', docPath(id)).catch((e) => e.status === 404 || Promise.reject(e));
    forget(id);
  }, $('#docs-title'));
}

function addFiles(files) {
  for (const file of files) {
    const bar = h('progress', { max: '100', value: '0', 'aria-label': `Uploading ${file.name}` });
    const state = h('span', { class: 'muted small', text: 'Waiting…' });
    const li = h('li', { class: 'upload' }, h('span', { class: 'name', text: file.name }), bar, state);
    E.uploads.append(li);
    chain = chain.then(() => send(file, li, bar, state));
  }
}

async function send(file, li, bar, state) {
  if (!li.isConnected) return; // logged out meanwhile
  state.textContent = '0%';
  try {
    put(await upload(file, (p) => {
      bar.value = Math.round(p * 100);
      state.textContent = p < 1 ? `${bar.value}%` : 'Saving…';
    }));
    li.remove();
  } catch (e) {
    if (e.status === 401) return li.remove();
    li.classList.add('failed');
    bar.remove();
    state.replaceWith(h('span', { class: 'error', text: e.message }),
      h('button', { class: 'small-btn', 'data-act': 'dismiss', 'aria-label': `Dismiss ${file.name}`, text: 'Dismiss' }));
    notice(`${file.name} was not uploaded: ${e.message}`);
  }
}

async function search(e) {
  e.preventDefault();
  const q = $('#search').value.trim();
  E.results.replaceChildren();
  E.searchStatus.textContent = q ? 'Searching…' : '';
  if (!q) return;
  try {
    const { items } = await api('GET', `/api/search?q=${encodeURIComponent(q)}&limit=20`);
    E.results.replaceChildren(...items.map((it) => h('li', {},
      h('span', { class: 'name', text: it.filename }), h('p', { class: 'snippet', text: it.snippet }))));
    E.searchStatus.textContent = items.length ? `${items.length} result${items.length === 1 ? '' : 's'}` : 'No matches.';
  } catch (ex) {
    E.searchStatus.textContent = `Search failed: ${ex.message}`;
  }
}
