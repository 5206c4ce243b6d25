// The project's documents link only inside the repository: a clone has everything they point to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const docs = ['README.md', 'sdk-js/README.md', ...readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md')).map((f) => 'docs/' + f)];

test('every relative link in README and docs/ names a file of the repository', () => {
  const broken = [];
  for (const doc of docs) {
    const text = readFileSync(join(repo, doc), 'utf8');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const href = m[1];
      if (/^(https?:|mailto:|#)/.test(href)) continue;
      const path = href.split('#')[0];
      const target = resolve(repo, dirname(doc), path);
      if (!target.startsWith(repo + '/') || !existsSync(target)) broken.push(`${doc}: ${href}`);
    }
    assert.doesNotMatch(text, /shared\/PROTOCOL\.md/, `${doc} cites the wire contract outside the repository`);
  }
  assert.deepEqual(broken, []);
});

test('docs/protocol.md is the complete contract: every endpoint of the generated openapi.json is in it', () => {
  const protocol = readFileSync(join(repo, 'docs/protocol.md'), 'utf8');
  const openapi = JSON.parse(readFileSync(join(repo, 'docs/openapi.json'), 'utf8'));
  const missing = [];
  for (const path of Object.keys(openapi.paths)) {
    // `{id}` in OpenAPI is `<id>` (or `<cid>`, `<rid>`, `<serial>`) in the prose.
    const stem = path.split('/{')[0];
    if (!protocol.includes(stem)) missing.push(path);
  }
  assert.deepEqual(missing, []);
});
