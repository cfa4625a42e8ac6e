// Entry point: the login screen and session lifecycle, routing between Chat and Documents, the live socket wiring.

import { api, session, setUnauthorizedHandler, scheduleRefresh, refreshSession, refreshDue } from './api.js';
import { Live } from './live.js';
import * as chat from './chat.js';
import * as docs from './documents.js';
import { $, notice, announce } from './ui.js';

const STATES = { live: 'Live', connecting: 'Connecting…', offline: 'Offline' };
let signedIn = false;
let view = null;
let routed = false; // the first route of a page load does not move focus
let loadedOnce = false;
let fallback = 0;
let said = 'live'; // the connection state last announced ('live' or 'down')
let next = 'live'; // the state the announcement waits to see last
let sayTimer = 0;
// Conversation ids are UUIDs: anything else in the hash never reaches an API path.
const ROUTE = /^#\/(?:(documents)|(chat)(?:\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))?)$/i;

/** Announces a connection change only once it has lasted 2 s, and never the same state twice. */
function sayState(s) {
  const now = s === 'live' ? 'live' : 'down';
  if (now === next) return;
  next = now;
  clearTimeout(sayTimer);
  if (now !== said) {
    sayTimer = setTimeout(() => {
      if (!signedIn) return;
      said = now;
      announce(now === 'live' ? 'Connected again.' : 'Connection lost. Reconnecting…');
    }, 2000);
  }
}

const resync = async () => {
  await Promise.all([chat.refresh(), docs.refresh()]);
  loadedOnce = true;
};

const live = new Live({
  event: (f) => (/^(document|job)\./.test(f.type) ? docs : chat).onEvent(f),
  delta: (d) => chat.onDelta(d),
  resync,
  state(s) {
    const el = $('#connection');
    el.dataset.state = s;
    el.title = el.firstChild.textContent = STATES[s]; // on phones only the dot shows
    sayState(s);
  },
  closed(code) {
    // 4001: the token that minted this socket's ticket expired; this tab may hold a fresher one.
    if (code === 4001 && session.reload() && session.valid(5e3)) return live.reconnect();
    logout(code === 4001
      ? 'Your session expired. Please log in again.'
      : 'You were logged out (here or on another device, or the password changed). Please log in again.');
  },
});

function showLogin(message, email = '') {
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  document.title = 'ragd';
  if (email) $('#email').value = email;
  $(email ? '#password' : '#email').focus();
}

function enter() {
  signedIn = true;
  loadedOnce = false;
  said = next = 'live';
  clearTimeout(sayTimer);
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#who').textContent = session.get().email;
  scheduleRefresh();
  route();
  live.start(); // its first hello loads the state over HTTP
  loadAnyway(2500);
}

/** The socket is slow or down: load over HTTP anyway, and keep trying until it worked once. */
function loadAnyway(wait) {
  clearTimeout(fallback);
  fallback = setTimeout(() => {
    if (!signedIn || loadedOnce) return;
    resync().catch((e) => {
      if (!signedIn || loadedOnce) return;
      chat.failed(e.message);
      docs.failed(e.message);
      loadAnyway(Math.min(wait * 2, 30e3));
    });
  }, wait);
}

function logout(message, remote = false) {
  if (!signedIn) return;
  signedIn = false;
  const email = session.get()?.email;
  view = null;
  clearTimeout(fallback);
  live.stop();
  if (remote) api('POST', '/api/auth/logout').catch(() => {}); // revokes every token of the user
  session.clear();
  chat.reset();
  docs.reset();
  document.querySelectorAll('dialog[open]').forEach((d) => d.close());
  notice('');
  showLogin(message, email);
}

async function authenticate(kind) {
  const form = $('#login-form');
  if (!form.reportValidity()) return;
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => (b.disabled = true));
  $('#login-error').textContent = '';
  try {
    const body = await api('POST', `/api/auth/${kind}`, {
      auth: false,
      body: { email: $('#email').value.trim(), password: $('#password').value },
    });
    session.set(body);
    $('#password').value = '';
    enter();
  } catch (e) {
    $('#login-error').textContent = e.message;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function route() {
  if (!signedIn) return;
  const m = location.hash.match(ROUTE);
  if (!m) return location.replace('#/chat');
  const changed = view !== (m[1] || m[2]);
  view = m[1] || m[2];
  document.body.dataset.view = view;
  $('#chat-view').hidden = view !== 'chat';
  $('#docs-view').hidden = view !== 'documents';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === `#/${view}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (view === 'chat') chat.show(m[3] ?? null);
  else document.title = 'Documents · ragd';
  if (changed && routed) $(view === 'chat' ? '#conv-title' : '#docs-title').focus();
  routed = true;
}

/** Another tab logged in, out, or refreshed the token. */
function onStorage(e) {
  if (e.key !== null && e.key !== 'ragd.session') return;
  const before = session.get();
  const now = session.reload();
  if (!now) return logout('You logged out in another tab.');
  if (!signedIn) return enter();
  if (before && before.user_id !== now.user_id) return location.reload();
  scheduleRefresh();
}

chat.init();
docs.init();
setUnauthorizedHandler((message) => logout(message));
$('#login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  authenticate('login');
});
$('#register').addEventListener('click', () => authenticate('register'));
$('#logout').addEventListener('click', () => logout('', true));
addEventListener('hashchange', route);
addEventListener('storage', onStorage);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && signedIn && refreshDue()) refreshSession();
});

if (!session.get()) {
  showLogin('');
} else if (session.valid()) {
  enter();
  refreshSession(); // slide the session on every load
} else {
  session.clear();
  showLogin('Your session expired. Please log in again.');
}
