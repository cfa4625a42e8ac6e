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

function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], 'no console errors, CSP violations or uncaught exceptions');
}

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

    // The same, on a phone and in the dark.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
    const small = await openPage(phone, server.url);
    await small.getByLabel('Email').fill('ada@example.com');
    await small.getByLabel('Password').fill(PASSWORD);
    await small.getByRole('button', { name: 'Log in' }).click();
    await live(small);
    await screenshot(small, 'phone-dark');
    assertNoProblems(small);
    await phone.close();
    assertNoProblems(page);
  } finally {
    await context.close();
    await server.remove();
  }
});

test('a reply pending when the page reloads still spins, then finishes live', async () => {
  const answer = 'Deploys take four minutes now [1].';
  const fake = await startFakeLlm(answer);
  const server = await startRagd(['--llm-provider', 'openai', '--llm-base-url', fake.baseUrl, '--llm-model', 'test-model']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  try {
    const page = await openPage(context, server.url);
    await register(page, 'reload@example.com');
    await upload(page, file('notes.md', NOTES));
    await page.locator('#documents li[data-status="ready"]').waitFor({ timeout: WAIT });
    await newChat(page);

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

    fake.release();
    const done = page.locator('#messages article[data-role="assistant"][data-status="done"]');
    await done.waitFor({ timeout: WAIT });
    assert.equal(await done.locator('.content').innerText(), answer);
    await done.locator('.citation').first().waitFor({ timeout: WAIT });
    const ids = await shownIds(page);
    assert.equal(new Set(ids).size, ids.length, `no message shown twice: ${ids}`);
    assert.equal(ids.length, 2, 'the question and its reply');
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
