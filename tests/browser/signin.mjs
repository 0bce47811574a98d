// Real-browser sign-in test of the Portcullis demo (run by tests/blackbox/browser.rs).
//
//   node signin.mjs <public 127.0.0.1:PORT> <host> <username> <password> <totp-secret> <out-dir>
//
// Drives Debian's Chromium through playwright-core: password + TOTP sign-in in two
// separate browser contexts (A and B), then A ends B's session on the account page and
// B is sent back to the login page. Every request to a non-loopback address is aborted,
// so the test never leaves the machine. Screenshots of each step go to <out-dir>.
// Exit code 0 only if every step's assertion held.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, fail, logger, run } from './script.mjs';
import { base32Decode, freshCode, selfTestTotp } from './totp.mjs';

const NAV_TIMEOUT_MS = 20_000;
const SETTLE_TIMEOUT_MS = 3_000;
const OVERALL_TIMEOUT_MS = 180_000;

const log = logger('signin');

// ---- Browser helpers --------------------------------------------------------------------

function isLoopback(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return (
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    h === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
  );
}

async function newContext(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  context.setDefaultTimeout(NAV_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAV_TIMEOUT_MS);
  await context.route('**/*', (route) => {
    const url = route.request().url();
    let allowed = false;
    try {
      const u = new URL(url);
      allowed = (u.protocol === 'http:' || u.protocol === 'https:' || u.protocol === 'ws:' || u.protocol === 'wss:') && isLoopback(u.hostname);
    } catch {
      allowed = false;
    }
    if (allowed) return route.continue();
    log(`context ${name}: blocked non-loopback request ${url}`);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`context ${name}: page error: ${e.message}`));
  return { context, page };
}

async function shot(page, outDir, file) {
  const path = join(outDir, file);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

function pathOf(page) {
  return new URL(page.url()).pathname;
}

async function heading(page) {
  return ((await page.locator('h1').first().textContent({ timeout: 2_000 }).catch(() => null)) ?? '').trim();
}

async function pageError(page) {
  const err = page.locator('.error[role=alert]');
  return (await err.count()) ? ((await err.first().textContent()) ?? '').trim() : '';
}

/**
 * Checks that the page (whose navigation has been awaited) shows `path` and optionally
 * heading `h1`, or fails with what the browser shows instead.
 */
async function expectPage(page, what, path, h1) {
  try {
    await page.waitForURL((u) => u.pathname === path, { timeout: SETTLE_TIMEOUT_MS, waitUntil: 'load' });
  } catch {
    const err = await pageError(page);
    fail(
      `${what}: expected ${path}, but the browser is on ${page.url()} (heading "${await heading(page)}"${err ? `, error "${err}"` : ''})`,
    );
  }
  if (h1 !== undefined) {
    const got = await heading(page);
    if (got !== h1) fail(`${what}: expected heading "${h1}" on ${path}, got "${got}"`);
  }
}

/** Clicks a submit button and waits for the resulting navigation to load. */
async function submit(page, button) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), button.click()]);
}

/**
 * Opens /app/ in a fresh context and signs in with password + TOTP. Screenshots (if
 * given) of the login page, MFA page and app. Returns the TOTP step used.
 */
async function signIn(page, opts, key, afterStep, shots) {
  const { base, username, password } = opts;
  const appUrl = `${base}/app/`;
  log(`opening ${appUrl}`);
  await page.goto(appUrl, { waitUntil: 'load' });
  await expectPage(page, 'unauthenticated GET /app/', '/.portcullis/login', 'Sign in');
  const rd = new URL(page.url()).searchParams.get('rd');
  if (rd !== null && rd !== '/app/') fail(`login page carries rd=${JSON.stringify(rd)}, expected "/app/"`);
  if (shots) await shot(page, opts.outDir, shots[0]);

  await page.locator('#username').fill(username);
  await page.locator('#password').fill(password);
  await submit(page, page.getByRole('button', { name: 'Continue' }));
  await expectPage(page, 'password step', '/.portcullis/mfa', 'Enter your code');
  if (shots) await shot(page, opts.outDir, shots[1]);

  const { code, step } = await freshCode(key, afterStep);
  log(`entering TOTP code for step ${step}`);
  await page.locator('#code').fill(code);
  const appResponse = page.waitForResponse(
    (r) => r.request().isNavigationRequest() && new URL(r.url()).pathname === '/app/',
    { timeout: NAV_TIMEOUT_MS },
  );
  await submit(page, page.getByRole('button', { name: 'Sign in' }));
  await expectPage(page, 'TOTP step', '/app/');
  const resp = await appResponse.catch(() => null);
  if (!resp) fail('no response for /app/ after the TOTP step');
  if (resp.status() !== 200) fail(`/app/ after sign-in answered ${resp.status()}, expected 200`);
  // A browser gets the echo app's page; scripts get its JSON, asked for here.
  const hello = await heading(page);
  if (hello !== `Hello, ${username}`) fail(`the echo app's page greets "${hello}", expected "Hello, ${username}"`);
  await page.route(appUrl, (route) => route.continue({ headers: { ...route.request().headers(), accept: 'application/json' } }));
  const jsonResp = await page.goto(appUrl, { waitUntil: 'load' });
  await page.unroute(appUrl);
  let echo;
  try {
    echo = JSON.parse(await jsonResp.text());
  } catch (e) {
    fail(`/app/ asked for JSON is not the echo app's JSON: ${e.message}`);
  }
  if (echo.method !== 'GET' || echo.path !== '/app/') {
    fail(`echo app saw ${echo.method} ${echo.path}, expected GET /app/`);
  }
  const seenUser = echo.headers?.['x-portcullis-user'];
  if (seenUser !== username) fail(`echo app saw x-portcullis-user ${JSON.stringify(seenUser)}, expected ${JSON.stringify(username)}`);
  if ((echo.headers?.cookie ?? '').includes('__Host-portcullis-')) {
    fail(`the gateway forwarded its own cookies to the app: ${echo.headers.cookie}`);
  }
  await page.goto(appUrl, { waitUntil: 'load' });
  if (shots) await shot(page, opts.outDir, shots[2]);
  return step;
}

/** The rows of the account page's "Active sessions" table. */
async function sessionRows(page) {
  const rows = page.locator('section[aria-labelledby="sessions"] tbody tr');
  const n = await rows.count();
  const out = [];
  for (let i = 0; i < n; i++) {
    const row = rows.nth(i);
    out.push({
      row,
      current: ((await row.getAttribute('class')) ?? '').split(/\s+/).includes('current'),
      marked: ((await row.textContent()) ?? '').includes('(this device)'),
      hasEnd: (await row.getByRole('button', { name: /^End the session of / }).count()) > 0,
    });
  }
  return out;
}

// ---- The scenario -----------------------------------------------------------------------

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 6) {
    console.error('usage: node signin.mjs <public 127.0.0.1:PORT> <host> <username> <password> <totp-secret> <out-dir>');
    process.exit(2);
  }
  const [publicAddr, host, username, password, secret, outDir] = args;
  const port = publicAddr.slice(publicAddr.lastIndexOf(':') + 1);
  if (!/^\d+$/.test(port)) fail(`cannot read a port from ${JSON.stringify(publicAddr)}`);
  const opts = { base: `http://${host}:${port}`, username, password, outDir };
  mkdirSync(outDir, { recursive: true });
  selfTestTotp();
  const key = base32Decode(secret);
  if (key.length < 10) fail('TOTP secret is shorter than 80 bits');

  log(`launching ${CHROMIUM}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const pages = [];
  try {
    // (1) Context A: login page -> MFA page -> the app.
    log('step 1: sign in in context A');
    const a = await newContext(browser, 'A');
    pages.push(['A', a.page]);
    const stepA = await signIn(a.page, opts, key, -1, ['01-login.png', '02-mfa.png', '03-app.png']);
    log('step 1 ok: context A is signed in and sees the echo app');

    // (2) Context B: the same user, a fresh code (the one used by A is spent).
    log('step 2: sign in in context B');
    const b = await newContext(browser, 'B');
    pages.push(['B', b.page]);
    await signIn(b.page, opts, key, stepA, null);
    log('step 2 ok: context B is signed in');

    // (3) Context A: two sessions, A's marked; end B's.
    log('step 3: account page in context A');
    await a.page.goto(`${opts.base}/.portcullis/account`, { waitUntil: 'load' });
    await expectPage(a.page, 'GET /.portcullis/account', '/.portcullis/account', 'Your account');
    let rows = await sessionRows(a.page);
    if (rows.length !== 2) fail(`account page lists ${rows.length} sessions, expected 2`);
    const current = rows.filter((r) => r.current);
    if (current.length !== 1 || !current[0].marked || current[0].hasEnd) {
      fail('account page: expected exactly one session marked "(this device)" (class current, no End button)');
    }
    const others = rows.filter((r) => !r.current);
    if (others.length !== 1 || others[0].marked || !others[0].hasEnd) {
      fail('account page: expected the other session unmarked with an "End" button');
    }
    await shot(a.page, outDir, '04-account-two-sessions.png');
    await submit(a.page, others[0].row.getByRole('button', { name: /^End the session of / }));
    await expectPage(a.page, 'after "End"', '/.portcullis/account', 'Your account');
    rows = await sessionRows(a.page);
    if (rows.length !== 1) fail(`after "End" the account page lists ${rows.length} sessions, expected 1`);
    if (!rows[0].current || !rows[0].marked) fail('after "End" the remaining session is not the current one');
    await shot(a.page, outDir, '05-account-one-session.png');
    log('step 3 ok: A ended B\'s session, one session left');

    // (4) Context B: its session is gone; /app/ sends it to the login page.
    log('step 4: reload /app/ in context B');
    if (pathOf(b.page) !== '/app/') fail(`context B is on ${b.page.url()}, expected /app/`);
    await b.page.reload({ waitUntil: 'load' });
    await expectPage(b.page, 'context B after its session was ended', '/.portcullis/login', 'Sign in');
    await shot(b.page, outDir, '06-b-signed-out.png');
    log('step 4 ok: context B is signed out');

    // A is still signed in.
    await a.page.goto(`${opts.base}/app/`, { waitUntil: 'load' });
    await expectPage(a.page, 'context A after ending B', '/app/');
    log('context A is still signed in');
  } catch (e) {
    // Leave a picture of where each context stopped, for whoever reads the failure.
    for (const [name, page] of pages) {
      await page
        .screenshot({ path: join(outDir, `failed-context-${name}.png`), fullPage: true })
        .then(() => log(`context ${name} stopped on ${page.url()} (failed-context-${name}.png)`))
        .catch(() => {});
    }
    throw e;
  } finally {
    await browser.close();
  }
}

run('signin', main, OVERALL_TIMEOUT_MS, 'PASS: all steps held');
