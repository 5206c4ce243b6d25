// A phone driver for running the browser tests against a real broker (BZT_BROKER_URL): it plays
// the phone with the reference CLI, `bzt phone claim`, which claims the QR (→ the browser sees
// `scanned`) and then waits for y/N on stdin (→ approve / reject).
//
//   BZT_PHONE_DRIVER=test/phone-driver-bzt-cli.mjs
//   BZT_PHONE_BIN=../target/debug/bzt BZT_PHONE_CERT=phone1/cert.pem BZT_PHONE_KEY=phone1/key.pem
import { spawn } from 'node:child_process';

const BIN = process.env.BZT_PHONE_BIN || 'bzt';
const phones = new Map(); // session id -> {child, out, exited}

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`phone driver: set ${name}`);
  return v;
}

function waitFor(p, test, what, ms = 15000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      if (test()) return resolve();
      if (p.exited) return reject(new Error(`bzt phone exited before ${what}: ${p.out}`));
      if (Date.now() - t0 > ms) return reject(new Error(`bzt phone: no ${what} in ${ms} ms: ${p.out}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

/** Claims the session's QR (the browser then shows 已扫码). */
export async function scan(session) {
  const child = spawn(BIN, ['phone', 'claim', '--cert', need('BZT_PHONE_CERT'), '--key', need('BZT_PHONE_KEY'), session.qr_text], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const p = { child, out: '', exited: false };
  child.stdout.on('data', (d) => (p.out += d));
  child.stderr.on('data', (d) => (p.out += d));
  child.on('exit', () => (p.exited = true));
  phones.set(session.id, p);
  await waitFor(p, () => /\[y\/N\]/.test(p.out), 'confirmation prompt');
  return true;
}

async function answer(session, yes) {
  const p = phones.get(session.id);
  if (!p) throw new Error('phone driver: scan() first');
  p.child.stdin.end(yes ? 'y\n' : 'n\n');
  await waitFor(p, () => p.exited, 'exit');
  phones.delete(session.id);
  return true;
}

export const approve = (session) => answer(session, true);
export const reject = (session) => answer(session, false);

process.on('exit', () => {
  for (const p of phones.values()) p.child.kill();
});
