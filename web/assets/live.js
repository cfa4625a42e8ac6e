// The live socket: a ticket per connection, reconnect with backoff, events applied strictly by id, resync on gaps.

import { api } from './api.js';

/**
 * handlers: event(frame), called once per event in id order; delta(data) for message.delta;
 * resync() -> Promise, refetches the visible state over HTTP; state('live'|'connecting'|'offline');
 * closed(code) for 4001 (token expired) and 4003 (revoked).
 */
export class Live {
  constructor(handlers) {
    this.h = handlers;
    this.last = null; // id of the last applied event (null: none yet in this tab)
    this.epoch = null; // from hello, sent back with `since`
    this.ws = null;
    this.tries = 0; // failed connections in a row: the backoff exponent
    this.timer = this.dog = 0; // reconnect timer; watchdog for a silent (dead) connection
    this.heartbeatMs = 25e3;
    this.queue = null; // frames of this socket held while its resync runs
    this.stopped = true;
    this.liveSince = 0;
    addEventListener('online', () => this.wake());
    document.addEventListener('visibilitychange', () => document.hidden || this.wake());
  }

  start() {
    Object.assign(this, { stopped: false, last: null, epoch: null, tries: 0 });
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.drop(1000);
    this.h.state('offline');
  }

  /** The network came back or the tab was shown again: retry now, or make an open (maybe dead) socket answer within 5 s. */
  wake() {
    const { ws } = this;
    if (this.stopped) return;
    if (!ws) return this.timer && this.reconnect();
    if (ws.readyState !== WebSocket.OPEN || !this.liveSince) return; // connecting: the hello watchdog runs
    try { ws.send('{"type":"ping"}'); } catch { /* closing already */ }
    this.watch(5e3); // any frame (the pong) re-arms the watchdog
  }

  reconnect() {
    if (this.stopped) return;
    this.tries = 0;
    clearTimeout(this.timer);
    this.connect();
  }

  async connect() {
    this.timer = 0;
    if (this.stopped || this.ws) return;
    this.h.state('connecting');
    let ticket;
    try {
      ({ ticket } = await api('POST', '/api/ws-ticket')); // the JWT never goes into a URL
    } catch (e) {
      if (e.status !== 401) this.retry(); // a 401 logs out (api.js)
      return;
    }
    if (this.stopped || this.ws) return;
    const q = new URLSearchParams({ ticket });
    if (this.last !== null) {
      q.set('since', this.last);
      if (this.epoch) q.set('epoch', this.epoch);
    }
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws?${q}`);
    this.ws = ws;
    ws.onmessage = (m) => this.receive(ws, m.data);
    ws.onclose = (e) => ws === this.ws && this.closed(e.code);
    this.watch(10e3); // hello must come soon
  }

  /** Detaches and closes the socket; its close event then changes nothing. */
  drop(code = 4000) {
    const { ws } = this;
    this.detach();
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    try { ws.close(code); } catch { /* closing already */ }
  }

  /** Forgets the socket; a resync it started dies with it: the next socket starts without `since` and loads again. */
  detach() {
    this.ws = null;
    clearTimeout(this.dog);
    if (this.queue) this.queue = this.last = null;
  }

  closed(code) {
    this.detach();
    if (this.stopped) return;
    if (code === 4001 || code === 4003) return this.h.closed(code);
    this.lost(); // 1012 (restart), 1001, 4008 (too slow), a lost network...
  }

  lost() {
    if (this.liveSince && Date.now() - this.liveSince > 10e3) this.tries = 0; // it was a good connection
    this.retry();
  }

  /** Backoff: 1 s, 2 s, 4 s... capped at 30 s, with jitter over the upper half. */
  retry() {
    if (this.stopped) return;
    this.liveSince = 0;
    this.h.state('offline');
    const base = Math.min(30e3, 1000 * 2 ** this.tries++);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), base / 2 + (Math.random() * base) / 2);
  }

  watch(ms) {
    clearTimeout(this.dog);
    this.dog = setTimeout(() => {
      this.drop();
      this.lost();
    }, ms);
  }

  receive(ws, text) {
    if (ws !== this.ws) return;
    this.watch(this.heartbeatMs * 2.5);
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (this.queue) this.queue.push(f);
    else this.handle(f);
  }

  handle(f) {
    if (typeof f.id === 'number') {
      if (f.id <= this.last) return; // a duplicate
      if (f.id > this.last + 1) return this.resync(f.id); // a gap: the refetch covers this event too
      this.last = f.id;
      return this.h.event(f);
    }
    const d = f.data || {};
    switch (f.type) {
      case 'hello':
        this.epoch = d.epoch;
        if (d.heartbeat_ms > 0) this.heartbeatMs = d.heartbeat_ms;
        this.liveSince = Date.now();
        this.h.state('live');
        if (this.last === null) this.resync(d.head); // no `since`, no replay: load over HTTP, go on from head
        return;
      case 'resync_required':
        return this.resync(d.head);
      case 'heartbeat':
        if (d.head > this.last) this.resync(d.head); // an event went missing
        return;
      case 'message.delta':
        return this.h.delta(d);
      default: // pong, and types this page does not know
    }
  }

  /** Refetches over HTTP, then goes on after `head`; frames arriving meanwhile wait, in order. */
  async resync(head) {
    const held = (this.queue = []);
    try {
      await this.h.resync();
    } catch (e) {
      if (this.queue !== held) return; // the socket closed meanwhile
      this.queue = null; // `last` stays: reconnecting with it replays (or resyncs) what was missed
      if (!this.stopped && e.status !== 401) {
        this.drop();
        this.retry();
      }
      return;
    }
    if (this.stopped || this.queue !== held) return; // the socket closed meanwhile: its successor loads again
    this.last = head ?? 0; // may go down: a database restored from a backup starts its ids over
    this.queue = null;
    while (held.length) {
      const f = held.shift();
      if (this.queue) this.queue.push(f); // a held frame started another resync
      else this.handle(f);
    }
  }
}
