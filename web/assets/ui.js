// Small DOM helpers: element builder, formatting, dialogs and the notice banner.

export const $ = (sel, root = document) => root.querySelector(sel);

/** h('p', {class: 'x', text: 'Hi'}, ...children): builds elements, never parses HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children.filter((c) => c != null && c !== false));
  return el;
}

/** Keeps `parent`'s children in the order of `items`, reusing each child by its data-<key>. */
export function reconcile(parent, items, key, make, paint) {
  const old = new Map([...parent.children].map((el) => [el.dataset[key], el]));
  items.forEach((item, i) => {
    const el = old.get(item.id) || make(item);
    old.delete(item.id);
    paint(el, item);
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null);
  });
  old.forEach((el) => el.remove());
}

const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const clockFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const shortFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
export const fmtShort = (iso) => (iso ? shortFmt.format(new Date(iso)) : '');
export const fmtTime = (iso) => (iso ? timeFmt.format(new Date(iso)) : '');
export const fmtClock = (iso) => (iso ? clockFmt.format(new Date(iso)) : '');

export function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const seg = globalThis.Intl?.Segmenter && new Intl.Segmenter();
/** The longest start of `s` of at most `n` characters (code points) that does not split a grapheme. */
export function cut(s, n) {
  if ([...s].length <= n) return s;
  let out = '';
  let len = 0;
  for (const g of seg ? Array.from(seg.segment(s), (x) => x.segment) : s) {
    if ((len += [...g].length) > n) break;
    out += g;
  }
  return out;
}

/** Opens a modal <dialog>; on close, focus goes back to the opener (or `fallback`). */
export function openDialog(dlg, opener = document.activeElement, fallback = null) {
  dlg.querySelectorAll('.error').forEach((e) => (e.textContent = ''));
  dlg.showModal();
  // The page behind is inert anyway; aria-hidden keeps its controls out of the accessibility tree.
  const app = $('#app');
  app.inert = true;
  app.setAttribute('aria-hidden', 'true');
  // A modal dialog makes the rest of the page inert: the live regions come along, so they are still heard.
  const regions = [$('#notice'), $('#announce')];
  dlg.append(...regions);
  dlg.addEventListener('close', () => {
    document.body.append(...regions);
    app.inert = false;
    app.removeAttribute('aria-hidden');
    const to = opener?.isConnected && opener.checkVisibility?.() !== false ? opener : fallback;
    to?.focus();
  }, { once: true });
}

// Every [class=close] button closes its dialog.
document.addEventListener('click', (e) => {
  const btn = e.target.closest('dialog .close');
  if (btn) btn.closest('dialog').close();
});

/**
 * Asks before a destructive action; `action` runs on "Delete", and its error
 * (if any) is shown inside the dialog, which then stays open.
 */
export function confirmAction(text, action, fallback) {
  const dlg = $('#confirm');
  const ok = $('#confirm-ok');
  $('#confirm-text').textContent = text;
  openDialog(dlg, document.activeElement, fallback);
  ok.onclick = async () => {
    ok.disabled = true;
    try {
      await action();
      dlg.close();
    } catch (e) {
      $('#confirm-error').textContent = e.message;
    } finally {
      ok.disabled = false;
    }
  };
}

/** Runs `fn` with `btn` disabled; an error goes to the notice banner. */
export async function busy(btn, fn) {
  btn.disabled = true;
  try {
    return await fn();
  } catch (e) {
    notice(e.message);
  } finally {
    btn.disabled = false;
  }
}

/** Says `text` politely to screen readers (a visually hidden live region; each text is its own addition). */
export function announce(text) {
  const p = h('p', { text });
  $('#announce').append(p);
  setTimeout(() => p.remove(), 10e3);
}

let noticeTimer = 0;
/** Shows a short message in the app's alert banner (read out by screen readers). */
export function notice(text) {
  const el = $('#notice');
  el.textContent = text;
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => (el.textContent = ''), 8000);
}
