// Small helpers shared by every part of the browser SDK. No dependencies, ES2020.

/** SDK version, also reported in errors and README. */
export const VERSION = '0.1.0';

/** The five statuses after which a session never changes again (docs/protocol.md "Session lifecycle"). */
export const TERMINAL_STATUSES = ['approved', 'rejected', 'expired', 'cancelled', 'failed'];

export function isTerminal(status) {
  return TERMINAL_STATUSES.indexOf(status) >= 0;
}

/**
 * Every error the SDK reports. `code` is the broker's snake_case code when the broker answered one
 * (docs/protocol.md "Errors"), else one of the SDK's own: `network`, `timeout`, `create_failed`,
 * `closed`, `destroyed`, `conversation_ended`, `bad_session`, `bad_message`.
 * `fatal` tells whether the SDK has given up (true) or keeps retrying (false).
 */
export class BztError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = 'BztError';
    this.code = code;
    this.fatal = false;
    if (extra) {
      for (const k of Object.keys(extra)) this[k] = extra[k];
    }
  }
}

/** Builds a BztError from a non-2xx fetch Response, reading the protocol's error body if any. */
export async function errorFromResponse(res, fallbackCode) {
  let code = fallbackCode || 'http_' + res.status;
  let message = 'HTTP ' + res.status;
  try {
    const body = await res.json();
    if (body && body.error && typeof body.error.code === 'string') {
      code = body.error.code;
      message = body.error.message || message;
    }
  } catch (_) {
    // not JSON: keep the generic code
  }
  const retry = res.headers && res.headers.get && res.headers.get('Retry-After');
  return new BztError(code, message, {
    status: res.status,
    retryAfter: retry != null && retry !== '' && !isNaN(Number(retry)) ? Number(retry) : undefined,
  });
}

/** A tiny event emitter: `on` returns an unsubscribe function; a throwing listener never breaks the SDK. */
export class Emitter {
  constructor() {
    this._listeners = Object.create(null);
  }
  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    (this._listeners[type] || (this._listeners[type] = [])).push(fn);
    return () => this.off(type, fn);
  }
  once(type, fn) {
    const off = this.on(type, (ev) => {
      off();
      fn(ev);
    });
    return off;
  }
  off(type, fn) {
    const list = this._listeners[type];
    if (!list) return;
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  }
  emit(type, ev) {
    const list = this._listeners[type];
    if (!list) return;
    for (const fn of list.slice()) {
      try {
        fn(ev);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }
  removeAll() {
    this._listeners = Object.create(null);
  }
}

export function reportListenerError(err) {
  // A page's handler threw: surface it without breaking the SDK's own state machine.
  setTimeout(() => {
    throw err;
  }, 0);
}

/** A promise with its resolve/reject exposed; `settled` tells whether either ran. */
export function deferred(silenceUnhandled) {
  let resolve;
  let reject;
  const d = { settled: false };
  d.promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  d.resolve = (v) => {
    if (d.settled) return;
    d.settled = true;
    resolve(v);
  };
  d.reject = (e) => {
    if (d.settled) return;
    d.settled = true;
    reject(e);
  };
  // A rejection nobody listens to (e.g. `widget.approved` on destroy) must not be reported as
  // unhandled: callers that await the promise still see it.
  if (silenceUnhandled) d.promise.catch(() => {});
  return d;
}

/**
 * Exponential backoff with full jitter: a uniformly random delay in [0, min(cap, base * 2^attempt)].
 * With base 500 ms and cap 10 s the ceilings are 0.5, 1, 2, 4, 8, 10, 10, ... seconds.
 */
export function backoffDelay(attempt, baseMs, capMs, random) {
  const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor((random || Math.random)() * ceiling);
}

export function pageHref() {
  return typeof location !== 'undefined' && location && location.href ? location.href : undefined;
}

/** Resolves `url` against `base` (the broker base, else the page), or returns null when impossible. */
export function resolveUrl(url, base) {
  if (!url) return null;
  try {
    return new URL(url, base || pageHref()).href;
  } catch (_) {
    return null;
  }
}

/** http(s) → ws(s); ws(s) untouched. */
export function toWsUrl(href) {
  const u = new URL(href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.href;
}

/** ws(s) → http(s); http(s) untouched. */
export function toHttpUrl(href) {
  const u = new URL(href);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  return u.href;
}

/** Removes a trailing slash so `base + '/v1/...'` never doubles it. */
export function trimSlash(s) {
  return s.replace(/\/+$/, '');
}

/** mm:ss for a number of milliseconds (negative shows 00:00; over an hour keeps counting minutes). */
export function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(total / 60);
  const s = total % 60;
  return (m < 10 ? '0' : '') + m + ':' + (s < 10 ? '0' : '') + s;
}

/** Replaces `{name}` placeholders. */
export function fillTemplate(text, vars) {
  return String(text).replace(/\{(\w+)\}/g, (m, k) => (vars && vars[k] != null ? String(vars[k]) : m));
}

export function getFetch(custom) {
  const f = custom || (typeof fetch === 'function' ? fetch : null);
  if (!f) throw new BztError('bad_options', 'no fetch implementation: pass options.fetch');
  // Calling a bare `fetch` reference without its global receiver throws "Illegal invocation".
  return custom ? custom : (input, init) => f.call(globalThis, input, init);
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    }
  });
}
