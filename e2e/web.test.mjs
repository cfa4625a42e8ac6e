// The web page in a real headless Chromium against the real ragd binary:
// what a person sees when they register, upload, ask, reload mid-reply,
// use two tabs, hit a failed document, and lose the socket.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { api, launchBrowser, login, openPage, screenshot, startFakeLlm, startRagd } from './harness.mjs';

const PASSWORD = 'correct horse battery';
/** Longest wait for anything a person would wait for. */
const WAIT = 20_000;

const NOTES = `# Release notes

The stampede guard keeps a cold cache from being hit by every request at once:
the first request recomputes the value while the others wait for it.

Deploys now take four minutes instead of eleven.`;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A file on disk for the file picker. */
function file(name, contents) {
  const dir = mkdtempSync(join(tmpdir(), 'ragd-e2e-files-'));
  const path = join(dir, name);
  writeFileSync(path, contents);
  return path;
}

async function register(page, email) {
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor({ timeout: WAIT });
  await live(page);
}

/** Waits for the connection indicator to say the socket is live. */
async function live(page) {
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: WAIT });
}

async function upload(page, path) {
  await page.getByRole('link', { name: 'Documents' }).click();
  await page.getByLabel('Upload files').setInputFiles(path);
}

async function newChat(page) {
  await page.getByRole('link', { name: 'Chat' }).click();
  await page.getByRole('button', { name: 'New chat' }).click();
  await page.getByLabel('Message').waitFor({ timeout: WAIT });
}

async function send(page, text) {
  await page.getByLabel('Message').fill(text);
  await page.getByLabel('Message').press('Enter');
}

/** The ids of the message articles shown, in order. */
async function shownIds(page) {
  return page.locator('#messages article').evaluateAll((els) => els.map((e) => e.dataset.messageId));
}

/** No console error, CSP violation or uncaught exception, and no answer of 400 or more but the `expected` ones. */
function assertNoProblems(page, expected = []) {
  assert.deepEqual(page.problems, [], 'no console errors, CSP violations or uncaught exceptions');
  assert.deepEqual([...page.httpErrors].sort(), [...expected].sort(), 'the HTTP errors the test expects, and no other');
}

/** Counts the page's GETs of a conversation's messages from now on (`.n`). */
function countMessageGets(page) {
  const counter = { n: 0 };
  page.on('request', (req) => {
    if (req.method() === 'GET' && /^\/api\/conversations\/[^/]+\/messages$/.test(new URL(req.url()).pathname)) counter.n++;
  });
  return counter;
}

/** The text of the page's (one) assistant reply. */
const replyText = (page) => page.locator('#messages article[data-role="assistant"] .content').textContent();

test('register, upload a text file and watch it become ready, ask about it, open the citation', async () => {
  const server = await startRagd();
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  try {
    const page = await openPage(context, server.url);
    await screenshot(page, 'login');
    await register(page, 'ada@example.com');

    await upload(page, file('release-notes.md', NOTES));
    await page.locator('#documents li[data-status="ready"]', { hasText: 'release-notes.md' }).waitFor({ timeout: WAIT });
    await screenshot(page, 'documents');

    await page.getByLabel('Search documents').fill('stampede');
    await page.getByLabel('Search documents').press('Enter');
    await page.locator('#search-results li', { hasText: 'release-notes.md' }).first().waitFor({ timeout: WAIT });

    await newChat(page);
    await send(page, 'What does the stampede guard do?');
    const question = page.locator('#messages article[data-role="user"]', { hasText: 'stampede guard' });
    await question.waitFor({ timeout: WAIT });
    const reply = page.locator('#messages article[data-role="assistant"][data-status="done"]');
    await reply.waitFor({ timeout: WAIT });
    assert.match(await reply.locator('.content').innerText(), /recomputes the value/);
    // The chat is named after its first question.
    await page.locator('#conversations li', { hasText: 'What does the stampede guard do?' }).waitFor({ timeout: WAIT });
    await screenshot(page, 'chat');

    await reply.locator('.citation').first().click();
    const dialog = page.locator('dialog#source');
    await dialog.waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await dialog.innerText(), /release-notes\.md/);
    assert.match(await dialog.innerText(), /stampede/i);
    await screenshot(page, 'citation');
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: WAIT }),
      dialog.getByRole('button', { name: 'Download original' }).click(),
    ]);
    assert.equal(download.suggestedFilename(), 'release-notes.md');
    assert.equal(readFileSync(await download.path(), 'utf8'), NOTES, 'the original bytes');

    // The same, on a small phone and in the dark. The socket is held back
    // at first, so the top bar must fit while it says "Connecting…" too.
    const phone = await browser.newContext({ viewport: { width: 360, height: 780 }, colorScheme: 'dark' });
    const small = await openPage(phone, server.url);
    let letSocket;
    const socketHeld = new Promise((ok) => (letSocket = ok));
    await small.route('**/api/ws-ticket', async (route) => {
      await socketHeld;
      await route.continue();
    });
    await small.getByLabel('Email').fill('ada@example.com');
    await small.getByLabel('Password').fill(PASSWORD);
    await small.getByRole('button', { name: 'Log in' }).click();
    const fits = async (state) => {
      await small.locator(`#connection[data-state="${state}"]`).waitFor({ timeout: WAIT });
      const { scrollWidth, logout } = await small.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        logout: document.querySelector('#logout').getBoundingClientRect().toJSON(),
      }));
      assert.ok(scrollWidth <= 360, `nothing overflows at 360 px (${state}): scrollWidth ${scrollWidth}`);
      assert.ok(logout.left >= 0 && logout.right <= 360 && logout.width > 0, `"Log out" is on screen (${state}): ${JSON.stringify(logout)}`);
    };
    await fits('connecting');
    // Only the dot shows; the state is still there for screen readers.
    assert.equal(await small.locator('#connection').textContent(), 'Connecting…');
    letSocket();
    await live(small);
    await fits('live');
    const background = await small.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = background.match(/\d+/g).map(Number);
    assert.ok(r + g + b < 3 * 60, `the dark theme is applied: body background ${background}`);
    await screenshot(small, 'phone-dark');
    // Picking a chat in the drawer leaves the focus on its heading, not on the page.
    await small.getByRole('button', { name: 'Conversations' }).click();
    await small.locator('#conversations li button', { hasText: 'stampede guard' }).click();
    await small.locator('#messages article[data-role="assistant"][data-status="done"]').waitFor({ timeout: WAIT });
    assert.equal(await small.evaluate(() => document.activeElement?.id), 'conv-title');
    await small.locator('#sidebar').waitFor({ state: 'hidden', timeout: WAIT }); // it slides away
    await screenshot(small, 'phone-dark-chat');
    assertNoProblems(small);
    await phone.close();
    assertNoProblems(page);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('a reply pending when the page reloads still spins, then finishes live', async () => {
  // An emoji (two UTF-16 units) before the stops, a combining accent after:
  // a splice counted in code units instead of characters shows wrong text.
  const answer = 'Deploys 🚀 take 4 minutes now — café\u0301 and the stampede guard keeps a cold cache from every request at once [1].';
  const fake = await startFakeLlm(answer, { wordMs: 80 });
  const prefix = (n) => fake.words.slice(0, n).join('');
  const server = await startRagd(['--llm-provider', 'openai', '--llm-base-url', fake.baseUrl, '--llm-model', 'test-model']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'reload@example.com');
    await upload(page, file('notes.md', NOTES));
    await page.locator('#documents li[data-status="ready"]').waitFor({ timeout: WAIT });
    await newChat(page);
    const conversation = await page.locator('#conversations li').first().getAttribute('data-conversation-id');

    // Held before the first word: the reply spins, across a reload too.
    fake.hold();
    const arrived = fake.nextRequest();
    await send(page, 'How long do deploys take?');
    const pending = page.locator('#messages article[data-role="assistant"][data-status="pending"]');
    await pending.locator('.spinner').waitFor({ timeout: WAIT });
    await arrived;
    await page.reload();
    await live(page);
    await pending.locator('.spinner').waitFor({ timeout: WAIT });
    await screenshot(page, 'pending-after-reload');

    // Held after three words: a reload shows exactly the text so far, still streaming.
    fake.release();
    await fake.holdAfter(3);
    const streaming = page.locator('#messages article[data-role="assistant"][data-status="streaming"]');
    await page.waitForFunction((text) => document.querySelector('#messages article[data-role="assistant"] .content')?.textContent === text,
      prefix(3), { timeout: WAIT });
    const reloadGets = countMessageGets(page);
    await page.reload();
    await live(page);
    await streaming.locator('.spinner').waitFor({ timeout: WAIT });
    const partial = await replyText(page);
    assert.equal(partial, prefix(3), 'the text streamed so far, from the GET');
    assert.ok(partial.length > 0 && partial.length < answer.length && answer.startsWith(partial), 'a proper prefix of the answer');
    assert.ok(reloadGets.n <= 2, `a reload GETs the messages at most twice (open, resync): ${reloadGets.n}`);
    await screenshot(page, 'streaming-after-reload');

    // Open the chat again while its reply streams, with a slow network: the
    // text streams on while the GET is on its way, then is spliced onto it.
    const token = await login(server.url, 'reload@example.com', PASSWORD);
    const other = await api(server.url, token).post('/api/conversations', {});
    await page.locator(`#conversations li[data-conversation-id="${other.id}"]`).click();
    await page.locator('#messages article').first().waitFor({ state: 'detached', timeout: WAIT });
    await page.route((url) => url.pathname.endsWith('/messages'), async (route) => {
      const response = await route.fetch();
      await new Promise((ok) => setTimeout(ok, 400));
      await route.fulfill({ response });
    });
    const gets = countMessageGets(page);
    const nearEnd = new Promise((ok) => {
      const onRequest = (req) => {
        if (!req.url().includes(`/api/conversations/${conversation}/messages`)) return;
        page.off('request', onRequest);
        fake.release(); // the stream goes on while the GET is on its way
        ok(fake.holdAfter(fake.words.length - 1));
      };
      page.on('request', onRequest);
    });
    await page.locator(`#conversations li[data-conversation-id="${conversation}"]`).click();
    await nearEnd; // the stream stopped before its last word
    await page.waitForFunction((text) => document.querySelector('#messages article[data-role="assistant"] .content')?.textContent === text,
      prefix(fake.words.length - 1), { timeout: WAIT }).catch(() => {});
    assert.equal(await replyText(page), prefix(fake.words.length - 1), 'the deltas spliced by character offsets');
    assert.equal(await streaming.count(), 1, 'still streaming');
    assert.ok(gets.n <= 2, `at most a couple of GETs of the messages while it streams: ${gets.n}`);
    await page.unroute((url) => url.pathname.endsWith('/messages'));

    fake.release();
    const done = page.locator('#messages article[data-role="assistant"][data-status="done"]');
    await done.waitFor({ timeout: WAIT });
    assert.equal(await done.locator('.content').innerText(), answer);
    await done.locator('.citation').first().waitFor({ timeout: WAIT });
    const ids = await shownIds(page);
    assert.equal(new Set(ids).size, ids.length, `no message shown twice: ${ids}`);
    assert.equal(ids.length, 2, 'the question and its reply');
    assert.ok(gets.n <= 2, `at most a couple of GETs of the messages while it streamed: ${gets.n}`);
    assertNoProblems(page);
  } finally {
    await context.close();
    await server.remove();
    await fake.close();
  }
});

test('two tabs of the same user see each other live', async () => {
  const server = await startRagd();
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  try {
    const first = await openPage(context, server.url);
    await register(first, 'tabs@example.com');
    const second = await openPage(context, server.url);
    await live(second);

    await newChat(first);
    const conversation = await first.locator('#conversations li').first().getAttribute('data-conversation-id');
    // The new conversation shows up in the other tab by itself; open it there.
    await second.getByRole('link', { name: 'Chat' }).click();
    const item = second.locator(`#conversations li[data-conversation-id="${conversation}"]`);
    await item.waitFor({ timeout: WAIT });
    await item.getByRole('button').first().click();

    await send(first, 'Is anyone there?');
    await second.locator('#messages article[data-role="user"]', { hasText: 'Is anyone there?' }).waitFor({ timeout: WAIT });
    await second.locator('#messages article[data-role="assistant"][data-status="done"]').waitFor({ timeout: WAIT });
    await send(second, 'Yes, the other tab.');
    await first.locator('#messages article[data-role="user"]', { hasText: 'Yes, the other tab.' }).waitFor({ timeout: WAIT });
    await screenshot(second, 'two-tabs');

    // A delete made here is no news here, even when its event comes before
    // the DELETE's answer; the other tab is told.
    await first.route(`**/api/conversations/${conversation}`, async (route) => {
      const response = await route.fetch();
      await new Promise((ok) => setTimeout(ok, 500));
      await route.fulfill({ response });
    });
    await first.bringToFront(); // a tab in the background gets no animation frames: clicks would wait for them
    await first.getByRole('button', { name: 'Delete' }).click();
    await first.locator('#confirm').getByRole('button', { name: 'Delete' }).click();
    await second.locator('#notice', { hasText: 'This conversation was deleted.' }).waitFor({ timeout: WAIT });
    await first.locator('#confirm').waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await first.locator('#notice').textContent(), '', 'no notice in the tab that deleted it');
    assertNoProblems(first);
    assertNoProblems(second);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('a failed document shows its error and its attempts', async () => {
  const server = await startRagd();
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'failed@example.com');
    // The first third of a real PDF: corrupt, fails at once.
    const pdf = readFileSync(new URL('../tests/fixtures/report.pdf', import.meta.url));
    await upload(page, file('broken.pdf', pdf.subarray(0, Math.floor(pdf.length / 3))));
    const row = page.locator('#documents li[data-status="failed"]', { hasText: 'broken.pdf' });
    await row.waitFor({ timeout: WAIT });
    assert.match(await row.locator('.error').innerText(), /corrupt/);
    await row.locator('details summary').click();
    await row.locator('details', { hasText: /corrupt/ }).waitFor({ timeout: WAIT });
    await screenshot(page, 'document-failed');
    // An unsupported file is refused at upload, with the server's reason.
    await page.getByLabel('Upload files').setInputFiles(file('photo.exe', 'MZ binary'));
    await page.locator('li.upload', { hasText: /unsupported file type/ }).waitFor({ timeout: WAIT });
    assertNoProblems(page, ['415 POST /api/documents']);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('a crafted link cannot turn the page against another API path', async () => {
  const server = await startRagd();
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'links@example.com');
    await upload(page, file('keep-me.md', NOTES));
    const row = page.locator('#documents li', { hasText: 'keep-me.md' });
    await row.waitFor({ timeout: WAIT });
    const id = await row.getAttribute('data-document-id');
    const touched = [];
    context.on('request', (req) => new URL(req.url()).pathname.startsWith(`/api/documents/${id}`) && touched.push(`${req.method()} ${req.url()}`));

    // `..%2Fdocuments%2F<id>%3F` as a conversation id would make the chat's
    // Delete call DELETE /api/documents/<id>; a malformed escape must not throw.
    const crafted = `#/chat/..%2Fdocuments%2F${id}%3F`;
    for (const hash of [crafted, '#/chat/%E0%A4%A', '#/chat/not-a-uuid']) {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.waitForFunction(() => location.hash === '#/chat', null, { timeout: WAIT });
      assert.equal(await page.locator('#delete-conv').isVisible(), false, `no Delete for ${hash}`);
      assert.equal(await page.locator('#conv-title').textContent(), 'Chat');
    }
    // The same link opened in a new tab.
    const tab = await openPage(context, server.url + '/' + crafted);
    await live(tab);
    await tab.waitForFunction(() => location.hash === '#/chat', null, { timeout: WAIT });
    assert.equal(await tab.locator('#delete-conv').isVisible(), false);

    assert.deepEqual(touched, [], 'no request went to the document');
    const token = await login(server.url, 'links@example.com', PASSWORD);
    assert.equal((await api(server.url, token).get(`/api/documents/${id}`)).filename, 'keep-me.md', 'the document is still there');
    assertNoProblems(page);
    assertNoProblems(tab);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('a socket that closes while the page loads is caught up by the next one', async () => {
  // A heartbeat would reveal a missed event after a while: make it too late to matter.
  const server = await startRagd(['--heartbeat', '120s']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'resync@example.com');
    await newChat(page);
    await send(page, 'First question');
    await page.locator('#messages article[data-role="assistant"][data-status="done"]').waitFor({ timeout: WAIT });
    const conversation = await page.locator('#conversations li').first().getAttribute('data-conversation-id');

    // After a reload the first hello makes the page load the state; that
    // load is slow (but lands before the page's own 2.5 s fallback load),
    // and the socket closes before it lands.
    const other = api(server.url, await login(server.url, 'resync@example.com', PASSWORD));
    let socket = null;
    await page.routeWebSocket(/\/ws/, (ws) => {
      socket = { ws, server: ws.connectToServer() };
    });
    let loading;
    const loadStarted = new Promise((ok) => (loading = ok));
    let slowed = false;
    await page.route((url) => url.pathname === '/api/conversations', async (route) => {
      if (slowed || route.request().method() !== 'GET') return route.continue();
      slowed = true;
      const response = await route.fetch();
      loading();
      await new Promise((ok) => setTimeout(ok, 1500));
      await route.fulfill({ response });
    });
    await page.reload();
    await loadStarted;
    let reconnect;
    const turnStored = new Promise((ok) => (reconnect = ok));
    await page.route('**/api/ws-ticket', async (route) => {
      await turnStored;
      await route.continue();
    });
    await socket.ws.close({ code: 1012 });
    await socket.server.close();
    // While the page is without a socket, another device adds a turn; then
    // the page reconnects, before its first load has landed.
    await other.post(`/api/conversations/${conversation}/messages`, { content: 'Asked while the socket was down' });
    reconnect();
    await page.evaluate(() => dispatchEvent(new Event('online'))); // no backoff wait
    // The next socket has to load again: the first load's answer predates the turn.
    await page.locator('#messages article[data-role="user"]', { hasText: 'Asked while the socket was down' }).waitFor({ timeout: WAIT });
    await page.waitForFunction(() => document.querySelectorAll('#messages article[data-status="done"]').length === 4, null, { timeout: WAIT });
    assertNoProblems(page);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('when the socket drops, the page catches up without a duplicate', async () => {
  let server = await startRagd();
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'drop@example.com');
    await newChat(page);
    await send(page, 'First question');
    await page.locator('#messages article[data-role="assistant"][data-status="done"]').waitFor({ timeout: WAIT });
    const conversation = await page.locator('#conversations li').first().getAttribute('data-conversation-id');

    // Offline, and the server restarts (the socket closes with 1012): the
    // page cannot reconnect while another device adds a turn.
    await context.setOffline(true);
    server = await server.restart();
    await page.locator('#connection:not([data-state="live"])').waitFor({ timeout: WAIT });
    const token = await login(server.url, 'drop@example.com', PASSWORD);
    const other = api(server.url, token);
    await other.post(`/api/conversations/${conversation}/messages`, { content: 'Asked from another device' });
    await screenshot(page, 'offline');

    await context.setOffline(false);
    await live(page);
    await page.locator('#messages article[data-role="user"]', { hasText: 'Asked from another device' }).waitFor({ timeout: WAIT });
    const stored = await other.get(`/api/conversations/${conversation}/messages`);
    await page.waitForFunction(
      (n) => document.querySelectorAll('#messages article[data-status="done"]').length === n,
      stored.items.length,
      { timeout: WAIT },
    );
    const ids = await shownIds(page);
    assert.deepEqual(ids, stored.items.map((m) => m.id), 'exactly the stored messages, each once, in order');
    assertNoProblems(page);
  } finally {
    await context.close();
    await server.remove();
  }
});
