// The broker's own lists of error codes and reasons, read from its Rust source: the SDK's zh-CN
// tables are checked against these, so a code added to the broker without a message fails a test.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const rust = (rel) => fs.readFileSync(path.join(REPO, rel), 'utf8');

/** ErrorCode::ALL of crates/bzt-core/src/error.rs, as the wire strings of `as_str`. */
export function brokerErrorCodes() {
  const src = rust('crates/bzt-core/src/error.rs');
  const count = Number(/pub const ALL: \[ErrorCode; (\d+)\]/.exec(src)[1]);
  const codes = [...new Set([...src.matchAll(/ErrorCode::\w+ => "(\w+)"/g)].map((m) => m[1]))];
  assert.equal(codes.length, count, 'every code of ErrorCode::ALL has its as_str arm');
  return codes;
}
/** bzt_core::reason::ALL. */
export function brokerReasons() {
  const src = rust('crates/bzt-core/src/reason.rs');
  const count = Number(/pub const ALL: \[&str; (\d+)\]/.exec(src)[1]);
  const reasons = [...src.matchAll(/pub const \w+: &str = "(\w+)";/g)].map((m) => m[1]);
  assert.equal(reasons.length, count, 'every reason constant is in reason::ALL');
  return reasons;
}
/** EndedBy of crates/bzt-wire/src/conversation.rs (the wire enum bzt-core re-exports). */
export function brokerEndedBy() {
  const ended = [...rust('crates/bzt-wire/src/conversation.rs').matchAll(/EndedBy::\w+ => "(\w+)"/g)].map((m) => m[1]);
  assert.ok(ended.length >= 5, 'EndedBy::as_str is where this reads it');
  return ended;
}

