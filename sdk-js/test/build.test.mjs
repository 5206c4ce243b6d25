// dist/ is committed: it must be exactly what `npm run build` makes from src/, and every export
// must be declared in the hand-written types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { build } from '../build.mjs';
import { ROOT } from './harness.mjs';

test('dist/ is up to date with src/ (run npm run build)', () => {
  for (const [rel, text] of Object.entries(build())) {
    const cur = fs.readFileSync(path.join(ROOT, rel), 'utf8');
    assert.ok(cur === text, `${rel} is stale: run npm run build`);
  }
});

test('the ESM build exports what index.d.ts declares', async () => {
  const mod = await import('../dist/bzt-sdk.mjs');
  const dts = fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8');
  for (const name of Object.keys(mod)) {
    assert.match(dts, new RegExp(`export declare (const|function|class) ${name}\\b`), `${name} missing from index.d.ts`);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(mod.VERSION, pkg.version);
});

test('the Node helper exports what node/index.d.ts declares', async () => {
  const mod = await import('../node/index.mjs');
  const dts = fs.readFileSync(path.join(ROOT, 'node/index.d.ts'), 'utf8');
  for (const name of Object.keys(mod).filter((n) => n !== 'default')) {
    assert.match(dts, new RegExp(`export declare (const|function|class) ${name}\\b`), `${name} missing from node/index.d.ts`);
  }
});

test('the browser SDK has no dependencies and stays ES2020', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.dependencies, undefined);
  const js = fs.readFileSync(path.join(ROOT, 'dist/bzt-sdk.js'), 'utf8');
  assert.doesNotMatch(js, /\brequire\(|^import /m);
  // Syntax newer than ES2020 that would break older government-intranet browsers.
  assert.doesNotMatch(js, /\?\?=|\|\|=|&&=|\.at\(|\breplaceAll\(|\bstatic\s*\{|^\s*#[a-z]\w*\s*[;=(]|\bObject\.hasOwn\(/m);
});
