// A Server-Sent Events reader on top of fetch + ReadableStream. Unlike EventSource it sees HTTP
// status codes and the broker's JSON error body (so a 403 from the Origin check is reported as
// `forbidden` instead of being retried forever), and it can be aborted and time-limited.
import { BztError, errorFromResponse } from './util.js';

/** Incremental parser for the text/event-stream format (WHATWG HTML, "Server-sent events"). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.reset();
  }
  reset() {
    this.event = '';
    this.data = [];
    this.id = null;
  }
  push(text) {
    this.buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }
  line(line) {
    if (line === '') {
      if (this.data.length) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.charAt(0) === ':') return; // comment / keep-alive
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.charAt(0) === ' ') value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
    // "retry" and unknown fields are ignored: the SDK has its own backoff.
  }
}

/**
 * Opens `url` as an event stream. Calls `onOpen()` once the 200 arrives and `onEvent({event, data, id})`
 * per event. Resolves when the server ends the stream; rejects with a BztError on HTTP errors
 * (`status` set, broker code when present) or network errors (`code: 'network'`), and with
 * `code: 'timeout'` when nothing (not even a keep-alive comment) arrived for `idleTimeoutMs`.
 * Aborting `signal` resolves quietly.
 */
export async function readEventStream(fetchFn, url, opts) {
  const { signal, onOpen, onEvent, idleTimeoutMs } = opts;
  const ctrl = new AbortController();
  const abortInner = () => ctrl.abort();
  if (signal) {
    if (signal.aborted) return;
    signal.addEventListener('abort', abortInner, { once: true });
  }
  let idleTimer = null;
  let timedOut = false;
  const armIdle = () => {
    if (!idleTimeoutMs) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      timedOut = true;
      ctrl.abort();
    }, idleTimeoutMs);
  };
  try {
    armIdle();
    let res;
    try {
      res = await fetchFn(url, {
        method: 'GET',
        headers: { Accept: 'text/event-stream' },
        cache: 'no-store',
        credentials: 'omit',
        signal: ctrl.signal,
      });
    } catch (err) {
      if (signal && signal.aborted) return;
      if (timedOut) throw new BztError('timeout', 'event stream did not answer in time');
      throw new BztError('network', 'event stream request failed: ' + (err && err.message), { cause: err });
    }
    if (!res.ok) throw await errorFromResponse(res);
    const type = (res.headers.get('Content-Type') || '').toLowerCase();
    if (type.indexOf('text/event-stream') < 0) {
      throw new BztError('network', 'event stream answered ' + (type || 'no content type'), { status: res.status });
    }
    if (!res.body || !res.body.getReader) {
      throw new BztError('network', 'this browser cannot stream fetch bodies');
    }
    if (onOpen) onOpen();
    armIdle();
    const reader = res.body.getReader();
    const decoder = new TextDecoder('utf-8');
    const parser = new SseParser(onEvent);
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (signal && signal.aborted) return;
        if (timedOut) throw new BztError('timeout', 'event stream went silent');
        throw new BztError('network', 'event stream broke: ' + (err && err.message), { cause: err });
      }
      if (chunk.done) break;
      armIdle();
      parser.push(decoder.decode(chunk.value, { stream: true }));
      if (signal && signal.aborted) {
        try {
          reader.cancel();
        } catch (_) {
          /* ignore */
        }
        return;
      }
    }
    // An event not closed by a blank line before the end is discarded, as the SSE spec says.
    parser.push(decoder.decode());
  } finally {
    clearTimeout(idleTimer);
    if (signal) signal.removeEventListener('abort', abortInner);
  }
}
