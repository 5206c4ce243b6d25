// ESM entry of the Node helper; the implementation is node/index.cjs (so `require` works too).
import cjs from './index.cjs';

export const {
  BztApiError,
  createClient,
  createSession,
  getSession,
  waitSession,
  cancelSession,
  verifyWebhook,
  signWebhook,
} = cjs;
export default cjs;
