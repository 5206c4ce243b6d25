// Run by `npm test` before the suite: fail at once, with a clear message, if Chromium is missing.
import { assertChromium } from './harness.mjs';

try {
  assertChromium();
} catch (err) {
  console.error('\n' + err.message + '\n');
  process.exit(1);
}
