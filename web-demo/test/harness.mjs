// Test plumbing for the web demo: the REAL broker (`bzt serve` in development mode on a free
// port with a throw-away data directory) and Debian's Chromium driven by playwright-core.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(ROOT, '..');
export const OUT = path.join(ROOT, 'test-output');
export const CHROMIUM = process.env.BZT_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-quic',
  '--no-first-run',
  '--disable-sync',
];
export const PIN = '135790';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

let binary = null;
/**
 * The broker binary: BZT_BIN, else `cargo build --bin bzt` (a no-op when up to date) and a private
 * copy of target/debug/bzt, so that another build sharing the target directory cannot swap the
 * binary under the tests.
 */
export function brokerBinary() {
  if (process.env.BZT_BIN) return process.env.BZT_BIN;
  if (binary) return binary;
  const r = spawnSync('cargo', ['build', '--bin', 'bzt'], { cwd: REPO, stdio: ['ignore', 2, 2] });
  if (r.status !== 0) throw new Error('cargo build --bin bzt failed');
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(REPO, 'target');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bzt-web-demo-bin-'));
  binary = path.join(dir, 'bzt');
  fs.copyFileSync(path.join(targetDir, 'debug', 'bzt'), binary);
  fs.chmodSync(binary, 0o755);
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return binary;
}

/** The banner line (printed before the broker serves) that names the co-signing service's address. */
const COSIGNER_LINE = /co-signing service \(密钥拆分\): (http:\/\/\S+)/;

/** Starts the real broker in development mode (`env`: extra BZT_* settings); resolves when /healthz answers. */
export async function startBroker({ env: extraEnv = {} } = {}) {
  // The port is probed free, then handed to the broker: another process may take it in between,
  // so a broker that could not bind is started again on another port.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startBrokerOn(await freePort(), extraEnv);
    } catch (e) {
      if (attempt >= 3 || !/Address already in use/.test(String(e.message))) throw e;
    }
  }
}

async function startBrokerOn(port, extraEnv) {
  const bin = brokerBinary();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bzt-web-demo-'));
  const url = `http://127.0.0.1:${port}`;
  // The broker reads every BZT_* variable as configuration: pass none of the caller's (BZT_CONFIG,
  // BZT_CHROMIUM, BZT_BIN, ...), only ours.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BZT_')));
  Object.assign(env, { BZT_LISTEN: `127.0.0.1:${port}`, BZT_DATA_DIR: dataDir, RUST_LOG: process.env.RUST_LOG || 'warn' });
  Object.assign(env, extraEnv);
  // The broker finds web-demo/ and sdk-js/dist relative to its working directory.
  const child = spawn(bin, ['serve'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((r) => child.once('exit', r));
  const closed = new Promise((r) => child.once('close', r));
  const deadline = Date.now() + 60000;
  for (;;) {
    if (child.exitCode !== null) {
      await closed; // the last of its output
      fs.rmSync(dataDir, { recursive: true, force: true });
      throw new Error(`bzt serve exited (${child.exitCode}):\n${log}`);
    }
    try {
      const r = await fetch(url + '/healthz');
      if (r.ok && COSIGNER_LINE.test(log)) break;
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`bzt serve did not answer /healthz in 60 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    /** The development co-signing service (密钥拆分) the broker started beside itself. */
    cosignerUrl: log.match(COSIGNER_LINE)[1],
    dataDir,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium with a fresh, throw-away user-data-dir; `extraArgs` are added to CHROMIUM_ARGS. */
export async function launchBrowser(extraArgs = []) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set BZT_CHROMIUM)`);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bzt-web-demo-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    acceptDownloads: true,
    viewport: { width: 1000, height: 760 },
    locale: 'zh-CN',
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Broker + browser for one test; everything is torn down by the returned cleanup. */
export async function setup(t) {
  const broker = await startBroker();
  const browser = await launchBrowser();
  const errors = [];
  browser.context.on('page', (p) => p.on('pageerror', (e) => errors.push(String(e))));
  t.after(async () => {
    await browser.close();
    await broker.stop();
  });
  return { broker, browser, errors };
}

export async function shot(page, name) {
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, name + '.png'), fullPage: true });
}

/** Opens phone.html and gets a development certificate (trust domain `domain`, default platform) for a key made in the page. */
export async function openPhone(browser, base, { cn = '张三', pin = PIN, domain = null } = {}) {
  const phone = await browser.context.newPage();
  await phone.setViewportSize({ width: 460, height: 900 });
  await phone.goto(base + '/demo/phone.html');
  await phone.fill('#cn', cn);
  if (domain) await phone.selectOption('#domain', domain);
  await phone.fill('#pin-new', pin);
  await phone.click('#issue');
  await phone.locator('#cert-serial').waitFor({ timeout: 20000 });
  return phone;
}

/** Pastes the QR text into the phone page and claims it. */
export async function scan(phone, qrText) {
  await phone.fill('#qr-input', qrText);
  await phone.click('#claim');
  await phone.locator('#confirm:not(.hidden)').waitFor({ timeout: 15000 });
}

/** 开标大厅: a new hall page with the sealed bid file `file` chosen. */
export async function openHall(browser, base, file) {
  const hall = await browser.context.newPage();
  await hall.goto(base + '/demo/hall.html');
  await hall.setInputFiles('#file', file);
  return hall;
}

/** The hall starts its decrypt session and `phone` scans the QR code it shows. */
export async function scanAtTheHall(hall, phone) {
  await hall.click('#start');
  await hall.waitForFunction(() => document.querySelector('#qr-text').textContent.includes('/q/'), null, { timeout: 20000 });
  await scan(phone, (await hall.textContent('#qr-text')).trim());
}

/** Number matching: waits for the two digits `page` shows, then `phone` picks them; answers them. */
export async function pickMatchCode(page, phone) {
  await page.locator('.bzt-match:not([hidden])').waitFor({ timeout: 15000 });
  const code = (await page.textContent('.bzt-match-code')).trim();
  await phone.click(`#match-choices button[data-code="${code}"]`);
  return code;
}

export async function confirmWithPin(phone, pin = PIN) {
  await phone.fill('#pin', pin);
  await phone.click('#approve');
}

/** The QR text the login widget currently shows (login.html copies it into #qr-text). */
export async function qrTextOf(page, previous = null) {
  const loc = page.locator('#qr-text');
  await page.waitForFunction(
    (prev) => {
      const t = document.getElementById('qr-text').textContent;
      return t.includes('/q/') && t !== prev;
    },
    previous,
    { timeout: 20000 },
  );
  return (await loc.textContent()).trim();
}

// Build (or check) the broker before any test's clock starts.
brokerBinary();

/** A throw-away directory removed after the test. */
export function tempDir(t, prefix = 'bzt-web-demo-files-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The modules of a QR code as the broker's qr.svg draws them (one `M<x> <y>h<s>v<s>…` square per
 * dark module): `{ size, modules: [[x, y], ...], module }` in SVG units.
 */
export function qrSvgModules(svg) {
  const size = Number(/viewBox="0 0 (\d+) (\d+)"/.exec(svg)[1]);
  const modules = [];
  let module = 0;
  for (const m of svg.matchAll(/M(\d+) (\d+)h(\d+)/g)) {
    modules.push([Number(m[1]), Number(m[2])]);
    module = Number(m[3]);
  }
  return { size, modules, module };
}

/**
 * A YUV4MPEG2 video (what Chromium's --use-file-for-fake-video-capture plays, in a loop) of
 * `frames` identical frames showing the QR code of `svg`, centred on white, 640x480, 4:2:0.
 */
export function qrY4m(svg, file, { width = 640, height = 480, frames = 2 } = {}) {
  const { size, modules, module } = qrSvgModules(svg);
  const scale = Math.floor((height - 40) / size) || 1;
  const px = Math.max(1, Math.floor(module * scale));
  const y = Buffer.alloc(width * height, 235); // white (video range)
  const ox = Math.floor((width - size * scale) / 2);
  const oy = Math.floor((height - size * scale) / 2);
  for (const [mx, my] of modules) {
    const x0 = ox + mx * scale;
    const y0 = oy + my * scale;
    for (let yy = y0; yy < y0 + px; yy++) y.fill(16, yy * width + x0, yy * width + x0 + px); // black
  }
  const chroma = Buffer.alloc((width / 2) * (height / 2), 128);
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F5:1 Ip A1:1 C420jpeg\n`)];
  for (let i = 0; i < frames; i++) parts.push(Buffer.from('FRAME\n'), y, chroma, chroma);
  fs.writeFileSync(file, Buffer.concat(parts));
  return file;
}

/** Chromium flags for a fake camera that plays `y4m`, with the permission prompt auto-accepted. */
export const fakeCameraArgs = (y4m) => [
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  `--use-file-for-fake-video-capture=${y4m}`,
];

/** Clicks a link that downloads and saves the file to `file`. */
export async function download(page, selector, file) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  await dl.saveAs(file);
  return { file, suggested: dl.suggestedFilename() };
}
