// openConversation: the requester's side of a 会话签章 conversation (docs/protocol.md "Conversations").
//
// The browser only *listens* (GET /v1/conversations/<cid>/ws?t=<token>): sending a signing request
// needs the API key, so `request()` goes through the page's own backend (`sendRequest` hook), and
// the result comes back over the socket (or through the `pollRequest` hook after a reconnect).
import { BztError, Emitter, deferred, backoffDelay, resolveUrl, toWsUrl, toHttpUrl, trimSlash, getFetch, fillTemplate } from './util.js';

export const CONVERSATION_TEXTS = {
  connecting: '正在连接会话…',
  open: '会话进行中',
  reconnecting: '连接中断，正在重连…',
  ended_phone: '对方已结束会话',
  ended_requester: '会话已结束',
  ended_idle: '会话因长时间无操作已结束',
  ended_limit: '会话已达上限，已结束',
  ended_certificate: '证书已失效，会话已结束',
  pending: '等待手机签署 {count} 项…',
};

const CONV_DEFAULTS = {
  backoffBaseMs: 500,
  backoffCapMs: 10000,
  wsConnectTimeoutMs: 8000,
  // A request whose result has not arrived this long after its expires_at is settled as expired.
  requestGraceMs: 5000,
  // end(): how long to wait for the broker's `ended` event before settling locally.
  endAckTimeoutMs: 3000,
};

export function openConversation(conversation, options) {
  return new Conversation(conversation, options);
}

function conversationEndpoints(c, baseUrl) {
  const conv = c && c.conversation ? Object.assign({}, c.conversation, { baseUrl: c.baseUrl }) : c;
  if (!conv || (!conv.ws_url && !(conv.id && conv.token))) {
    throw new BztError('bad_session', 'openConversation needs {ws_url} or {id, token} (result.conversation)');
  }
  let base = baseUrl || conv.baseUrl || conv.base_url;
  let id = conv.id;
  let token = conv.token;
  let wsUrl = null;
  if (conv.ws_url) {
    const abs = resolveUrl(conv.ws_url, base ? trimSlash(base) + '/' : undefined);
    const u = new URL(toHttpUrl(abs));
    const m = /^(.*)\/v1\/conversations\/([^/]+)\/ws$/.exec(u.pathname);
    if (m) {
      base = base || u.origin + m[1];
      id = id || decodeURIComponent(m[2]);
    }
    token = token || u.searchParams.get('t');
    wsUrl = toWsUrl(abs);
  }
  if (!base) base = resolveUrl('/');
  base = trimSlash(resolveUrl(base) || base);
  const path = base + '/v1/conversations/' + encodeURIComponent(id);
  return {
    id,
    token,
    base,
    expiresAt: conv.expires_at ? Date.parse(conv.expires_at) : NaN,
    wsUrl: wsUrl || toWsUrl(path + '/ws?t=' + encodeURIComponent(token)),
    endUrl: path + '?t=' + encodeURIComponent(token),
  };
}

export class Conversation extends Emitter {
  constructor(conversation, options) {
    super();
    const o = Object.assign({}, CONV_DEFAULTS, options || {});
    this.options = o;
    this.endpoints = conversationEndpoints(conversation, o.baseUrl);
    this.id = this.endpoints.id;
    this.texts = Object.assign({}, CONVERSATION_TEXTS, o.texts || {});
    this._fetch = getFetch(o.fetch);
    this._WebSocket = o.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);
    this._pending = new Map(); // request_id -> {deferred, timer}
    this._early = new Map(); // results that arrived before sendRequest returned the id
    this._endedD = deferred(true);
    this.ended = this._endedD.promise;
    this._state = 'connecting';
    this._attempt = 0;
    this._ws = null;
    this._timer = null;
    this._stopped = false;
    this._endedBy = null;
    for (const [opt, ev] of [
      ['onRequestResult', 'request_result'],
      ['onEnded', 'ended'],
      ['onError', 'error'],
      ['onState', 'state'],
    ]) {
      if (typeof o[opt] === 'function') this.on(ev, o[opt]);
    }
    if (o.container) this._mount(o.container);
    if (!isNaN(this.endpoints.expiresAt)) {
      const left = this.endpoints.expiresAt - Date.now() + o.requestGraceMs;
      this._expiryTimer = setTimeout(() => this._setEnded('limit', true), Math.max(0, left));
    }
    this._connect();
  }

  /** 'connecting' | 'open' | 'reconnecting' | 'ended' | 'closed'. */
  get state() {
    return this._state;
  }
  /** Who ended it ('phone' | 'requester' | 'idle' | 'limit'), or null while it lasts. */
  get endedBy() {
    return this._endedBy;
  }

  /**
   * Asks the phone to sign `tbs_b64` through the page's backend (`options.sendRequest`, which POSTs
   * /v1/conversations/<cid>/requests with the API key and returns `{request_id, expires_at}`).
   * Resolves with the request_result event: `{request_id, status: 'approved'|'rejected'|'expired',
   * signature_b64?, auto_confirmed?, reason?}`. Rejects with `conversation_ended` if the conversation
   * ends first.
   */
  async request(req) {
    if (this._endedBy) throw new BztError('conversation_ended', 'the conversation has ended', { by: this._endedBy });
    if (typeof this.options.sendRequest !== 'function') {
      throw new BztError('bad_options', 'openConversation needs a sendRequest hook (your backend holds the API key)');
    }
    const answer = await this.options.sendRequest(Object.assign({ conversation_id: this.id }, req));
    if (!answer || !answer.request_id) throw new BztError('bad_message', 'sendRequest must return {request_id, expires_at}');
    const rid = answer.request_id;
    if (this._early.has(rid)) {
      const r = this._early.get(rid);
      this._early.delete(rid);
      return r;
    }
    if (this._endedBy) throw new BztError('conversation_ended', 'the conversation has ended', { by: this._endedBy });
    const d = deferred(true);
    const entry = { d, timer: null };
    const exp = Date.parse(answer.expires_at);
    const wait = (isNaN(exp) ? 60000 : Math.max(0, exp - Date.now())) + this.options.requestGraceMs;
    entry.timer = setTimeout(() => this._requestTimedOut(rid), wait);
    this._pending.set(rid, entry);
    this._render();
    return d.promise;
  }

  /**
   * Ends the conversation: the `end` hook (your backend DELETEs /v1/conversations/<cid> with its API
   * key) when given, else `DELETE /v1/conversations/<cid>?t=<token>` from the browser. Resolves with
   * `{by}` once ended.
   */
  async end() {
    if (this._endedBy) return this.ended;
    if (typeof this.options.end === 'function') {
      await this.options.end({ id: this.id });
    } else {
      const res = await this._fetch(this.endpoints.endUrl, { method: 'DELETE', credentials: 'omit', cache: 'no-store' });
      if (!res.ok && res.status !== 409 && res.status !== 410) {
        throw new BztError('http_' + res.status, 'ending the conversation failed', { status: res.status });
      }
    }
    const t = setTimeout(() => this._setEnded('requester', true), this.options.endAckTimeoutMs);
    this.ended.then(() => clearTimeout(t), () => clearTimeout(t));
    return this.ended;
  }

  /** Stops listening (the conversation goes on at the broker). */
  close() {
    if (this._stopped) return;
    this._stop();
    this._setState('closed');
    this._endedD.reject(new BztError('closed', 'stopped listening'));
  }

  // ---- internals ------------------------------------------------------------------------------

  _setState(s) {
    if (this._state === s) return;
    this._state = s;
    this.emit('state', { state: s });
    this._render();
  }

  _connect() {
    if (this._stopped) return;
    let ws;
    try {
      ws = new this._WebSocket(this.endpoints.wsUrl);
    } catch (e) {
      this._retry(false);
      return;
    }
    this._ws = ws;
    let opened = false;
    const openTimer = setTimeout(() => {
      if (!opened) ws.close();
    }, this.options.wsConnectTimeoutMs);
    ws.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      this._attempt = 0;
      this._setState('open');
      this._recoverPending();
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      this._handle(msg);
    };
    ws.onclose = (e) => {
      clearTimeout(openTimer);
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (this._ws === ws) this._ws = null;
      if (this._stopped) return;
      // 1012 (service restart): the node is shutting down; reconnect at once, quietly.
      if (opened && e && e.code === 1012) {
        this._attempt = 0;
        this._timer = setTimeout(() => this._connect(), 0);
        return;
      }
      this._retry(opened);
    };
  }

  _retry(opened) {
    if (this._stopped) return;
    if (!opened) this.emit('error', new BztError('network', 'conversation socket could not connect'));
    this._setState('reconnecting');
    const delay = backoffDelay(this._attempt++, this.options.backoffBaseMs, this.options.backoffCapMs);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _handle(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'request_result') this._deliver(msg);
    else if (msg.type === 'ended') this._setEnded(msg.by || 'requester', false, msg.at);
  }

  _deliver(res) {
    const rid = res.request_id;
    const entry = this._pending.get(rid);
    if (entry) {
      clearTimeout(entry.timer);
      this._pending.delete(rid);
      entry.d.resolve(res);
    } else if (this._seen && this._seen.has(rid)) {
      // The broker resends every finished result on each (re)connect; a poll may also have
      // delivered it first. Each request_id is delivered once.
      return;
    } else {
      this._early.set(rid, res);
    }
    (this._seen || (this._seen = new Set())).add(rid);
    this.emit('request_result', res);
    this._render();
  }

  async _recoverPending() {
    // Results sent while the socket was away are not replayed by the broker; ask the backend.
    if (typeof this.options.pollRequest !== 'function') return;
    for (const rid of Array.from(this._pending.keys())) {
      try {
        const r = await this.options.pollRequest({ conversation_id: this.id, request_id: rid, wait: 0 });
        if (r && r.status && r.status !== 'pending' && this._pending.has(rid)) this._deliver(Object.assign({ request_id: rid }, r));
      } catch (err) {
        this.emit('error', err instanceof BztError ? err : new BztError('network', String(err && err.message)));
      }
    }
  }

  async _requestTimedOut(rid) {
    if (!this._pending.has(rid)) return;
    if (typeof this.options.pollRequest === 'function') {
      try {
        const r = await this.options.pollRequest({ conversation_id: this.id, request_id: rid, wait: 0 });
        if (r && r.status && r.status !== 'pending') {
          if (this._pending.has(rid)) this._deliver(Object.assign({ request_id: rid }, r));
          return;
        }
      } catch (_) {
        /* settle locally below */
      }
    }
    if (this._pending.has(rid)) this._deliver({ type: 'request_result', request_id: rid, status: 'expired', local: true });
  }

  _setEnded(by, local, at) {
    if (this._endedBy) return;
    this._endedBy = by;
    this._stop();
    const err = new BztError('conversation_ended', 'the conversation has ended', { by });
    for (const [, entry] of this._pending) {
      clearTimeout(entry.timer);
      entry.d.reject(err);
    }
    this._pending.clear();
    this._setState('ended');
    const ev = { by, local: !!local };
    if (at) ev.at = at;
    this.emit('ended', ev);
    this._endedD.resolve(ev);
    this._render();
  }

  _stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._expiryTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch (_) {
        /* ignore */
      }
    }
  }

  _mount(container) {
    const el = typeof container === 'string' ? document.querySelector(container) : container;
    if (!el) throw new BztError('bad_options', 'container not found');
    this._el = document.createElement('div');
    this._el.className = 'bzt-conversation';
    this._el.setAttribute('role', 'status');
    this._el.setAttribute('aria-live', 'polite');
    el.appendChild(this._el);
    this._render();
  }

  _render() {
    if (!this._el) return;
    let text;
    if (this._endedBy) text = this.texts['ended_' + this._endedBy] || this.texts.ended_requester;
    else if (this._state === 'open' && this._pending.size) text = fillTemplate(this.texts.pending, { count: this._pending.size });
    else text = this.texts[this._state] || '';
    this._el.textContent = text;
    this._el.setAttribute('data-state', this._state);
    if (this._endedBy) this._el.setAttribute('data-ended-by', this._endedBy);
  }

  /** Removes the status line (if any) and stops listening. */
  destroy() {
    this.close();
    if (this._el && this._el.parentNode) this._el.parentNode.removeChild(this._el);
    this._el = null;
    this.removeAll();
  }
}
