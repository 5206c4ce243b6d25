// Public surface of the browser SDK. build.mjs reads the export lines below: each names what the
// ESM build exports and what window.BztSdk holds.
export { VERSION, BztError, TERMINAL_STATUSES } from './util.js';
export { createLoginWidget, LoginWidget, DEFAULT_TEXTS } from './widget.js';
export { watchSession, SessionWatcher } from './watch.js';
export { openConversation, Conversation, CONVERSATION_TEXTS } from './conversation.js';
export { sessionEndpoints } from './session.js';
