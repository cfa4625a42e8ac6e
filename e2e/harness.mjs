// What the browser tests run against: the real ragd binary on a temp data
// dir, a scripted OpenAI-compatible model server on a real socket (so a
// test can hold an answer back), a REST client for a second device, and
// Debian's Chromium driven by playwright-core (no browser download).

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));

/** Where screenshots go (looked at by people, kept by CI). */
export const artifacts = process.env.E2E_ARTIFACTS ?? resolve(here, '../target/e2e');
mkdirSync(artifacts, { recursive: true });

const ragdBinary = process.env.RAGD_BIN ?? resolve(here, '../target/debug/ragd');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** A free port on 127.0.0.1 (for a server that must come back on it). */
async function freePort() {
  return new Promise((ok, fail) => {
    const probe = netServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

/**
 * Starts ragd on a fresh data dir (or `dataDir`) and waits until it listens.
 * `restart()` stops it (SIGTERM: sockets close with 1012) and starts it again
 * on the same port and data dir.
 */
export async function startRagd(args = [], { dataDir, port } = {}) {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'ragd-e2e-'));
  const listen = `127.0.0.1:${port ?? (await freePort())}`;
  const child = spawn(
    ragdBinary,
    ['--data-dir', dir, '--listen', listen, '--registrations-per-hour', '0', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } },
  );
  let log = '';
  const listening = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`ragd did not listen within 30 s:\n${log}`)), 30_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      if (log.includes('listening')) {
        clearTimeout(timer);
        ok();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`ragd exited with ${code} before listening:\n${log}`));
    });
  });
  await listening;
  const server = {
    url: `http://${listen}`,
    dir,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGTERM');
      await exited;
    },
    async restart() {
      await server.stop();
      return startRagd(args, { dataDir: dir, port: Number(listen.split(':')[1]) });
    },
    async remove() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * An OpenAI-compatible model server that streams `answer` word by word,
 * a word every `wordMs`. `holdAfter(n)` makes the stream stop after its
 * first `n` words until `release()` (`hold()`: before it answers at all);
 * both return a promise that resolves when the stream has stopped there. A
 * test may call `holdAfter` again right after `release()`, for a later stop
 * in the same stream.
 */
export async function startFakeLlm(answer, { wordMs = 40 } = {}) {
  let gate = null;
  let holdAt = -1;
  let stopped = () => {};
  let opened = () => {};
  const requests = [];
  const words = answer.split(/(?<= )/);
  const pause = async (n) => {
    if (!gate || holdAt !== n) return;
    stopped();
    await gate;
  };
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'test-model', object: 'model' }] }));
      return;
    }
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'no such route' } }));
      return;
    }
    requests.push(JSON.parse(body));
    fake.arrived();
    await pause(0);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const chunk = (delta, finish = null) =>
      `data: ${JSON.stringify({
        id: 'chatcmpl-e2e',
        object: 'chat.completion.chunk',
        model: 'test-model',
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`;
    res.write(chunk({ role: 'assistant', content: '' }));
    for (let i = 0; i < words.length;) {
      await new Promise((ok) => setTimeout(ok, wordMs));
      res.write(chunk({ content: words[i] }));
      await pause(++i);
    }
    res.write(chunk({}, 'stop'));
    res.end('data: [DONE]\n\n');
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const fake = {
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    arrived: () => opened(),
    /** Resolves when the next chat request has arrived. */
    nextRequest: () => new Promise((ok) => (opened = ok)),
    words,
    holdAfter(n) {
      holdAt = n;
      gate = new Promise((ok) => (fake.release = () => { gate = null; ok(); }));
      return new Promise((ok) => (stopped = ok));
    },
    hold: () => fake.holdAfter(0),
    release: () => {},
    close: () => new Promise((ok) => server.close(ok)),
  };
  return fake;
}

/** A REST client of the same API (another device of the user). */
export function api(url, token) {
  const call = async (method, path, body) => {
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    get: (path) => call('GET', path),
    post: (path, body) => call('POST', path, body),
  };
}

/** Logs in over REST (after the page registered the account). */
export async function login(url, email, password) {
  const response = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw new Error(`login: ${response.status} ${await response.text()}`);
  return (await response.json()).token;
}

/** Debian's Chromium, headless, with the machine's closed network in mind. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A new page that records console errors and uncaught exceptions (a CSP
 * violation shows up as a console error) in `page.problems`, and every
 * answer with a status of 400 or more in `page.httpErrors`, as
 * "<status> <method> <path>", for the test to say which it expected.
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  const problems = [];
  const httpErrors = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // The browser reports every refused request on the console: answers
    // of 400 and more are in `httpErrors`; requests that got no answer at
    // all (the page offline, the server down) are not the page's errors.
    const network = /Failed to load resource|WebSocket connection to|net::ERR_/;
    if (msg.type() === 'error' && !network.test(msg.text())) problems.push(`console error: ${msg.text()}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) httpErrors.push(`${res.status()} ${res.request().method()} ${new URL(res.url()).pathname}`);
  });
  page.problems = problems;
  page.httpErrors = httpErrors;
  await page.goto(url);
  return page;
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: false });
}
