// Chat view: the conversation list, the open conversation (streaming replies, citations, paging) and the composer.

import { api, download } from './api.js';
import { $, h, fmtShort, openDialog, confirmAction, notice, announce, reconcile, busy, cut } from './ui.js';

const PAGE = 50;
const BUSY = new Set(['pending', 'streaming']);
const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const byUpdated = (a, b) => cmp(b.updated_at, a.updated_at) || cmp(b.id, a.id);
const byCreated = (a, b) => cmp(a.created_at, b.created_at) || cmp(a.id, b.id);
const limitFor = (n) => Math.min(200, Math.max(PAGE, n));
const cursor = (c) => (c ? `&before=${encodeURIComponent(c)}` : '');
const convPath = (id, rest = '') => `/api/conversations/${encodeURIComponent(id)}${rest}`;
const msgPath = (id, act) => `/api/messages/${encodeURIComponent(id)}/${act}`;
const messagesOf = (id, limit, before) => api('GET', convPath(id, `/messages?limit=${limit}${cursor(before)}`));
const visible = () => !$('#chat-view').hidden;

let convs = new Map(); // id -> conversation
let convNext = null; // cursor of the list's next page
let convsLoaded = false;
let open = null; // { id, conv, msgs: Map, next, loaded, error, loading: snapshots in flight, held: their deltas }
let openGen = 0;
let refreshGen = 0;
let wanted = null; // the conversation id the route asks for
let sending = false;
let draft = null; // { text, key }: a failed send retried with the same text reuses its Idempotency-Key
let source = null; // the source shown in the dialog
let loadError = null; // why the first load failed (it is retried)
const mine = new Set(); // conversations this tab deleted: their deletion is no news here
let E = {};

export function init() {
  E = {
    list: $('#conversations'), more: $('#more-convs'), convStatus: $('#convs-status'), newChat: $('#new-chat'),
    title: $('#conv-title'), rename: $('#rename'), del: $('#delete-conv'),
    scroller: $('#scroller'), older: $('#older'), log: $('#messages'), empty: $('#chat-empty'), logError: $('#log-error'),
    form: $('#composer'), input: $('#message'), send: $('#send'),
    sidebar: $('#sidebar'), menu: $('#menu'), backdrop: $('#backdrop'),
  };
  E.newChat.addEventListener('click', newChat);
  E.more.addEventListener('click', loadMoreConvs);
  E.list.addEventListener('click', (e) => {
    const li = e.target.closest('li');
    if (!li) return;
    const phone = E.sidebar.classList.contains('open');
    const id = li.dataset.conversationId;
    drawer(false, false);
    location.hash = `#/chat/${id}`;
    show(id); // now, so that the heading already names it
    if (phone) E.title.focus(); // the drawer hid the focused button
  });
  E.rename.addEventListener('click', () => {
    $('#rename-input').value = open?.conv?.title ?? '';
    openDialog($('#rename-dialog'), E.rename);
    $('#rename-input').select();
  });
  $('#rename-form').addEventListener('submit', rename);
  E.del.addEventListener('click', deleteConv);
  E.older.addEventListener('click', loadOlder);
  E.logError.querySelector('button').addEventListener('click', () => open && openConv(open.id));
  E.log.addEventListener('click', (e) => {
    const cite = e.target.closest('.citation');
    if (cite) return showSource(cite);
    const btn = e.target.closest('button[data-act]');
    if (btn) act(btn);
  });
  $('#source-download').addEventListener('click', downloadSource);
  E.form.addEventListener('submit', send);
  E.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      E.form.requestSubmit();
    }
  });
  E.input.addEventListener('input', autosize);
  E.menu.addEventListener('click', () => drawer(!E.sidebar.classList.contains('open')));
  E.backdrop.addEventListener('click', () => drawer(false));
  E.sidebar.addEventListener('keydown', (e) => e.key === 'Escape' && drawer(false));
}

/** Opens or closes the conversation drawer (phones). */
function drawer(show, moveFocus = true) {
  E.sidebar.classList.toggle('open', show);
  E.menu.setAttribute('aria-expanded', String(show));
  E.backdrop.hidden = !show;
  if (moveFocus) (show ? E.newChat : E.menu).focus();
}

/** Forgets everything (logout). */
export function reset() {
  convs = new Map();
  convNext = open = wanted = draft = loadError = null;
  convsLoaded = false;
  openGen++;
  refreshGen++;
  E.log.replaceChildren();
  E.input.value = '';
  autosize();
  paint();
}

/** The route: #/chat (id null) or #/chat/<id>. */
export function show(id) {
  wanted = id;
  if (id) {
    if (open?.id !== id) openConv(id);
  } else if (open) {
    history.replaceState(null, '', `#/chat/${open.id}`);
  } else if (convsLoaded) {
    const first = [...convs.values()].sort(byUpdated)[0];
    if (first) location.replace(`#/chat/${first.id}`);
  }
  paintHead();
}

/** The first load failed (app.js tries again). */
export function failed(why) {
  loadError = why;
  paintList();
}

/** Refetches the list and the open conversation's messages (resync). Throws on failure. */
export async function refresh() {
  const gen = ++refreshGen;
  const o = open;
  const id = o?.id;
  if (o) o.loading++;
  try {
    const [list, page] = await Promise.all([
      api('GET', `/api/conversations?limit=${limitFor(convs.size)}`),
      id && messagesOf(id, limitFor(o.msgs.size)).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
    ]);
    if (gen !== refreshGen) return;
    convs = new Map(list.items.map((c) => [c.id, c]));
    convNext = list.next_before;
    convsLoaded = true;
    if (id && open === o) {
      if (!page) return closeConv(mine.has(id) ? '' : 'This conversation was deleted.');
      o.conv = convs.get(id) || o.conv;
      page.items.forEach(upsertMsg);
      if (o.msgs.size <= 200) o.next = page.next_before;
      o.loaded = true;
      o.error = null;
    }
    if (!open && visible()) show(wanted);
    paint();
  } finally {
    if (o) settle(o);
  }
}

function paint() {
  paintList();
  paintHead();
  renderMessages();
}

// ---- conversation list ----

function putConv(c) {
  const cur = convs.get(c.id);
  if (cur && cur.updated_at > c.updated_at) c = { ...c, updated_at: cur.updated_at };
  convs.set(c.id, c);
  if (open?.id === c.id) open.conv = c;
  paintList();
  paintHead();
}

const fetching = new Set();
/** A new message moves its conversation to the top (fetched when it is not listed). */
function touchConv(id, ts) {
  const c = convs.get(id);
  if (c) return ts > c.updated_at && putConv({ ...c, updated_at: ts });
  if (!convsLoaded || fetching.has(id)) return;
  fetching.add(id);
  api('GET', convPath(id))
    .then((conv) => convs.has(id) || putConv(conv))
    .catch(() => {})
    .finally(() => fetching.delete(id));
}

function removeConv(id, why) {
  if (convs.delete(id)) paintList();
  if (open?.id === id) closeConv(why);
}

function paintList() {
  const items = [...convs.values()].sort(byUpdated);
  reconcile(E.list, items, 'conversationId',
    (c) => h('li', { 'data-conversation-id': c.id }, h('button', { class: 'conv' })),
    (li, c) => {
      const btn = li.firstChild;
      if (btn.textContent !== c.title) btn.textContent = c.title;
      if (open?.id === c.id) btn.setAttribute('aria-current', 'true');
      else btn.removeAttribute('aria-current');
    });
  E.more.hidden = !convNext;
  E.convStatus.textContent = convsLoaded ? (items.length ? '' : 'No conversations yet.')
    : loadError ? `Could not load the conversations: ${loadError} Trying again…` : 'Loading…';
}

const loadMoreConvs = () => busy(E.more, async () => {
  const page = await api('GET', `/api/conversations?limit=${PAGE}${cursor(convNext)}`);
  page.items.forEach((c) => convs.has(c.id) || convs.set(c.id, c));
  convNext = page.next_before;
  paintList();
  if (!convNext) E.newChat.focus(); // the button is gone
});

/** Creates a conversation and opens it. */
async function create() {
  const c = await api('POST', '/api/conversations', { body: {} });
  putConv(c);
  openConv(c.id, c);
  location.hash = `#/chat/${c.id}`;
  return c.id;
}

const newChat = () => busy(E.newChat, async () => {
  await create();
  drawer(false, false);
  E.input.focus();
});

async function rename(e) {
  e.preventDefault();
  const title = $('#rename-input').value.trim();
  if (!open) return $('#rename-dialog').close();
  if (!title) return ($('#rename-error').textContent = 'Enter a title.');
  try {
    putConv(await api('PATCH', convPath(open.id), { body: { title } }));
    $('#rename-dialog').close();
  } catch (ex) {
    $('#rename-error').textContent = ex.message;
  }
}

function deleteConv() {
  if (!open) return;
  const { id } = open;
  confirmAction(`Delete “${open.conv?.title ?? 'this chat'}” and all its messages?`, async () => {
    mine.add(id);
    await api('DELETE', convPath(id)).catch((e) => e.status === 404 || (mine.delete(id), Promise.reject(e)));
    removeConv(id);
    show(null);
  }, E.title);
}

// ---- the open conversation ----

async function openConv(id, created = null) {
  const gen = ++openGen;
  const o = (open = { id, conv: created || convs.get(id) || null, msgs: new Map(), next: null, loaded: !!created,
    error: null, loading: created ? 0 : 1, held: [] });
  E.log.replaceChildren();
  paint();
  if (created) return;
  try {
    const [conv, page] = await Promise.all([o.conv || api('GET', convPath(id)), messagesOf(id, PAGE)]);
    if (gen !== openGen) return;
    o.conv = convs.get(id) || conv;
    page.items.forEach(upsertMsg);
    o.next = page.next_before;
    o.loaded = true;
    paint();
    E.scroller.scrollTop = E.scroller.scrollHeight;
  } catch (e) {
    if (gen !== openGen) return;
    if (e.status === 404) return closeConv('That conversation does not exist (any more).');
    o.error = `Could not load this conversation: ${e.message}`;
    renderMessages();
  } finally {
    settle(o);
  }
}

/** A snapshot of `o` landed (or failed): once none is in flight, splice the deltas held meanwhile onto it. */
function settle(o) {
  if (--o.loading || open !== o) return;
  const gap = o.held.reduce((g, d) => !splice(d) || g, false);
  o.held = [];
  renderMessages();
  if (gap) reloadMessages(); // a delta is missing from the snapshot and from the socket
}

function closeConv(why) {
  openGen++;
  open = wanted = null;
  E.log.replaceChildren();
  if (why) notice(why);
  if (/^#\/chat\/./.test(location.hash)) location.replace('#/chat');
  paint();
}

function paintHead() {
  const title = open ? open.conv?.title ?? '…' : 'Chat';
  E.title.textContent = title;
  E.rename.hidden = E.del.hidden = !open;
  if (visible()) document.title = `${title} · ragd`;
}

/** Whether `m` may replace `cur` (events and HTTP answers can cross). */
function newer(cur, m) {
  if (!cur || m.updated_at > cur.updated_at) return true;
  if (m.updated_at < cur.updated_at) return false;
  return !(BUSY.has(m.status) && !BUSY.has(cur.status)); // same ms: a finished reply stays finished
}

/** Puts a message of the open conversation into the store; true when it changed. */
function upsertMsg(m) {
  if (m.conversation_id !== open?.id) return false;
  const cur = open.msgs.get(m.id);
  if (!newer(cur, m)) return false;
  // An older snapshot of a reply still streaming: keep the text the deltas already gave.
  if (cur && BUSY.has(m.status) && BUSY.has(cur.status) && cur.content.startsWith(m.content)) {
    m = { ...m, content: cur.content, status: cur.content ? 'streaming' : m.status };
  }
  // The same state again (a resync): nothing to redraw, so focus and an open source dialog stay put.
  if (cur && cur.status === m.status && cur.updated_at === m.updated_at && cur.content === m.content) return false;
  if (BUSY.has(cur?.status) && (m.status === 'done' || m.status === 'error')) {
    announce(m.status === 'done' ? `Reply from the assistant: ${cut(m.content, 200)}` : `The reply failed: ${m.error || ''}`);
  }
  open.msgs.set(m.id, m);
  return true;
}

const nearEnd = () => E.scroller.scrollHeight - E.scroller.scrollTop - E.scroller.clientHeight < 80;

function renderMessages() {
  const stick = nearEnd();
  reconcile(E.log, open ? [...open.msgs.values()].sort(byCreated) : [], 'messageId',
    (m) => h('article', { 'data-message-id': m.id, 'data-role': m.role, tabindex: '-1' },
      h('div', { class: 'meta' },
        h('span', { class: 'who', text: m.role === 'user' ? 'You' : 'Assistant' }),
        h('time', { datetime: m.created_at, text: fmtShort(m.created_at) })),
      h('div', { class: 'content' }),
      h('div', { class: 'foot' })),
    paintMsg);
  E.older.hidden = !open?.next;
  E.logError.hidden = !open?.error;
  E.logError.firstElementChild.textContent = open?.error ?? '';
  E.empty.hidden = !!open && (!open.loaded || open.msgs.size > 0);
  if (stick) E.scroller.scrollTop = E.scroller.scrollHeight;
}

function paintMsg(el, m) {
  const working = BUSY.has(m.status);
  const src = JSON.stringify(m.sources);
  const box = el.querySelector('.content');
  if (el._src === src && !m.sources.length && m.content.startsWith(el._content) && m.content !== el._content) {
    box.append(m.content.slice(el._content.length)); // streaming: only the new text
  } else if (el._content !== m.content || el._src !== src) {
    const n = box.contains(document.activeElement) && document.activeElement.dataset.n;
    box.replaceChildren(...withCitations(m));
    if (n) box.querySelector(`[data-n="${n}"]`)?.focus();
  }
  el._content = m.content;
  el._src = src;
  const sig = `${m.status}|${m.error}`;
  if (el._sig === sig) return;
  el._sig = sig;
  el.dataset.status = m.status;
  el.setAttribute('aria-busy', String(working)); // the log announces a reply once it is complete
  const foot = el.querySelector('.foot');
  const hadFocus = foot.contains(document.activeElement);
  const btn = m.role === 'assistant'
    && h('button', { class: 'small-btn', 'data-act': working ? 'cancel' : 'retry', text: working ? 'Cancel' : 'Retry' });
  foot.replaceChildren(...[
    working && h('span', { class: 'spinner', role: 'img', 'aria-label': 'Generating' }),
    m.status === 'error' && h('p', { class: 'msg-error', text: `Error: ${m.error || 'the reply failed'}` }),
    m.status === 'cancelled' && h('span', { class: 'muted small', text: 'Cancelled' }),
    btn,
  ].filter(Boolean));
  if (hadFocus) (btn || el).focus();
}

/** The text as text nodes, with `[n]` as a button when sources[n-1] exists. */
function withCitations({ role, content, sources }) {
  if (role !== 'assistant' || !sources.length) return [content];
  const out = [];
  let at = 0;
  for (const hit of content.matchAll(/\[(\d{1,3})\]/g)) {
    const src = sources[hit[1] - 1];
    if (!src) continue;
    out.push(content.slice(at, hit.index),
      h('button', { class: 'citation', 'data-n': hit[1], 'aria-label': `Source ${hit[1]}: ${src.filename}`, title: src.filename, text: hit[0] }));
    at = hit.index + hit[0].length;
  }
  out.push(content.slice(at));
  return out;
}

const loadOlder = () => busy(E.older, async () => {
  const { id, next } = open;
  const page = await messagesOf(id, PAGE, next);
  if (open?.id !== id) return;
  const fromEnd = E.scroller.scrollHeight - E.scroller.scrollTop;
  page.items.forEach(upsertMsg);
  open.next = page.next_before;
  renderMessages();
  announce(`${page.items.length} older messages loaded.`);
  E.scroller.scrollTop = E.scroller.scrollHeight - fromEnd; // keep the reader where they were
  if (!open.next) E.log.firstElementChild?.focus({ preventScroll: true }); // the button is gone
});

/** Refetches the open conversation's messages (after a missed delta); one already on its way will do. */
function reloadMessages() {
  const o = open;
  if (!o || o.loading) return;
  o.loading++;
  messagesOf(o.id, limitFor(o.msgs.size))
    .then((page) => open === o && page.items.forEach(upsertMsg), (e) => e.status === 404 || notice(e.message))
    .finally(() => settle(o));
}

// ---- live ----

export function onEvent({ type, data }) {
  switch (type) {
    case 'conversation.created':
    case 'conversation.updated':
      return data.deleted ? removeConv(data.id) : putConv(data);
    case 'conversation.deleted':
      return removeConv(data.id, mine.has(data.id) ? '' : 'This conversation was deleted.');
    case 'message.created':
    case 'message.status_updated':
      if (data.deleted) return open?.msgs.delete(data.id) && renderMessages();
      if (type === 'message.created') touchConv(data.conversation_id, data.created_at);
      if (upsertMsg(data)) renderMessages();
  }
}

/** message.delta: held while a snapshot loads, else spliced at once; a gap refetches. */
export function onDelta(d) {
  if (!open || typeof d.delta !== 'string' || !Number.isInteger(d.offset)) return;
  if (open.loading) return void open.held.push(d);
  if (!splice(d)) return reloadMessages(); // a delta went missing
  renderMessages();
}

/** Splices a delta by offset (in Unicode scalar values), skipping text already there; false on a gap. */
function splice({ message_id: id, offset, delta }) {
  const m = open.msgs.get(id);
  if (!m || !BUSY.has(m.status)) return true;
  const have = [...m.content].length;
  const add = [...delta];
  if (offset > have) return false;
  if (offset + add.length > have) {
    open.msgs.set(id, { ...m, content: m.content + add.slice(have - offset).join(''), status: 'streaming' });
  }
  return true;
}

// ---- replies ----

async function act(btn) {
  const article = btn.closest('article');
  const id = article.dataset.messageId;
  btn.disabled = true;
  try {
    if (btn.dataset.act === 'cancel') {
      upsertMsg(await api('POST', msgPath(id, 'cancel')));
    } else {
      const r = await api('POST', msgPath(id, 'retry'), { headers: { Prefer: 'respond-async' } });
      upsertMsg(r.assistant_message || r);
    }
    renderMessages();
    // Disabling the button dropped its focus: give it to the reply's new button.
    if (document.activeElement === document.body) article.querySelector('.foot button')?.focus();
  } catch (e) {
    if (e.status === 409) reloadMessages(); // it changed meanwhile: show the true state
    else notice(e.message);
  } finally {
    btn.disabled = false;
  }
}

function showSource(btn) {
  const n = btn.dataset.n;
  source = open?.msgs.get(btn.closest('article').dataset.messageId)?.sources[n - 1];
  if (!source) return;
  $('#source-title').textContent = `Source [${n}]`;
  $('#source-file').textContent = source.filename;
  $('#source-snippet').textContent = source.snippet;
  openDialog($('#source'), btn, E.log);
}

async function downloadSource() {
  const btn = $('#source-download');
  btn.disabled = true;
  $('#source-error').textContent = '';
  try {
    await download(`/api/documents/${encodeURIComponent(source.document_id)}/file`, source.filename);
  } catch (e) {
    $('#source-error').textContent = e.status === 404 ? 'The original file is gone: the document was deleted.' : e.message;
  } finally {
    btn.disabled = false;
  }
}

// ---- composer ----

/** A chat still called "New chat" is named after its first question. */
function nameAfter(id, text) {
  const conv = convs.get(id);
  if (conv?.title !== 'New chat' || open?.id !== id || open.msgs.size > 2) return;
  const line = text.trim().split('\n')[0].replace(/\s+/g, ' ');
  const title = cut(line, 60); // whole graphemes: a lone surrogate would be refused
  api('PATCH', convPath(id), { body: { title: title === line ? line : `${title.replace(/\s+\S*$/, '')}…` } })
    .then(putConv, () => {});
}

function autosize() {
  E.input.style.height = 'auto';
  if (E.input.value) E.input.style.height = `${Math.min(E.input.scrollHeight + 2, 240)}px`;
}

async function send(e) {
  e.preventDefault();
  const text = E.input.value;
  if (!text.trim() || sending) return;
  sending = E.send.disabled = true;
  E.input.value = '';
  autosize();
  try {
    const id = open?.id || (await create());
    if (draft?.text !== text) draft = { text, key: crypto.randomUUID?.() ?? `${Date.now()}-${Math.random()}` };
    const r = await api('POST', convPath(id, '/messages'), {
      body: { content: text },
      headers: { Prefer: 'respond-async', 'Idempotency-Key': draft.key },
    });
    draft = null;
    touchConv(id, r.user_message.created_at);
    upsertMsg(r.user_message);
    upsertMsg(r.assistant_message);
    renderMessages();
    nameAfter(id, text);
    E.scroller.scrollTop = E.scroller.scrollHeight;
  } catch (ex) {
    if (!E.input.value) {
      E.input.value = text; // give the text back to send again
      autosize();
    }
    if (ex.status !== 0) draft = null; // only a lost answer may have created it
    if (ex.status !== 401) notice(`Not sent: ${ex.message}`);
  } finally {
    sending = E.send.disabled = false;
  }
}
