// Copies the browser builds the demo pages load into vendor/, each with its licence:
// - sm-crypto's dist/sm2.js (window.sm2) and dist/sm3.js (window.sm3), MIT, licence as a header;
// - jsqr's dist/jsQR.js (window.jsQR, the phone simulator's camera scan), Apache-2.0, with a short
//   header and the full licence text beside it (vendor/jsQR.LICENSE).
// Run after `npm ci` when a version in package.json changes:
//   npm run vendor
// The broker never needs npm: vendor/ is committed and served as static files.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const vendor = path.join(root, 'vendor');
fs.mkdirSync(vendor, { recursive: true });
const pkgOf = (name) => {
  const dir = path.join(root, 'node_modules', name);
  return { dir, pkg: JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) };
};

// sm-crypto (MIT): the licence is short enough to travel as the header.
{
  const { dir, pkg } = pkgOf('sm-crypto');
  const licence = fs.readFileSync(path.join(dir, 'LICENCE_MIT'), 'utf8').trim();
  for (const f of ['sm2.js', 'sm3.js']) {
    const header =
      `/*!\n * sm-crypto ${pkg.version} (npm package "sm-crypto", dist/${f}), vendored unchanged below.\n` +
      ` * https://github.com/JuneAndGreen/sm-crypto\n *\n` +
      licence.split('\n').map((l) => (' * ' + l).trimEnd()).join('\n') +
      '\n */\n';
    const body = fs.readFileSync(path.join(dir, 'dist', f), 'utf8');
    fs.writeFileSync(path.join(vendor, f), header + body);
    console.log(`vendor/${f} <- sm-crypto ${pkg.version}`);
  }
}

// jsqr (Apache-2.0): header naming the licence, full text in vendor/jsQR.LICENSE.
{
  const { dir, pkg } = pkgOf('jsqr');
  const header =
    `/*!\n * jsQR ${pkg.version} (npm package "jsqr", dist/jsQR.js), vendored unchanged below.\n` +
    ` * https://github.com/cozmo/jsQR\n *\n` +
    ` * Licensed under the Apache License, Version 2.0; the full text is in jsQR.LICENSE next to\n` +
    ` * this file (a copy of the package's LICENSE). Distributed on an "AS IS" BASIS, WITHOUT\n` +
    ` * WARRANTIES OR CONDITIONS OF ANY KIND.\n */\n`;
  const body = fs.readFileSync(path.join(dir, 'dist', 'jsQR.js'), 'utf8');
  fs.writeFileSync(path.join(vendor, 'jsQR.js'), header + body);
  fs.copyFileSync(path.join(dir, 'LICENSE'), path.join(vendor, 'jsQR.LICENSE'));
  console.log(`vendor/jsQR.js, vendor/jsQR.LICENSE <- jsqr ${pkg.version}`);
}
