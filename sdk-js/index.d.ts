// Type declarations for the bzt browser SDK (dist/bzt-sdk.mjs, and window.BztSdk from dist/bzt-sdk.js).
// Hand-written; wire shapes follow the broker's PROTOCOL.md.

export declare const VERSION: string;

/** Statuses a session can have (PROTOCOL.md "Session lifecycle"). */
export type SessionStatus = 'pending' | 'scanned' | TerminalStatus;
export type TerminalStatus = 'approved' | 'rejected' | 'expired' | 'cancelled' | 'failed';
export type SessionKind = 'bind' | 'login' | 'sign' | 'encrypt' | 'decrypt';
export declare const TERMINAL_STATUSES: readonly TerminalStatus[];

/** The create answer (POST /v1/sessions, 201) as the page's backend passed it on. URLs may be absolute or relative to the broker base. */
export interface CreatedSession {
  id: string;
  browser_token: string;
  kind?: SessionKind;
  status?: SessionStatus;
  version?: number;
  qr_text?: string;
  ws_url?: string;
  events_url?: string;
  qr_svg_url?: string;
  qr_png_url?: string;
  created_at?: string;
  expires_at?: string;
  ttl_s?: number;
  [extra: string]: unknown;
}

export interface Certificate {
  pem: string;
  serial: string;
  subject: string;
  issuer: string;
  not_before: string;
  not_after: string;
  domain: string;
}

/** `result` of an approved session. */
export interface ApprovedResult {
  certificate: Certificate;
  signature_b64: string;
  tbs_b64: string;
  recipients?: Certificate[];
  wrapped_key_b64?: string;
  conversation?: { id: string; token: string; expires_at: string };
  /** A member signed with a company certificate granted to it (企业证书授权): who. */
  delegate?: { name: string; device: string };
}

/** `result` per terminal status: approved → ApprovedResult; rejected/failed → {reason}; expired/cancelled → null. */
export type SessionResult = ApprovedResult | { reason: string } | null;

/** The session as the SDK knows it: the create answer merged with every snapshot. */
export interface SessionView extends CreatedSession {
  status: SessionStatus;
  version: number;
  match_code?: string;
  device?: { name: string };
  scanned_at?: string;
  completed_at?: string;
  result?: SessionResult;
}

/** A session's terminal outcome. `local: true` when the SDK concluded `expired` itself (countdown over, broker unreachable). */
export interface Outcome {
  status: TerminalStatus;
  result: SessionResult;
  session: SessionView;
  /** The broker base URL (for openConversation). */
  baseUrl: string;
  local?: boolean;
}

export interface StatusEvent {
  status: SessionStatus | 'loading' | 'error';
  previous: string | null;
  version: number;
  device: { name: string } | null;
  /** Two digits to show large when the session was created with number_match. */
  match_code: string | null;
  session: SessionView;
}

export interface QrEvent {
  qr_text: string;
  /** Rotation sequence number (null when learnt from a snapshot). */
  seq: number | null;
  version: number;
  session: SessionView;
}

export type TransportName = 'ws' | 'sse' | 'poll';

export interface TransportEvent {
  transport: TransportName;
  state: 'connecting' | 'open' | 'closed' | 'fallback';
  /** With state 'fallback': the transport given up on. */
  from?: TransportName;
}

/**
 * Every error the SDK reports. `code` is the broker's code (`unauthorized`, `forbidden`, `not_found`,
 * `expired`, `conflict`, `rate_limited`, `unavailable`, `internal`, ...) or one of the SDK's own:
 * `network`, `timeout`, `create_failed`, `closed`, `destroyed`, `conversation_ended`, `bad_session`,
 * `bad_message`, `bad_options`. `fatal: true` means the SDK gave up on the session.
 */
export declare class BztError extends Error {
  constructor(code: string, message?: string, extra?: Record<string, unknown>);
  readonly name: 'BztError';
  code: string;
  fatal: boolean;
  /** HTTP status when the error came from an HTTP answer. */
  status?: number;
  /** Seconds, from Retry-After. */
  retryAfter?: number;
  cause?: unknown;
}

export type Unsubscribe = () => void;

/** Arguments of the `pollSession` hook: call your backend, which calls GET /v1/sessions/<id>?wait=<wait>&version=<version> with its API key. */
export interface PollArgs {
  id: string;
  version: number;
  wait: number;
  signal: AbortSignal;
  session: SessionView;
}

export interface WatchOptions {
  /** 'auto' (default): WebSocket, then SSE, then poll. */
  transport?: 'auto' | TransportName;
  /** Broker base URL for relative URLs in the session (default: the page's location). */
  baseUrl?: string;
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket;
  /** Poll fallback through your backend (the browser cannot long-poll: that needs the API key). Returns the session view unchanged (it carries `match_code` while a number-matching session is scanned). */
  pollSession?: (args: PollArgs) => Promise<SessionView | { session: SessionView }>;
  /** A WebSocket not open after this long counts as a failed attempt (default 8000). */
  wsConnectTimeoutMs?: number;
  /** 'auto': consecutive never-opened attempts before the next transport (default 2). */
  fallbackAfter?: number;
  /** Reconnect backoff: full jitter in [0, min(cap, base·2^n)] (defaults 500 and 10000). */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** An SSE stream silent this long is reopened (default 75000). */
  sseIdleTimeoutMs?: number;
  /** pollSession's `wait` in seconds (default 25). */
  pollWaitS?: number;
  /** Minimum gap between polls that brought nothing new (default 2000). */
  pollIntervalMs?: number;
  /** Poll without pollSession: length of each short SSE read (default 25000). */
  pollWindowMs?: number;
  /** After the countdown: reconnect at half of this, conclude `expired` locally at all of it (default 8000). */
  expiryGraceMs?: number;
  /** cancel() over the socket waits this long for the answer before also sending DELETE (default 3000). */
  cancelAckTimeoutMs?: number;
  /** DELETE the session (keepalive) on pagehide (default false; the widget does this itself). */
  cancelOnPageHide?: boolean;
  /** Clocks differing by more than this (judged from created_at) are corrected for (default 10000). */
  clockSkewToleranceMs?: number;
  onSnapshot?: (ev: { session: SessionView }) => void;
  onStatus?: (ev: StatusEvent) => void;
  onResult?: (outcome: Outcome) => void;
  onQr?: (ev: QrEvent) => void;
  onError?: (err: BztError) => void;
  onTransport?: (ev: TransportEvent) => void;
}

export interface SessionWatcherEvents {
  snapshot: { session: SessionView };
  status: StatusEvent;
  result: Outcome;
  qr: QrEvent;
  error: BztError;
  transport: TransportEvent;
}

/** Follows one session until a terminal state. */
export declare class SessionWatcher {
  constructor(session: CreatedSession, options?: WatchOptions);
  /**
   * Resolves with the outcome for every terminal status (approved or not); rejects only when the
   * outcome cannot be known: a fatal broker answer (`unauthorized`, `forbidden`, `not_found`) or
   * `closed` / `abandoned` by the page.
   */
  readonly result: Promise<Outcome>;
  readonly session: SessionView;
  readonly endpoints: { id: string; token: string; base: string; wsUrl: string; eventsUrl: string; qrSvgUrl: string; cancelUrl: string };
  readonly status: SessionStatus;
  readonly version: number;
  readonly matchCode: string | null;
  readonly qrText: string | null;
  readonly device: { id?: string; name?: string } | null;
  readonly transport: TransportName;
  readonly connection: 'connecting' | 'open' | 'closed';
  readonly finished: boolean;
  readonly closed: boolean;
  /** Local time (ms) at which the session expires, corrected for clock skew; null if unknown. */
  readonly deadline: number | null;
  on<K extends keyof SessionWatcherEvents>(type: K, fn: (ev: SessionWatcherEvents[K]) => void): Unsubscribe;
  once<K extends keyof SessionWatcherEvents>(type: K, fn: (ev: SessionWatcherEvents[K]) => void): Unsubscribe;
  off<K extends keyof SessionWatcherEvents>(type: K, fn: (ev: SessionWatcherEvents[K]) => void): void;
  /** `{"type":"cancel"}` on an open socket, else DELETE ?t=; resolves with the outcome. */
  cancel(): Promise<Outcome>;
  /** Stop watching and DELETE the session if still live (keepalive: survives unload). Resolves true if the DELETE succeeded. */
  abandon(keepalive?: boolean): Promise<boolean>;
  /** Stop watching without cancelling. */
  close(): void;
  /** Reconnect at once (fresh backoff). */
  reconnectNow(): void;
}

export declare function watchSession(session: CreatedSession, options?: WatchOptions): SessionWatcher;

/** zh-CN UI texts of the login widget; `{time}` and `{code}` are placeholders. */
export interface WidgetTexts {
  loading: string;
  pending: string;
  scanned: string;
  scannedOverlay: string;
  approved: string;
  rejected: string;
  rejectedMatch: string;
  expired: string;
  cancelled: string;
  failed: string;
  error: string;
  matchPrompt: string;
  countdown: string;
  expiredOverlay: string;
  retryOverlay: string;
  createFailed: string;
  approvedOverlay: string;
  reconnecting: string;
  qrAlt: string;
  /** A rejected or failed status with its reason: `{status}：{reason}`. */
  withReason: string;
  /** aria-label of the tab bar (`domains`). */
  tabsLabel: string;
  /** Overrides of ERROR_MESSAGES for this widget's error line. */
  errors: Partial<Record<ErrorCodeName, string>> | null;
  /** Overrides of REASON_MESSAGES. */
  reasons: Partial<Record<TerminalReason, string>> | null;
  /** Overrides of DOMAIN_LABELS for the tabs. */
  domains: Record<string, string> | null;
}
export declare const DEFAULT_TEXTS: Readonly<WidgetTexts>;

export interface LoginWidgetOptions {
  /** Element, or a selector matching one, that the widget is appended to. */
  container: Element | string;
  /**
   * Calls YOUR backend, which creates the session with its API key and returns the create answer.
   * With `domains`, pass `accept` on to `POST /v1/sessions` (one session per tab); without, `accept`
   * is null (one QR for every trust domain). A failure becomes a `create_failed` BztError whose
   * `cause` is what you threw; give it a string `code` (e.g. the broker's, passed on by your
   * backend) and the widget shows that code's zh-CN message.
   */
  createSession: (context: { accept: string[] | null; domain: string | null }) => Promise<CreatedSession>;
  /**
   * Tabs per trust domain (the two QR kinds of the field: 本平台证书 / 全国互认证书): names such as
   * `['platform', 'national']` or `{domain, label}`. The first tab is selected at start.
   */
  domains?: Array<string | { domain: string; label?: string }>;
  onStatus?: (ev: StatusEvent) => void;
  onResult?: (outcome: Outcome) => void;
  onQr?: (ev: QrEvent) => void;
  onError?: (err: BztError) => void;
  onSession?: (ev: { session: SessionView }) => void;
  onTransport?: (ev: TransportEvent) => void;
  texts?: Partial<WidgetTexts>;
  transport?: 'auto' | TransportName;
  baseUrl?: string;
  fetch?: typeof fetch;
  pollSession?: WatchOptions['pollSession'];
  /** Any other watcher option (timeouts, backoff, ...). */
  watchOptions?: WatchOptions;
  /** Extra class on the root element. */
  className?: string;
  /** Add the widget's small stylesheet to <head> (default true). */
  injectStyles?: boolean;
  /** Call refresh() at once (default true). */
  autoStart?: boolean;
  /** destroy() cancels a live session (default true). */
  cancelOnDestroy?: boolean;
  /** pagehide cancels a live session with a keepalive DELETE (default true). */
  cancelOnPageHide?: boolean;
  /** In poll mode, re-fetch the QR image this often while pending (default 5000). */
  pollQrRefreshMs?: number;
}

export interface LoginWidgetEvents {
  status: StatusEvent;
  result: Outcome;
  qr: QrEvent;
  error: BztError;
  session: { session: SessionView };
  transport: TransportEvent;
}

export declare class LoginWidget {
  constructor(options: LoginWidgetOptions);
  /**
   * The current session's outcome: resolves for every terminal status (approved, rejected, expired,
   * cancelled, failed); rejects only with a fatal error or `destroyed`. After a refresh it is the
   * next session's promise.
   */
  readonly result: Promise<Outcome>;
  /** The first approved outcome of any session of this widget; rejects with `destroyed`. */
  readonly approved: Promise<Outcome>;
  readonly session: SessionView | null;
  readonly status: SessionStatus | 'loading' | 'error';
  readonly watcher: SessionWatcher | null;
  readonly element: HTMLElement;
  readonly texts: WidgetTexts;
  /** The selected tab's trust domain (`domains`), else null. */
  readonly domain: string | null;
  /** The error shown while status is 'error', else null. */
  readonly error: BztError | null;
  /** Select the tab of `domain`: cancels the current session and creates one accepting only it. */
  selectDomain(domain: string): Promise<void>;
  on<K extends keyof LoginWidgetEvents>(type: K, fn: (ev: LoginWidgetEvents[K]) => void): Unsubscribe;
  once<K extends keyof LoginWidgetEvents>(type: K, fn: (ev: LoginWidgetEvents[K]) => void): Unsubscribe;
  off<K extends keyof LoginWidgetEvents>(type: K, fn: (ev: LoginWidgetEvents[K]) => void): void;
  /** Cancel the live session (if any), then create and show a new one. */
  refresh(): Promise<void>;
  /** Cancel the current session; resolves with its outcome. */
  cancel(): Promise<Outcome | null>;
  /** Cancel a live session (unless cancelOnDestroy: false), stop timers and sockets, remove the DOM. */
  destroy(): void;
}

export declare function createLoginWidget(options: LoginWidgetOptions): LoginWidget;

/** The broker's error codes (docs/protocol.md "Errors"). */
export type BrokerErrorCode =
  | 'invalid_request' | 'unauthorized' | 'forbidden' | 'not_found' | 'method_not_allowed' | 'already_claimed'
  | 'conflict' | 'expired' | 'payload_too_large' | 'bad_signature' | 'untrusted_certificate' | 'rate_limited'
  | 'internal' | 'unavailable' | 'seal_not_acceptable';
/** The SDK's own error codes (BztError). */
export type SdkErrorCode =
  | 'network' | 'timeout' | 'create_failed' | 'closed' | 'destroyed' | 'conversation_ended' | 'bad_session'
  | 'bad_message' | 'bad_options';
export type ErrorCodeName = BrokerErrorCode | SdkErrorCode;
/** The reasons the broker writes (docs/protocol.md "Terminal reasons"); a phone's decline is free text. */
export type TerminalReason = 'match_failed' | 'too_many_bad_completions' | 'bad_signature' | 'certificate_not_acceptable' | 'conversation_ended';

/** zh-CN message of every error code, broker's and SDK's: reuse, or override per call. */
export declare const ERROR_MESSAGES: Readonly<Record<ErrorCodeName, string>>;
/** zh-CN text of every reason the broker writes. */
export declare const REASON_MESSAGES: Readonly<Record<TerminalReason, string>>;
/** zh-CN text of how a conversation ended. */
export declare const ENDED_BY_MESSAGES: Readonly<Record<EndedBy, string>>;
/** zh-CN text of every session status. */
export declare const STATUS_MESSAGES: Readonly<Record<SessionStatus, string>>;
/** 本平台证书 / 全国互认证书. */
export declare const DOMAIN_LABELS: Readonly<Record<'platform' | 'national', string>>;
/** The zh-CN text of an error (BztError, `{error: {code}}`, `{code}` or a code); never the broker's English. */
export declare function errorMessage(error: unknown, overrides?: Partial<Record<string, string>>): string;
/**
 * The zh-CN text of a terminal reason: the table's, a phone's Chinese text as it is, else `fallback`
 * (default 已在手机上拒绝). Null for no reason.
 */
export declare function reasonMessage(reason: string | null | undefined, overrides?: Partial<Record<string, string>> | null, fallback?: string): string | null;
export declare function endedByMessage(by: string, overrides?: Partial<Record<string, string>>): string;
export declare function domainLabel(domain: string | null | undefined, overrides?: Record<string, string> | null): string;
export interface ParsedSubject {
  /** Every attribute in order, escapes undone. */
  attributes: Array<{ type: string; value: string }>;
  /** The first value of any of these attribute types (case-insensitive). */
  get(...types: string[]): string | null;
  /** 姓名 (CN). */
  name: string | null;
  /** 单位 (O). */
  organization: string | null;
  /** OU. */
  unit: string | null;
  /** 统一社会信用代码 (organizationIdentifier, 2.5.4.97). */
  uscc: string | null;
  country: string | null;
}
/** Reads an RFC 4514 subject or issuer as the broker writes it. */
export declare function parseSubject(subject: string | null | undefined): ParsedSubject;
/** `2027-12-06 00:53:26（北京时间）` (UTC+8); `{suffix: false}` drops the suffix; '' for no time. */
export declare function formatBeijingTime(time: string | Date | null | undefined, options?: { suffix?: boolean }): string;
export interface CertificateSummary {
  name: string | null;
  organization: string | null;
  uscc: string | null;
  domain: string | null;
  /** 本平台证书 / 全国互认证书. */
  domainLabel: string;
  serial: string | null;
  issuerName: string | null;
  /** Beijing time. */
  notBefore: string;
  notAfter: string;
}
/** What a result panel shows of `result.certificate`. */
export declare function describeCertificate(certificate: Certificate | null | undefined, overrides?: Record<string, string> | null): CertificateSummary;

export interface RequestResult {
  type?: 'request_result';
  request_id: string;
  status: 'approved' | 'rejected' | 'expired';
  signature_b64?: string;
  auto_confirmed?: boolean;
  reason?: string;
  /** A member answered with a company certificate granted to it (企业证书授权): who. */
  delegate?: { name: string; device: string };
  /** true when the SDK settled it as expired itself. */
  local?: boolean;
}

export type EndedBy = 'phone' | 'requester' | 'idle' | 'limit' | 'certificate';

export interface ConversationTexts {
  connecting: string;
  open: string;
  reconnecting: string;
  ended_phone: string;
  ended_requester: string;
  ended_idle: string;
  ended_limit: string;
  ended_certificate: string;
  pending: string;
}
export declare const CONVERSATION_TEXTS: Readonly<ConversationTexts>;

/** `result.conversation` plus where the broker is, or a ws_url. */
export type ConversationRef =
  | { id: string; token: string; expires_at?: string; baseUrl?: string; ws_url?: string }
  | { ws_url: string; expires_at?: string; baseUrl?: string }
  | { conversation: { id: string; token: string; expires_at?: string }; baseUrl?: string };

export interface ConversationOptions {
  baseUrl?: string;
  /** Your backend POSTs /v1/conversations/<cid>/requests (API key) and returns {request_id, expires_at}. */
  sendRequest?: (req: { conversation_id: string; tbs_b64: string; display?: { title: string; detail?: string } }) => Promise<{ request_id: string; expires_at?: string }>;
  /** Your backend GETs /v1/conversations/<cid>/requests/<rid>?wait=N: recovers results sent while the socket was away. */
  pollRequest?: (args: { conversation_id: string; request_id: string; wait: number }) => Promise<Partial<RequestResult> & { status: string }>;
  /** Your backend DELETEs /v1/conversations/<cid>. Without it end() sends DELETE ?t=<token> from the browser. */
  end?: (args: { id: string }) => Promise<unknown>;
  /** Shows a one-line status (会话进行中 / 对方已结束会话 / ...). */
  container?: Element | string;
  texts?: Partial<ConversationTexts>;
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  wsConnectTimeoutMs?: number;
  requestGraceMs?: number;
  endAckTimeoutMs?: number;
  onRequestResult?: (r: RequestResult) => void;
  onEnded?: (ev: { by: EndedBy; local: boolean; at?: string }) => void;
  onError?: (err: BztError) => void;
  onState?: (ev: { state: Conversation['state'] }) => void;
}

export interface ConversationEvents {
  request_result: RequestResult;
  ended: { by: EndedBy; local: boolean; at?: string };
  error: BztError;
  state: { state: Conversation['state'] };
}

export declare class Conversation {
  constructor(ref: ConversationRef, options?: ConversationOptions);
  readonly id: string;
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'ended' | 'closed';
  readonly endedBy: EndedBy | null;
  /** Resolves when the conversation ends (by the phone, the requester, idle or limit). */
  readonly ended: Promise<{ by: EndedBy; local: boolean; at?: string }>;
  on<K extends keyof ConversationEvents>(type: K, fn: (ev: ConversationEvents[K]) => void): Unsubscribe;
  off<K extends keyof ConversationEvents>(type: K, fn: (ev: ConversationEvents[K]) => void): void;
  /** Sends through options.sendRequest; resolves with the request's result (approved, rejected or expired). */
  request(req: { tbs_b64: string; display?: { title: string; detail?: string } }): Promise<RequestResult>;
  /** Ends the conversation (options.end, else DELETE ?t=). */
  end(): Promise<{ by: EndedBy; local: boolean; at?: string }>;
  /** Stop listening; the conversation goes on at the broker. */
  close(): void;
  /** close() and remove the status line. */
  destroy(): void;
}

export declare function openConversation(ref: ConversationRef, options?: ConversationOptions): Conversation;

/** Absolute URLs for a session (what the SDK connects to). */
export declare function sessionEndpoints(
  session: CreatedSession,
  baseUrl?: string,
): { id: string; token: string; base: string; wsUrl: string; eventsUrl: string; qrSvgUrl: string; cancelUrl: string };

export as namespace BztSdk;
