// Turns the create answer (as the page's backend passed it on) into the absolute URLs the SDK uses.
import { BztError, resolveUrl, toWsUrl, toHttpUrl, trimSlash, pageHref } from './util.js';

const BROWSER_PATH = /^(.*)\/v1\/sessions\/[^/]+\/(?:ws|events|qr\.svg|qr\.png)$/;

/**
 * The broker's base URL (origin plus any path prefix, no trailing slash), from `baseUrl` when given,
 * else from the first absolute browser URL in the session.
 */
export function brokerBaseOf(session, baseUrl) {
  if (baseUrl) return trimSlash(resolveUrl(baseUrl) || baseUrl);
  const candidates = [session.events_url, session.qr_svg_url, session.ws_url, session.qr_png_url];
  for (const c of candidates) {
    if (!c) continue;
    const abs = resolveUrl(c);
    if (!abs) continue;
    const u = new URL(toHttpUrl(abs));
    const m = BROWSER_PATH.exec(u.pathname);
    return trimSlash(u.origin + (m ? m[1] : ''));
  }
  const here = pageHref();
  if (here) return new URL(here).origin;
  throw new BztError('bad_session', 'cannot tell the broker address: pass baseUrl');
}

function tokenOf(session) {
  if (session.browser_token) return session.browser_token;
  for (const c of [session.ws_url, session.events_url, session.qr_svg_url]) {
    if (!c) continue;
    try {
      const t = new URL(c, 'http://x/').searchParams.get('t');
      if (t) return t;
    } catch (_) {
      /* ignore */
    }
  }
  return null;
}

/**
 * Normalises a session: `{ id, token, base, wsUrl, eventsUrl, qrSvgUrl, cancelUrl }` (all absolute).
 * URLs the session carries win; missing ones are built from the base, id and browser token.
 * Relative URLs are resolved against `baseUrl` when given, else against the page.
 */
export function sessionEndpoints(session, baseUrl) {
  if (!session || typeof session !== 'object' || !session.id) {
    throw new BztError('bad_session', 'session must be the create answer (with id and browser_token)');
  }
  const token = tokenOf(session);
  if (!token) throw new BztError('bad_session', 'session has no browser_token');
  const base = brokerBaseOf(session, baseUrl);
  // "/v1/..." is relative to the broker base (which may carry a path prefix such as "/bzt").
  const rel = (u) => {
    if (!u) return null;
    if (baseUrl && u.charAt(0) === '/' && u.charAt(1) !== '/') return base + u;
    return resolveUrl(u, baseUrl ? base + '/' : undefined);
  };
  const id = encodeURIComponent(session.id);
  const t = encodeURIComponent(token);
  const path = base + '/v1/sessions/' + id;
  return {
    id: session.id,
    token,
    base,
    wsUrl: toWsUrl(rel(session.ws_url) || path + '/ws?t=' + t),
    eventsUrl: toHttpUrl(rel(session.events_url) || path + '/events?t=' + t),
    qrSvgUrl: rel(session.qr_svg_url) || path + '/qr.svg?t=' + t,
    cancelUrl: path + '?t=' + t,
  };
}
