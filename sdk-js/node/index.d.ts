// Type declarations for the bzt Node backend helper (node/index.mjs, node/index.cjs).
/// <reference types="node" />

/** A non-2xx broker answer (`code` from PROTOCOL.md "Errors"), or `network` / `timeout` (status 0). */
export declare class BztApiError extends Error {
  constructor(status: number, code: string, message?: string, retryAfter?: number);
  readonly name: 'BztApiError';
  status: number;
  code: string;
  /** Seconds, from Retry-After (429). */
  retryAfter?: number;
}

export interface CreateSessionBody {
  kind: 'bind' | 'login' | 'sign' | 'encrypt' | 'decrypt';
  display: { title: string; detail?: string };
  ttl_s?: number;
  accept?: string[];
  expect_cert?: { serial: string; issuer?: string };
  requester?: { ip?: string; user_agent?: string; origin?: string };
  tbs_b64?: string;
  /** Kind `sign`, instead of `tbs_b64`: a GB/T 38540 seal signature over this SM3 hash (docs/seals.md). */
  seal?: { data_hash_b64: string; property_info: string };
  conversation?: { max_requests?: number; idle_s?: number; max_s?: number };
  envelope_header_b64?: string;
  reply_key?: string;
  /** Kind `decrypt`: the opening window (开标时间), RFC 3339 times. */
  opening?: { not_before: string; not_after: string };
  webhook_url?: string;
  rotate_s?: number;
  number_match?: boolean;
}

/** The create answer (201): hand it to the page as is. */
export interface CreatedSession {
  id: string;
  kind: string;
  status: string;
  version: number;
  qr_text: string;
  browser_token: string;
  ws_url: string;
  events_url: string;
  qr_svg_url: string;
  qr_png_url: string;
  created_at: string;
  expires_at: string;
  ttl_s: number;
}

/** `POST /v1/conversations/<cid>/requests` body: `tbs_b64` or `seal`, not both. */
export interface ConversationRequestBody {
  tbs_b64?: string;
  /** A seal signature over this SM3 hash instead of `tbs_b64` (docs/seals.md). */
  seal?: { data_hash_b64: string; property_info: string };
  display: { title: string; detail?: string };
}

/** The `202` answer: the request is queued for the phone. */
export interface ConversationRequestAccepted {
  request_id: string;
  expires_at: string;
}

export interface SessionView {
  id: string;
  kind: string;
  status: 'pending' | 'scanned' | 'approved' | 'rejected' | 'expired' | 'cancelled' | 'failed';
  version: number;
  display: { title: string; detail?: string };
  created_at: string;
  expires_at: string;
  scanned_at?: string;
  completed_at?: string;
  device?: { name: string };
  result?: unknown;
  [extra: string]: unknown;
}

export interface BztClient {
  readonly baseUrl: string;
  createSession(body: CreateSessionBody): Promise<CreatedSession>;
  getSession(id: string): Promise<SessionView>;
  /** Long-poll (wait 0..30 s, default 25): answers when the version differs from `version`, or the session is terminal. */
  waitSession(id: string, version?: number, wait?: number): Promise<SessionView>;
  /** Throws BztApiError code `conflict` (409) if already terminal. */
  cancelSession(id: string): Promise<SessionView>;
  sendConversationRequest(conversationId: string, body: ConversationRequestBody): Promise<ConversationRequestAccepted>;
  getConversationRequest(conversationId: string, requestId: string, wait?: number): Promise<{ request_id: string; status: string; signature_b64?: string; auto_confirmed?: boolean; [k: string]: unknown }>;
  endConversation(conversationId: string): Promise<unknown>;
}

export declare function createClient(opts: { apiKey: string; baseUrl: string; fetch?: typeof fetch; timeoutMs?: number }): BztClient;
export declare function createSession(apiKey: string, baseUrl: string, body: CreateSessionBody): Promise<CreatedSession>;
export declare function getSession(apiKey: string, baseUrl: string, id: string): Promise<SessionView>;
export declare function waitSession(apiKey: string, baseUrl: string, id: string, version?: number, wait?: number): Promise<SessionView>;
export declare function cancelSession(apiKey: string, baseUrl: string, id: string): Promise<SessionView>;

/**
 * Verifies `Bzt-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` over the exact raw
 * body bytes, constant-time, with |now - t| <= toleranceSeconds (default 300).
 */
export declare function verifyWebhook(
  secret: string,
  header: string | undefined,
  rawBody: Buffer | Uint8Array | ArrayBuffer | string,
  toleranceSeconds?: number,
  nowSeconds?: number,
): boolean;

/** The header value the broker would send for `rawBody` at unix time `t` (default now). For tests. */
export declare function signWebhook(secret: string, rawBody: Buffer | Uint8Array | ArrayBuffer | string, t?: number): string;
