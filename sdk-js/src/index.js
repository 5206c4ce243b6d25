// Public surface of the browser SDK. build.mjs reads the export lines below: each names what the
// ESM build exports and what window.BztSdk holds.
export { VERSION, BztError, TERMINAL_STATUSES } from './util.js';
export { createLoginWidget, LoginWidget, DEFAULT_TEXTS } from './widget.js';
export {
  ERROR_MESSAGES, REASON_MESSAGES, ENDED_BY_MESSAGES, STATUS_MESSAGES, DOMAIN_LABELS, errorMessage, reasonMessage, endedByMessage, domainLabel, parseSubject, formatBeijingTime, describeCertificate,
} from './messages.js';
export { watchSession, SessionWatcher } from './watch.js';
export { openConversation, Conversation, CONVERSATION_TEXTS } from './conversation.js';
export { sessionEndpoints } from './session.js';
