// Copies sm-crypto's browser build (UMD, exposes window.sm2) into vendor/, with its MIT licence
// as a header. Run after `npm ci` when the sm-crypto version in package.json changes:
//   npm run vendor
// The broker never needs npm: vendor/ is committed and served as static files.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkgDir = path.join(root, 'node_modules', 'sm-crypto');
const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const licence = fs.readFileSync(path.join(pkgDir, 'LICENCE_MIT'), 'utf8').trim();
const header =
  `/*!\n * sm-crypto ${pkg.version} (npm package "sm-crypto", dist/sm2.js), vendored unchanged below.\n` +
  ` * https://github.com/JuneAndGreen/sm-crypto\n *\n` +
  licence.split('\n').map((l) => (' * ' + l).trimEnd()).join('\n') +
  '\n */\n';
fs.mkdirSync(path.join(root, 'vendor'), { recursive: true });
for (const f of ['sm2.js']) {
  const body = fs.readFileSync(path.join(pkgDir, 'dist', f), 'utf8');
  fs.writeFileSync(path.join(root, 'vendor', f), header + body);
  console.log(`vendor/${f} <- sm-crypto ${pkg.version}`);
}
