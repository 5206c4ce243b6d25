// watchSession: follows one session over WebSocket, then SSE, then polling, until a terminal state.
//
// The broker's `snapshot` (sent first on every connection) is the source of truth: every event
// carries the session `version`, anything older than what the watcher already knows is dropped,
// and the terminal `result` is delivered to the page exactly once whichever path brought it.
import {
  BztError,
  Emitter,
  deferred,
  backoffDelay,
  isTerminal,
  errorFromResponse,
  getFetch,
  sleep,
} from './util.js';
import { sessionEndpoints } from './session.js';
import { readEventStream } from './sse.js';

export const WATCH_DEFAULTS = {
  transport: 'auto',
  baseUrl: undefined,
  // A WebSocket that has not opened after this long counts as a failed attempt.
  wsConnectTimeoutMs: 8000,
  // In 'auto': this many consecutive attempts that never opened move on to the next transport.
  fallbackAfter: 2,
  backoffBaseMs: 500,
  backoffCapMs: 10000,
  // An SSE stream silent (no event, no keep-alive comment) this long is treated as dead.
  sseIdleTimeoutMs: 75000,
  // Poll through the page's backend: the `wait` (seconds) passed to pollSession.
  pollWaitS: 25,
  // Minimum time between two polls that brought nothing new.
  pollIntervalMs: 2000,
  // Poll without pollSession: each short SSE read lasts at most this long.
  pollWindowMs: 25000,
  // After the local countdown reaches zero: reconnect at half of this, give up ("expired") at all of it.
  expiryGraceMs: 8000,
  // cancel() over an open socket waits this long for the broker's answer before also sending DELETE.
  cancelAckTimeoutMs: 3000,
  cancelOnPageHide: false,
  // Clocks differing by more than this (judged from created_at) are corrected for in the countdown.
  clockSkewToleranceMs: 10000,
};

const FATAL_HTTP = [400, 401, 403, 404];

export function watchSession(session, options) {
  return new SessionWatcher(session, options);
}

export class SessionWatcher extends Emitter {
  constructor(session, options) {
    super();
    const o = Object.assign({}, WATCH_DEFAULTS, options || {});
    for (const k of Object.keys(WATCH_DEFAULTS)) if (o[k] === undefined) o[k] = WATCH_DEFAULTS[k];
    if (['auto', 'ws', 'sse', 'poll'].indexOf(o.transport) < 0) {
      throw new BztError('bad_options', "transport must be 'auto', 'ws', 'sse' or 'poll'");
    }
    this.options = o;
    this.endpoints = sessionEndpoints(session, o.baseUrl);
    this._fetch = getFetch(o.fetch);
    this._WebSocket = o.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);

    // What the page may read; the create answer, updated by every snapshot.
    this.session = Object.assign({}, session);
    this._status = session.status || 'pending';
    this._version = typeof session.version === 'number' ? session.version : 0;
    this._qrText = session.qr_text || null;
    this._qrSeq = typeof session.qr_seq === 'number' ? session.qr_seq : null;
    this._matchCode = session.match_code || null;
    this._device = session.device || null;
    this._finished = false;
    this._stopped = false;
    this._outcome = deferred(true);
    this.result = this._outcome.promise;

    // Transport bookkeeping.
    this._mode = o.transport === 'auto' ? (this._WebSocket ? 'ws' : 'sse') : o.transport;
    this._failures = 0; // consecutive attempts that never opened, in the current mode
    this._attempt = 0; // backoff exponent
    this._connId = 0; // callbacks of superseded connections are ignored
    this._connState = 'closed';
    this._ws = null;
    this._abort = null;
    this._timers = new Set();
    this._reconnectTimer = null;

    for (const [opt, ev] of [
      ['onSnapshot', 'snapshot'],
      ['onStatus', 'status'],
      ['onResult', 'result'],
      ['onQr', 'qr'],
      ['onError', 'error'],
      ['onTransport', 'transport'],
    ]) {
      if (typeof o[opt] === 'function') this.on(ev, o[opt]);
    }

    this.deadline = this._localDeadline(session, o.receivedAt || Date.now());
    if (this.deadline != null) {
      const left = this.deadline - Date.now();
      this._later(Math.max(0, left + o.expiryGraceMs / 2), () => this.reconnectNow());
      this._later(Math.max(0, left + o.expiryGraceMs), () => this._finishLocalExpiry());
    }

    this._onOnline = () => {
      if (this._connState !== 'open') this.reconnectNow();
    };
    this._onPageHide = () => this.abandon(true);
    if (typeof addEventListener === 'function') {
      addEventListener('online', this._onOnline);
      if (o.cancelOnPageHide) addEventListener('pagehide', this._onPageHide);
    }
    this._connect();
  }

  // ---- public ---------------------------------------------------------------------------------

  get status() {
    return this._status;
  }
  get version() {
    return this._version;
  }
  get matchCode() {
    return this._matchCode;
  }
  get qrText() {
    return this._qrText;
  }
  get device() {
    return this._device;
  }
  /** 'ws' | 'sse' | 'poll': the transport in use (or being tried). */
  get transport() {
    return this._mode;
  }
  /** 'connecting' | 'open' | 'closed'. */
  get connection() {
    return this._connState;
  }
  get finished() {
    return this._finished;
  }
  get closed() {
    return this._stopped;
  }

  /**
   * Cancels the session: `{"type":"cancel"}` on an open socket, else (or when the broker does not
   * answer within cancelAckTimeoutMs) `DELETE <session>?t=<browser_token>`. Resolves with the
   * outcome (status `cancelled`, or whatever terminal state the session had already reached).
   */
  async cancel() {
    if (this._finished) return this.result;
    if (this._stopped) throw new BztError('closed', 'the watcher is closed');
    const ws = this._ws;
    if (ws && ws.readyState === 1) {
      let sent = false;
      try {
        ws.send(JSON.stringify({ type: 'cancel' }));
        sent = true;
      } catch (_) {
        /* fall through to DELETE */
      }
      if (sent) {
        const settled = this.result.then(() => true, () => true);
        const acked = await Promise.race([settled, sleep(this.options.cancelAckTimeoutMs).then(() => false)]);
        if (acked) return this.result;
      }
    }
    if (!this._finished) await this._deleteSession(false);
    return this.result;
  }

  /**
   * Stops watching and, unless the session already ended, cancels it with a DELETE (keepalive, so
   * it survives page unload). Resolves once the DELETE answered (or failed); never rejects.
   * Used by the widget on refresh, destroy and pagehide.
   */
  abandon(keepalive) {
    if (this._finished || this._stopped) {
      this.close();
      return Promise.resolve(false);
    }
    const done = this._fetch(this.endpoints.cancelUrl, {
      method: 'DELETE',
      keepalive: !!keepalive,
      credentials: 'omit',
      cache: 'no-store',
    }).then(
      (res) => res.ok,
      () => false,
    );
    this.close('abandoned');
    return done;
  }

  /** Stops watching without cancelling. A result not yet known rejects with code `closed`. */
  close(code) {
    if (this._stopped) return;
    this._stop();
    if (!this._outcome.settled) {
      this._outcome.reject(new BztError(code || 'closed', 'stopped watching before the session ended'));
    }
  }

  /** Drops the current connection (if any) and connects again at once, with fresh backoff. */
  reconnectNow() {
    if (this._stopped) return;
    this._attempt = 0;
    this._dropConnection();
    this._connect();
  }

  // ---- state machine --------------------------------------------------------------------------

  _handleMessage(msg) {
    if (this._stopped || !msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'snapshot':
        this._applySnapshot(msg.session || {});
        break;
      case 'status':
        this._applyStatus(msg);
        break;
      case 'result':
        this._applyResult(msg);
        break;
      case 'qr':
        this._applyQr(msg);
        break;
      case 'error': {
        // The broker refused a frame we sent (e.g. a cancel that came too late: `conflict`).
        const e = msg.error || {};
        this.emit('error', new BztError(e.code || 'bad_message', e.message || 'the broker refused a message'));
        if (e.code === 'conflict') this.reconnectNow(); // already terminal: the snapshot says how
        break;
      }
      default:
      // Unknown types are ignored so newer brokers can add events.
    }
  }

  _applySnapshot(view) {
    if (!view || typeof view !== 'object') return;
    if (typeof view.version === 'number' && view.version < this._version) return; // stale
    const status = view.status || this._status;
    Object.assign(this.session, view);
    if (typeof view.version === 'number') this._version = view.version;
    if (view.match_code) this._matchCode = view.match_code;
    if (view.device) this._device = view.device;
    this.emit('snapshot', { session: this.session });
    if (status === 'pending' && view.qr_text && view.qr_text !== this._qrText) {
      if (typeof view.qr_seq === 'number') this._qrSeq = view.qr_seq;
      this._setQr(view.qr_text, typeof view.qr_seq === 'number' ? view.qr_seq : null);
    }
    if (isTerminal(status)) {
      this._setStatus(status);
      this._finish(status, view.result === undefined ? null : view.result);
    } else {
      this._setStatus(status);
    }
  }

  _applyStatus(msg) {
    if (typeof msg.version === 'number') {
      if (msg.version <= this._version) return;
      this._version = msg.version;
    }
    if (msg.device) this._device = msg.device;
    if (msg.match_code) this._matchCode = msg.match_code;
    this.session.version = this._version;
    if (msg.device) this.session.device = msg.device;
    if (msg.match_code) this.session.match_code = msg.match_code;
    this._setStatus(msg.status);
    if (isTerminal(msg.status)) this._finish(msg.status, msg.result === undefined ? null : msg.result);
  }

  _applyResult(msg) {
    if (this._finished) return;
    if (typeof msg.version === 'number') {
      if (msg.version < this._version) return;
      this._version = msg.version;
      this.session.version = msg.version;
    }
    this._setStatus(msg.status);
    this._finish(msg.status, msg.result === undefined ? null : msg.result);
  }

  _applyQr(msg) {
    if (this._status !== 'pending') return;
    if (typeof msg.version === 'number' && msg.version < this._version) return;
    if (typeof msg.seq === 'number') {
      if (this._qrSeq != null && msg.seq <= this._qrSeq) return;
      this._qrSeq = msg.seq;
    }
    if (!msg.qr_text || msg.qr_text === this._qrText) return;
    this._setQr(msg.qr_text, typeof msg.seq === 'number' ? msg.seq : null);
  }

  _setQr(text, seq) {
    this._qrText = text;
    this.session.qr_text = text;
    this.emit('qr', { qr_text: text, seq, version: this._version, session: this.session });
  }

  _setStatus(status) {
    if (!status || status === this._status) return;
    const previous = this._status;
    this._status = status;
    this.session.status = status;
    this.emit('status', {
      status,
      previous,
      version: this._version,
      device: this._device,
      match_code: this._matchCode,
      session: this.session,
    });
  }

  _finish(status, result, extra) {
    if (this._finished) return;
    this._finished = true;
    this.session.status = status;
    this.session.result = result;
    this._stop();
    const outcome = Object.assign({ status, result, session: this.session, baseUrl: this.endpoints.base }, extra);
    this.emit('result', outcome);
    this._outcome.resolve(outcome);
  }

  _finishLocalExpiry() {
    if (this._finished || this._stopped) return;
    // The countdown ran out and the broker could not be reached to confirm: a session never
    // outlives expires_at, so report it expired (marked `local`).
    this._setStatus('expired');
    this._finish('expired', null, { local: true });
  }

  _fatal(err) {
    err.fatal = true;
    if (this._stopped) return;
    this._stop();
    this.emit('error', err);
    this._outcome.reject(err);
  }

  _stop() {
    this._stopped = true;
    this._dropConnection();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    if (typeof removeEventListener === 'function') {
      removeEventListener('online', this._onOnline);
      removeEventListener('pagehide', this._onPageHide);
    }
  }

  _localDeadline(session, receivedAt) {
    const exp = Date.parse(session.expires_at);
    if (isNaN(exp)) return null;
    const created = Date.parse(session.created_at);
    let skew = 0;
    if (!isNaN(created)) {
      // created_at is the broker's clock a moment before the page got the session.
      const s = created - receivedAt;
      if (Math.abs(s) > this.options.clockSkewToleranceMs) skew = s;
    }
    return exp - skew;
  }

  _later(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  // ---- transports -----------------------------------------------------------------------------

  _setConn(state, extra) {
    if (state === this._connState && !extra) return;
    this._connState = state;
    this.emit('transport', Object.assign({ transport: this._mode, state }, extra));
  }

  _dropConnection() {
    this._connId++;
    if (this._reconnectTimer) {
      clearTimeout(this._reconnectTimer);
      this._timers.delete(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(1000);
      } catch (_) {
        /* ignore */
      }
    }
    if (this._abort) {
      this._abort.abort();
      this._abort = null;
    }
    if (this._connState !== 'closed') this._setConn('closed');
  }

  _connect() {
    if (this._stopped) return;
    const id = ++this._connId;
    if (this._mode === 'ws') this._connectWs(id);
    else if (this._mode === 'sse') this._connectSse(id, 0);
    else if (typeof this.options.pollSession === 'function') this._pollBackend(id);
    else this._connectSse(id, this.options.pollWindowMs);
  }

  /**
   * A connection attempt ended. `opened`: it delivered something (so the path works);
   * `error`: why, if known; `cycle`: a planned end (poll window), not a failure.
   */
  _lost(id, info) {
    if (id !== this._connId || this._stopped) return;
    this._connId++;
    this._ws = null;
    this._abort = null;
    this._setConn('closed');
    const err = info.error;
    if (err) {
      if (err.status === 410) return this._finishLocalExpiry();
      if (FATAL_HTTP.indexOf(err.status) >= 0 || err.fatal) return this._fatal(err);
      this.emit('error', err);
    }
    if (info.cycle) {
      this._schedule(this.options.pollIntervalMs);
      return;
    }
    if (this._restartNext) {
      this._restartNext = false;
      this._attempt = 0;
      this._schedule(0);
      return;
    }
    if (info.opened) {
      this._failures = 0;
    } else {
      this._failures++;
      if (this.options.transport === 'auto' && this._failures >= this.options.fallbackAfter) {
        const next = this._mode === 'ws' ? 'sse' : this._mode === 'sse' ? 'poll' : null;
        if (next) {
          const from = this._mode;
          this._mode = next;
          this._failures = 0;
          this._attempt = 0;
          this.emit('transport', { transport: next, state: 'fallback', from });
          this._connect();
          return;
        }
      }
    }
    let delay = backoffDelay(this._attempt++, this.options.backoffBaseMs, this.options.backoffCapMs, this.options.random);
    if (err && err.retryAfter) delay = Math.max(delay, err.retryAfter * 1000);
    this._schedule(delay);
  }

  _schedule(delay) {
    if (this._stopped) return;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = this._later(delay, () => {
      this._reconnectTimer = null;
      this._connect();
    });
  }

  _connectWs(id) {
    let ws;
    this._setConn('connecting');
    try {
      ws = new this._WebSocket(this.endpoints.wsUrl);
    } catch (e) {
      this._lost(id, { opened: false, error: new BztError('network', 'WebSocket failed: ' + (e && e.message)) });
      return;
    }
    this._ws = ws;
    let opened = false;
    let ended = false;
    const end = (error) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close();
      } catch (_) {
        /* ignore */
      }
      this._lost(id, { opened, error });
    };
    const timer = setTimeout(() => {
      if (!opened) end(new BztError('timeout', 'WebSocket did not open within ' + this.options.wsConnectTimeoutMs + ' ms'));
    }, this.options.wsConnectTimeoutMs);
    ws.onopen = () => {
      if (id !== this._connId) return;
      opened = true;
      clearTimeout(timer);
      this._failures = 0;
      this._attempt = 0;
      this._setConn('open');
    };
    ws.onmessage = (e) => {
      if (id !== this._connId) return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        this.emit('error', new BztError('bad_message', 'the broker sent a frame that is not JSON'));
        return;
      }
      this._handleMessage(msg);
    };
    ws.onclose = (e) => {
      // 1000 after a terminal result is expected (and _stop already detached us); any other
      // close while the session is live means reconnect, and the next snapshot catches up.
      // 1012 (service restart): the broker node is shutting down; reconnect at once, which the
      // load balancer sends to another node. Not an error, so nothing is shown.
      if (opened && e.code === 1012) this._restartNext = true;
      end(opened ? null : new BztError('network', 'WebSocket closed before opening (code ' + e.code + ')', { wsCode: e.code }));
    };
  }

  _connectSse(id, windowMs) {
    const ctrl = new AbortController();
    this._abort = ctrl;
    let opened = false;
    let windowEnded = false;
    let windowTimer = null;
    if (windowMs) {
      windowTimer = setTimeout(() => {
        windowEnded = true;
        ctrl.abort();
      }, windowMs);
    }
    this._setConn('connecting');
    readEventStream(this._fetch, this.endpoints.eventsUrl, {
      signal: ctrl.signal,
      idleTimeoutMs: this.options.sseIdleTimeoutMs,
      onOpen: () => {
        if (id === this._connId) this._setConn('open');
      },
      onEvent: (ev) => {
        if (id !== this._connId) return;
        if (!opened) {
          opened = true;
          this._failures = 0;
          this._attempt = 0;
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (_) {
          this.emit('error', new BztError('bad_message', 'the broker sent an event that is not JSON'));
          return;
        }
        if (!msg || typeof msg !== 'object') return;
        if (!msg.type) {
          // `data:` may carry the payload without its type (the type is in `event:`).
          msg = ev.event === 'snapshot' && !msg.session ? { type: 'snapshot', session: msg } : Object.assign({ type: ev.event }, msg);
        }
        this._handleMessage(msg);
      },
    }).then(
      () => {
        clearTimeout(windowTimer);
        this._lost(id, { opened, cycle: windowEnded && opened, error: opened || windowEnded ? null : new BztError('network', 'event stream ended before any event') });
      },
      (err) => {
        clearTimeout(windowTimer);
        this._lost(id, { opened, error: err });
      },
    );
  }

  async _pollBackend(id) {
    const ctrl = new AbortController();
    this._abort = ctrl;
    const started = Date.now();
    const before = this._version;
    this._setConn('open');
    let view;
    try {
      view = await this.options.pollSession({
        id: this.session.id,
        version: this._version,
        wait: this.options.pollWaitS,
        signal: ctrl.signal,
        session: this.session,
      });
    } catch (e) {
      if (id !== this._connId || this._stopped) return;
      const err = e instanceof BztError ? e : new BztError('network', 'pollSession failed: ' + (e && e.message), { cause: e });
      this._lost(id, { opened: false, error: err });
      return;
    }
    if (id !== this._connId || this._stopped) return;
    this._failures = 0;
    this._attempt = 0;
    if (view && typeof view === 'object') this._applySnapshot(view.session && !view.id ? view.session : view);
    if (this._stopped || id !== this._connId) return;
    this._connId++;
    this._abort = null;
    const changed = this._version !== before;
    this._schedule(changed ? 0 : Math.max(0, this.options.pollIntervalMs - (Date.now() - started)));
  }

  async _deleteSession(keepalive) {
    let res;
    try {
      res = await this._fetch(this.endpoints.cancelUrl, {
        method: 'DELETE',
        keepalive: !!keepalive,
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (e) {
      throw new BztError('network', 'cancel failed: ' + (e && e.message), { cause: e });
    }
    if (res.ok) {
      let view = null;
      try {
        view = await res.json();
      } catch (_) {
        /* no body */
      }
      if (view && view.status) this._applySnapshot(view);
      if (!this._finished) {
        this._setStatus('cancelled');
        this._finish('cancelled', null);
      }
      return;
    }
    if (res.status === 409) {
      // Already terminal: the next snapshot tells which outcome.
      this.reconnectNow();
      return;
    }
    throw await errorFromResponse(res);
  }
}
