// createLoginWidget: the QR box a trading platform drops into its login page.
//
// One widget owns at most one live session at a time: refresh (click on the expired overlay,
// widget.refresh()) cancels the old session before asking the page's backend for a new one, and
// destroy / page unload cancel the live one.
import { BztError, Emitter, deferred, isTerminal, errorFromResponse, getFetch, formatCountdown, fillTemplate } from './util.js';
import { errorMessage, reasonMessage, domainLabel } from './messages.js';
import { sessionEndpoints } from './session.js';
import { watchSession } from './watch.js';

/** zh-CN texts; override any of them with `options.texts`. `{time}` and `{code}` are placeholders. */
export const DEFAULT_TEXTS = {
  loading: '正在获取二维码…',
  pending: '等待扫码',
  scanned: '已扫码，请在手机上确认',
  scannedOverlay: '已扫码',
  approved: '成功',
  rejected: '已拒绝',
  rejectedMatch: '已拒绝（数字选择错误）',
  expired: '已过期',
  cancelled: '已取消',
  failed: '失败',
  error: '失败',
  matchPrompt: '请在手机上选择',
  countdown: '{time} 后失效',
  expiredOverlay: '二维码已过期，点击刷新',
  retryOverlay: '点击重新获取二维码',
  createFailed: '二维码获取失败，点击重试',
  approvedOverlay: '✓',
  reconnecting: '网络连接中断，正在重连…',
  qrAlt: '扫码登录二维码',
  /** `{reason}`: the zh-CN text of a terminal reason (REASON_MESSAGES, or the phone's own Chinese). */
  withReason: '{status}：{reason}',
  tabsLabel: '证书类型',
  /** Overrides of ERROR_MESSAGES / REASON_MESSAGES / DOMAIN_LABELS for this widget. */
  errors: null,
  reasons: null,
  domains: null,
};

const STYLE_ID = 'bzt-sdk-style';
const CSS = [
  '.bzt-widget{display:inline-flex;flex-direction:column;align-items:center;gap:8px;width:220px;box-sizing:border-box;',
  'font:14px/1.5 -apple-system,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;color:#222}',
  '.bzt-widget [hidden]{display:none!important}',
  '.bzt-qr-box{position:relative;width:200px;height:200px;background:#fff;border:1px solid #e3e3e3;border-radius:4px}',
  '.bzt-qr{display:block;width:100%;height:100%;image-rendering:pixelated}',
  '.bzt-overlay{position:absolute;top:0;left:0;right:0;bottom:0;display:flex;align-items:center;justify-content:center;',
  'padding:16px;box-sizing:border-box;text-align:center;background:rgba(255,255,255,.94);font-size:15px;cursor:pointer;user-select:none}',
  '.bzt-overlay[data-clickable="false"]{cursor:default}',
  '.bzt-overlay:focus{outline:2px solid #1677ff;outline-offset:-2px}',
  '.bzt-widget[data-status="approved"] .bzt-overlay{color:#1a7f37;font-size:56px}',
  '.bzt-status{font-size:15px;text-align:center}',
  '.bzt-widget[data-status="approved"] .bzt-status{color:#1a7f37}',
  '.bzt-widget[data-status="rejected"] .bzt-status,.bzt-widget[data-status="failed"] .bzt-status,',
  '.bzt-widget[data-status="error"] .bzt-status,.bzt-widget[data-status="expired"] .bzt-status{color:#c62828}',
  '.bzt-match{text-align:center;font-size:14px}',
  '.bzt-match-code{display:block;font-size:44px;font-weight:700;line-height:1.1;letter-spacing:6px;color:#d4380d}',
  '.bzt-countdown{color:#888;font-size:13px;font-variant-numeric:tabular-nums}',
  '.bzt-hint{color:#ad6800;font-size:12px}',
  '.bzt-error{font-size:13px;color:#c62828;text-align:center}',
  '.bzt-tabs{display:flex;width:200px;border-bottom:1px solid #e3e3e3}',
  '.bzt-tab{flex:1;font:inherit;font-size:14px;padding:6px 0;border:0;border-bottom:2px solid transparent;background:none;color:#555;cursor:pointer}',
  '.bzt-tab[aria-selected="true"]{color:#1677ff;border-bottom-color:#1677ff;font-weight:600}',
].join('');

export function createLoginWidget(options) {
  return new LoginWidget(options);
}

export class LoginWidget extends Emitter {
  constructor(options) {
    super();
    const o = Object.assign({}, options || {});
    if (typeof o.createSession !== 'function') {
      throw new BztError('bad_options', 'createLoginWidget needs createSession: async () => <create answer from your backend>');
    }
    const container = typeof o.container === 'string' ? document.querySelector(o.container) : o.container;
    if (!container || typeof container.appendChild !== 'function') {
      throw new BztError('bad_options', 'createLoginWidget needs container: an element or a selector that matches one');
    }
    this.options = o;
    this.texts = Object.assign({}, DEFAULT_TEXTS, o.texts || {});
    this._fetch = getFetch(o.fetch);
    this._container = container;
    this._watcher = null;
    this._session = null;
    this._status = 'loading';
    this._matchCode = null;
    this._creating = null;
    this._destroyed = false;
    this._blobUrl = null;
    this._qrLoads = 0;
    this._lastQrLoad = 0;
    this._outcome = deferred(true);
    this._approved = deferred(true);
    this._hiddenCancelled = false;
    // One QR for every trust domain (default), or tabs: one session per domain, limited by `accept`.
    this._domains = normalizeDomains(o.domains, this.texts.domains);
    this._domain = this._domains.length ? this._domains[0].domain : null;
    this._error = null;

    for (const [opt, ev] of [
      ['onStatus', 'status'],
      ['onResult', 'result'],
      ['onQr', 'qr'],
      ['onError', 'error'],
      ['onSession', 'session'],
      ['onTransport', 'transport'],
    ]) {
      if (typeof o[opt] === 'function') this.on(ev, o[opt]);
    }

    if (o.injectStyles !== false) injectStyles();
    this._build();
    this._tickTimer = setInterval(() => this._tick(), 250);
    this._onPageHide = () => {
      const w = this._watcher;
      if (o.cancelOnPageHide !== false && w && !w.finished && !w.closed) {
        this._hiddenCancelled = true;
        w.abandon(true);
      }
    };
    this._onPageShow = (e) => {
      // Restored from the back/forward cache after pagehide cancelled the session: start over.
      if (e.persisted && this._hiddenCancelled && !this._destroyed) {
        this._hiddenCancelled = false;
        this.refresh();
      }
    };
    addEventListener('pagehide', this._onPageHide);
    addEventListener('pageshow', this._onPageShow);
    this._render();
    if (o.autoStart !== false) this.refresh();
  }

  // ---- public ---------------------------------------------------------------------------------

  /**
   * The outcome of the current session: resolves with `{status, result, session, baseUrl}` for every
   * terminal status (approved, rejected, expired, cancelled, failed) — a non-approved outcome is a
   * normal answer, not an exception. Rejects only when the outcome cannot be known (a fatal broker
   * error such as `forbidden`, or `destroyed`). After a refresh this getter returns the next
   * session's promise.
   */
  get result() {
    return this._outcome.promise;
  }
  /** Resolves with the first approved outcome of any session of this widget; rejects on destroy. */
  get approved() {
    return this._approved.promise;
  }
  /** The current session (create answer, updated by snapshots), or null. */
  get session() {
    return this._session;
  }
  /** 'loading' | 'pending' | 'scanned' | 'approved' | 'rejected' | 'expired' | 'cancelled' | 'failed' | 'error'. */
  get status() {
    return this._status;
  }
  /** The SessionWatcher of the current session (for its transport, version, ...), or null. */
  get watcher() {
    return this._watcher;
  }
  /** The selected trust domain when the widget shows tabs (`options.domains`), else null. */
  get domain() {
    return this._domain;
  }
  /** The last error shown (a BztError), or null. */
  get error() {
    return this._error;
  }
  /**
   * Switches to the tab of `domain` (one of `options.domains`): cancels the current session and
   * creates one that accepts only that domain. Resolves like refresh().
   */
  selectDomain(domain) {
    if (!this._domains.some((d) => d.domain === domain)) {
      return Promise.reject(new BztError('bad_options', 'selectDomain: not one of options.domains: ' + domain));
    }
    if (domain === this._domain && this._watcher && !isTerminal(this._status)) return Promise.resolve();
    this._domain = domain;
    this._renderTabs();
    const pending = this._creating;
    // A create in flight is for the old tab: start over once it is done.
    return pending ? pending.then(() => this.refresh()) : this.refresh();
  }
  /** The widget's root element. */
  get element() {
    return this._root;
  }

  /**
   * Cancels the current session if it is still live, then asks `createSession` for a new one.
   * Concurrent calls share one attempt. Resolves when the new session is shown (or creating failed).
   */
  refresh() {
    if (this._destroyed) return Promise.reject(new BztError('destroyed', 'the widget was destroyed'));
    if (this._creating) return this._creating;
    this._creating = this._refresh().finally(() => {
      this._creating = null;
    });
    return this._creating;
  }

  /** Cancels the current session (socket `cancel`, else DELETE). Resolves with its outcome. */
  cancel() {
    const w = this._watcher;
    if (!w) return Promise.resolve(null);
    return w.cancel();
  }

  /** Stops everything: cancels a live session (unless cancelOnDestroy: false), removes the DOM. */
  destroy() {
    if (this._destroyed) return;
    this._destroyed = true;
    clearInterval(this._tickTimer);
    clearTimeout(this._hintTimer);
    removeEventListener('pagehide', this._onPageHide);
    removeEventListener('pageshow', this._onPageShow);
    const w = this._watcher;
    this._watcher = null;
    if (w) {
      if (this.options.cancelOnDestroy !== false && !w.finished && !w.closed) w.abandon(true);
      else w.close();
    }
    const err = new BztError('destroyed', 'the widget was destroyed');
    this._outcome.reject(err);
    this._approved.reject(err);
    if (this._blobUrl) URL.revokeObjectURL(this._blobUrl);
    this._blobUrl = null;
    if (this._root && this._root.parentNode) this._root.parentNode.removeChild(this._root);
    this.removeAll();
  }

  // ---- session lifecycle ----------------------------------------------------------------------

  async _refresh() {
    const old = this._watcher;
    this._watcher = null;
    if (old) await old.abandon(false); // DELETE a live session, then create: never two alive
    if (this._destroyed) return;
    if (this._outcome.settled) this._outcome = deferred(true);
    this._session = null;
    this._matchCode = null;
    this._setStatus('loading');
    let session;
    try {
      // The page's backend passes `accept` on to POST /v1/sessions (tabs), or omits it (one QR).
      session = await this.options.createSession(this._domain ? { accept: [this._domain], domain: this._domain } : { accept: null, domain: null });
      if (!session || !session.id) throw new BztError('bad_session', 'createSession must return the create answer');
    } catch (e) {
      if (this._destroyed) return;
      // `cause` keeps the page backend's error: errorMessage() shows its code's text (e.g. the
      // broker's `rate_limited` passed on as e.code) rather than a generic one.
      const err = e instanceof BztError ? e : new BztError('create_failed', 'createSession failed: ' + (e && e.message), { cause: e, status: e && e.status });
      this._setStatus('error', { overlay: this.texts.createFailed, error: err });
      this.emit('error', err);
      return;
    }
    if (this._destroyed) {
      // Nobody will watch it: cancel it rather than leave it waiting for a scan.
      this._deleteOrphan(session);
      return;
    }
    this._start(session);
  }

  _deleteOrphan(session) {
    try {
      const ep = sessionEndpoints(session, this.options.baseUrl);
      this._fetch(ep.cancelUrl, { method: 'DELETE', keepalive: true, credentials: 'omit' }).catch(() => {});
    } catch (_) {
      /* not a usable session */
    }
  }

  _start(session) {
    const o = this.options;
    const w = watchSession(
      session,
      Object.assign({}, o.watchOptions || {}, {
        transport: o.transport || 'auto',
        baseUrl: o.baseUrl,
        fetch: o.fetch,
        pollSession: o.pollSession,
        cancelOnPageHide: false, // the widget handles pagehide itself
      }),
    );
    this._watcher = w;
    this._session = w.session;
    this._qrUrl = w.endpoints.qrSvgUrl;
    w.on('status', (ev) => {
      if (this._watcher !== w) return;
      this._matchCode = ev.match_code || this._matchCode;
      if (!isTerminal(ev.status)) this._setStatus(ev.status);
      this.emit('status', ev);
    });
    w.on('qr', (ev) => {
      if (this._watcher !== w) return;
      this._loadQr();
      this.emit('qr', ev);
    });
    w.on('result', (outcome) => {
      if (this._watcher !== w) return;
      this._setStatus(outcome.status);
      this.emit('result', outcome);
      this._outcome.resolve(outcome);
      if (outcome.status === 'approved') this._approved.resolve(outcome);
    });
    w.on('error', (err) => {
      if (this._watcher !== w) return;
      if (err.fatal) {
        this._setStatus('error', { overlay: this.texts.retryOverlay, error: err });
        this._outcome.reject(err);
      }
      this.emit('error', err);
    });
    w.on('transport', (ev) => {
      if (this._watcher !== w) return;
      this._onTransport(ev);
      this.emit('transport', ev);
    });
    this.emit('session', { session: w.session });
    this._setStatus(w.status);
    this.emit('status', { status: w.status, previous: null, version: w.version, device: w.device, match_code: w.matchCode, session: w.session });
    if (isTerminal(w.status)) return; // a finished session handed in: the snapshot will deliver it
    this._loadQr();
  }

  _onTransport(ev) {
    if (ev.state === 'open') {
      clearTimeout(this._hintTimer);
      this._hintTimer = null;
      this._hint.hidden = true;
    } else if (!this._hintTimer && this._hint.hidden) {
      // Only say so if it lasts: a reconnect within 2 s is not worth a flicker.
      this._hintTimer = setTimeout(() => {
        this._hintTimer = null;
        const w = this._watcher;
        if (w && !w.finished && !w.closed && w.connection !== 'open') this._hint.hidden = false;
      }, 2000);
    }
  }

  async _loadQr() {
    const url = this._qrUrl;
    if (!url) return;
    const load = ++this._qrLoads;
    this._lastQrLoad = Date.now();
    let res;
    try {
      res = await this._fetch(url, { cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      if (load !== this._qrLoads || this._destroyed) return;
      // No CORS on the image endpoint, or a blocked fetch: let the <img> load it directly.
      this._img.src = url;
      this._img.setAttribute('data-qr-rev', String(load));
      this.emit('error', new BztError('network', 'loading the QR failed: ' + (e && e.message)));
      return;
    }
    try {
      // 409 once scanned, 410 after expiry: the status events say why; keep the last image.
      if (!res.ok) throw await errorFromResponse(res);
      const blob = await res.blob();
      if (load !== this._qrLoads || this._destroyed) return;
      const objUrl = URL.createObjectURL(blob);
      if (this._blobUrl) URL.revokeObjectURL(this._blobUrl);
      this._blobUrl = objUrl;
      this._img.src = objUrl;
      this._img.setAttribute('data-qr-rev', String(load));
    } catch (e) {
      if (load !== this._qrLoads || this._destroyed) return;
      this.emit('error', e instanceof BztError ? e : new BztError('network', 'loading the QR failed: ' + (e && e.message)));
    }
  }

  _tick() {
    const w = this._watcher;
    if (!w || w.finished || w.closed || w.deadline == null) {
      this._countdown.hidden = true;
      return;
    }
    this._countdown.hidden = false;
    this._countdown.textContent = fillTemplate(this.texts.countdown, { time: formatCountdown(w.deadline - Date.now()) });
    // Polling through the backend does not carry `qr` events: keep a rotating code fresh.
    if (w.transport === 'poll' && w.status === 'pending' && Date.now() - this._lastQrLoad > (this.options.pollQrRefreshMs || 5000)) {
      this._loadQr();
    }
  }

  // ---- DOM ------------------------------------------------------------------------------------

  _build() {
    const el = (tag, cls) => {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      return e;
    };
    const root = el('div', 'bzt-widget' + (this.options.className ? ' ' + this.options.className : ''));
    if (this._domains.length) {
      const tabs = el('div', 'bzt-tabs');
      tabs.setAttribute('role', 'tablist');
      tabs.setAttribute('aria-label', this.texts.tabsLabel);
      for (const d of this._domains) {
        const b = el('button', 'bzt-tab');
        b.type = 'button';
        b.setAttribute('role', 'tab');
        b.setAttribute('data-domain', d.domain);
        b.textContent = d.label;
        b.addEventListener('click', () => {
          this.selectDomain(d.domain).catch(() => {});
        });
        tabs.appendChild(b);
      }
      root.appendChild(tabs);
      this._tabs = tabs;
    }
    const box = el('div', 'bzt-qr-box');
    const img = el('img', 'bzt-qr');
    img.alt = this.texts.qrAlt;
    img.draggable = false;
    const overlay = el('div', 'bzt-overlay');
    overlay.hidden = true;
    overlay.setAttribute('role', 'button');
    const onActivate = () => {
      if (overlay.getAttribute('data-clickable') === 'true') this.refresh();
    };
    overlay.addEventListener('click', onActivate);
    overlay.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        onActivate();
      }
    });
    box.appendChild(img);
    box.appendChild(overlay);
    const match = el('div', 'bzt-match');
    match.hidden = true;
    const matchLabel = el('span', 'bzt-match-label');
    const matchCode = el('strong', 'bzt-match-code');
    match.appendChild(matchLabel);
    match.appendChild(matchCode);
    const status = el('div', 'bzt-status');
    status.setAttribute('role', 'status');
    status.setAttribute('aria-live', 'polite');
    const errorEl = el('div', 'bzt-error');
    errorEl.setAttribute('role', 'alert');
    errorEl.hidden = true;
    const countdown = el('div', 'bzt-countdown');
    countdown.hidden = true;
    const hint = el('div', 'bzt-hint');
    hint.hidden = true;
    hint.textContent = this.texts.reconnecting;
    root.appendChild(box);
    root.appendChild(match);
    root.appendChild(status);
    root.appendChild(errorEl);
    root.appendChild(countdown);
    root.appendChild(hint);
    this._root = root;
    this._img = img;
    this._overlay = overlay;
    this._match = match;
    this._matchLabel = matchLabel;
    this._matchCodeEl = matchCode;
    this._statusEl = status;
    this._errorEl = errorEl;
    this._countdown = countdown;
    this._hint = hint;
    this._container.appendChild(root);
    this._renderTabs();
  }

  _setStatus(status, extra) {
    this._status = status;
    this._error = status === 'error' ? (extra && extra.error) || null : null;
    this._render(extra);
  }

  _renderTabs() {
    if (!this._tabs) return;
    for (const b of this._tabs.children) {
      const on = b.getAttribute('data-domain') === this._domain;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.tabIndex = on ? 0 : -1;
    }
    this._root.setAttribute('data-domain', this._domain || '');
  }

  _render(extra) {
    const t = this.texts;
    const s = this._status;
    const w = this._watcher;
    this._root.setAttribute('data-status', s);
    let text = t[s] != null ? t[s] : s;
    const reason = (s === 'rejected' || s === 'failed') && w && w.session.result ? w.session.result.reason : null;
    if (reason === 'match_failed') text = t.rejectedMatch;
    else if (reason) {
      // The broker's reasons in Chinese, a phone's Chinese decline as it is, a phone's English not at all.
      const why = reasonMessage(reason, t.reasons, '');
      if (why && why !== text) text = fillTemplate(t.withReason, { status: text, reason: why });
    }
    this._statusEl.textContent = text;
    const err = s === 'error' ? this._error : null;
    this._errorEl.hidden = !err;
    this._errorEl.textContent = err ? errorMessage(err, t.errors) : '';

    const showMatch = s === 'scanned' && !!this._matchCode;
    this._match.hidden = !showMatch;
    if (showMatch) {
      this._matchLabel.textContent = fillTemplate(t.matchPrompt, { code: this._matchCode }) + ' ';
      this._matchCodeEl.textContent = this._matchCode;
      this._match.setAttribute('aria-label', t.matchPrompt + ' ' + this._matchCode);
    }

    let overlay = null;
    let clickable = false;
    if (s === 'expired') {
      overlay = t.expiredOverlay;
      clickable = true;
    } else if (s === 'rejected' || s === 'cancelled' || s === 'failed') {
      overlay = t.retryOverlay;
      clickable = true;
    } else if (s === 'error') {
      overlay = (extra && extra.overlay) || t.retryOverlay;
      clickable = true;
    } else if (s === 'approved') {
      overlay = t.approvedOverlay;
    } else if (s === 'loading') {
      overlay = t.loading;
    } else if (s === 'scanned') {
      overlay = t.scannedOverlay;
    }
    this._overlay.hidden = overlay == null;
    this._overlay.textContent = overlay || '';
    this._overlay.setAttribute('data-clickable', clickable ? 'true' : 'false');
    this._overlay.tabIndex = clickable ? 0 : -1;
    if (isTerminal(s) || s === 'error') {
      this._countdown.hidden = true;
      this._hint.hidden = true;
    } else {
      // Draw the countdown with the status, not up to one timer tick later.
      this._tick();
    }
  }
}

function injectStyles() {
  if (typeof document === 'undefined' || document.getElementById(STYLE_ID)) return;
  const style = document.createElement('style');
  style.id = STYLE_ID;
  style.textContent = CSS;
  (document.head || document.documentElement).appendChild(style);
}

/** `options.domains`: names (`['platform', 'national']`) or `{domain, label}`; labels default to DOMAIN_LABELS. */
function normalizeDomains(list, labels) {
  if (list == null) return [];
  if (!Array.isArray(list)) throw new BztError('bad_options', 'domains must be an array of trust domain names or {domain, label}');
  return list.map((d) => {
    const domain = typeof d === 'string' ? d : d && d.domain;
    if (typeof domain !== 'string' || !domain) throw new BztError('bad_options', 'domains: every entry needs a trust domain name');
    return { domain, label: (d && d.label) || domainLabel(domain, labels) };
  });
}
