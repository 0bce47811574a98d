// Real-browser tour of every kind of page the gateway answers with (run by
// tests/blackbox/pages.rs):
//
//   node pages.mjs <config.json>
//
// config.json: {"demo": <demo.json>, "dead_public": "127.0.0.1:PORT" (a second demo whose
// upstream is dead), "newcomer": {"username", "password"} (an acme account without a
// second factor yet), "out_dir": "..."}.
//
// Each page is reached for real (sign-ins, kill switches tripped through the tenant
// admin page and the admin API, an unknown host, a dead upstream, ...), checked for what
// it must say (tenant name, request id matching `x-request-id`, the next step), that
// the stylesheet applied under the CSP, and that it does not scroll sideways on a phone;
// then screenshotted at 1280 and 390 px wide and checked with axe-core. Serious or
// critical axe violations fail the run, after every page was seen. Requests to
// anything but loopback are aborted. Exit code 0 only if every check held.

import { mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, AXE_SOURCE, fail, logger, run } from './script.mjs';
import { base32Decode, freshCode, selfTestTotp } from './totp.mjs';


const VIEWPORTS = [
  { name: 'desktop', width: 1280, height: 900 },
  { name: 'phone', width: 390, height: 844 },
];
const NAV_TIMEOUT_MS = 20_000;
const OVERALL_TIMEOUT_MS = 270_000;
/** The header colour of style.css: proof that the stylesheet applied. */
const BRAND_BACKGROUND = 'rgb(31, 58, 95)';

const log = logger('pages');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const outDir = config.out_dir;
const demo = config.demo;
const port = demo.public.slice(demo.public.lastIndexOf(':') + 1);
const deadPort = config.dead_public.slice(config.dead_public.lastIndexOf(':') + 1);
const url = (host, path, p = port) => `http://${host}:${p}${path}`;
const userOf = (tenant, name) => {
  const u = demo.users.find((x) => x.tenant === tenant && x.username === name);
  if (!u) fail(`demo.json has no user ${tenant}/${name}`);
  return u;
};
const axeFindings = [];

// ---- Browser helpers --------------------------------------------------------------------

function isLoopback(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

async function newPage(browser, name) {
  const context = await browser.newContext({ viewport: VIEWPORTS[0] });
  context.setDefaultTimeout(NAV_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAV_TIMEOUT_MS);
  await context.route('**/*', (route) => {
    let allowed = false;
    try {
      const u = new URL(route.request().url());
      allowed = (u.protocol === 'http:' || u.protocol === 'https:') && isLoopback(u.hostname);
    } catch {
      allowed = false;
    }
    return allowed ? route.continue() : route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${name}: console: ${m.text()}`);
  });
  return page;
}

async function text(page, selector) {
  const loc = page.locator(selector).first();
  return (await loc.count()) ? ((await loc.textContent()) ?? '').trim() : '';
}

/** Clicks and waits for the navigation; returns its final response. */
async function submit(page, button) {
  const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), button.click()]);
  return resp;
}

/** Runs axe-core on the page (evaluated over the DevTools protocol, which the page's CSP
 * does not govern) and keeps its serious and critical violations. */
async function axe(page, kind, width) {
  const has = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!has) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  for (const v of result.violations) {
    if (v.impact === 'serious' || v.impact === 'critical') {
      const where = v.nodes.map((n) => n.target.join(' ')).join(', ');
      axeFindings.push(`${kind} (${width}): ${v.impact} ${v.id}: ${v.help} [${where}]`);
    }
  }
}

/**
 * Checks what every gateway page must show, then screenshots it at each width with an
 * axe run each. `want`: {status, h1, brand, refusal (request id and next step expected),
 * links: [hrefs that must be offered], says: [texts the page must contain]}.
 */
async function seePage(page, kind, resp, want) {
  const what = `${kind} (${page.url()})`;
  if (want.status !== undefined && resp?.status() !== want.status) {
    fail(`${what}: status ${resp?.status()}, expected ${want.status}; heading "${await text(page, 'h1')}"`);
  }
  if (want.h1 !== undefined) {
    const h1 = await text(page, 'h1');
    if (h1 !== want.h1) fail(`${what}: heading "${h1}", expected "${want.h1}"`);
  }
  if (want.brand !== undefined) {
    const brand = await text(page, 'header .brand');
    if (brand !== want.brand) fail(`${what}: header names "${brand}", expected "${want.brand}"`);
  }
  const background = await page.evaluate(() => {
    const h = document.querySelector('header');
    return h ? getComputedStyle(h).backgroundColor : '';
  });
  if (background !== BRAND_BACKGROUND) fail(`${what}: the stylesheet did not apply (header background "${background}")`);
  const body = (await page.locator('body').textContent()) ?? '';
  for (const s of want.says ?? []) {
    if (!body.includes(s)) fail(`${what}: does not say "${s}"; it says: ${body.replace(/\s+/g, ' ').trim()}`);
  }
  if (want.refusal) {
    const id = await text(page, '.request-id code');
    const header = resp?.headers()['x-request-id'];
    if (!/^[0-9a-f]{16,}$/.test(id) || id !== header) {
      fail(`${what}: request id on the page "${id}", in x-request-id "${header}"`);
    }
    if (!(await text(page, '.next'))) fail(`${what}: no next step in words`);
  }
  const hrefs = await page.locator('a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
  for (const href of want.links ?? []) {
    if (!hrefs.includes(href)) fail(`${what}: no link to ${href} (links: ${hrefs.join(', ')})`);
  }
  for (const vp of VIEWPORTS) {
    await page.setViewportSize({ width: vp.width, height: vp.height });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) fail(`${what}: scrolls sideways by ${overflow}px at ${vp.width}px`);
    const file = join(outDir, `${kind}-${vp.name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    await axe(page, kind, vp.name);
  }
  await page.setViewportSize(VIEWPORTS[0]);
  log(`${kind}: ok`);
}

/** Password step on the login page; returns the response. */
async function passwordStep(page, username, password) {
  await page.locator('#username').fill(username);
  await page.locator('#password').fill(password);
  return submit(page, page.getByRole('button', { name: 'Continue' }));
}

/** A full sign-in of a demo user (password + TOTP), starting at `path`. */
async function signIn(page, host, user, path, afterStep = -1, shots = null) {
  let resp = await page.goto(url(host, path), { waitUntil: 'load' });
  if (shots) await seePage(page, 'login', resp, shots.login);
  resp = await passwordStep(page, user.username, user.password);
  if (shots) await seePage(page, 'mfa', resp, shots.mfa);
  const { code, step } = await freshCode(base32Decode(user.totp_secret), afterStep);
  await page.locator('#code').fill(code);
  resp = await submit(page, page.getByRole('button', { name: 'Sign in' }));
  return { resp, step };
}

/** A GET without cookies straight to the public listener, naming `host`. */
function plainGet(host, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path, headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] ?? '', body }));
    });
    req.on('error', reject);
  });
}

async function adminApi(method, path, body) {
  const resp = await fetch(`http://${demo.admin}${path}`, {
    method,
    headers: { authorization: `Bearer ${demo.operator_tokens.prod}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!resp.ok) fail(`admin API ${method} ${path}: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

// ---- The tour -------------------------------------------------------------------------

async function main() {
  mkdirSync(outDir, { recursive: true });
  selfTestTotp();
  const acme = 'acme.localhost';
  const acmeName = 'Acme Corp';
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  try {
    // Bob: a wrong password first (history), then sign-in; his pages and refusals.
    const bob = userOf('acme', 'bob');
    const b = await newPage(browser, 'bob');
    await b.goto(url(acme, '/app/'), { waitUntil: 'load' });
    let resp = await passwordStep(b, 'bob', 'not-bobs-password');
    if (resp.status() !== 401) fail(`a wrong password answered ${resp.status()}, expected 401`);
    const { resp: appResp } = await signIn(b, acme, bob, '/app/', -1, {
      login: { status: 200, h1: 'Sign in', brand: acmeName },
      mfa: { status: 200, h1: 'Enter your code', brand: acmeName },
    });
    await seePage(b, 'echo', appResp, {
      status: 200,
      h1: 'Hello, bob',
      says: ['Valid', 'x-portcullis-user'],
      links: ['/.portcullis/account'],
    });
    const icon = await b.goto(url(acme, '/.portcullis/favicon.svg'));
    if (icon.status() !== 200 || !icon.headers()['content-type'].startsWith('image/svg+xml')) {
      fail(`favicon.svg answered ${icon.status()} ${icon.headers()['content-type']}`);
    }

    resp = await b.goto(url(acme, '/.portcullis/account'), { waitUntil: 'load' });
    await seePage(b, 'account', resp, {
      status: 200,
      h1: 'Your account',
      brand: acmeName,
      says: ['Signed in', 'Wrong password', 'Authenticator code', 'just now'],
    });
    const raw = (await b.locator('main').textContent()) ?? '';
    for (const code of ['bad_password', 'failure', 'success', 'totp']) {
      if (raw.includes(code)) fail(`account page shows the raw code "${code}"`);
    }
    const titles = await b.locator('main time').evaluateAll((ts) => ts.map((t) => `${t.getAttribute('datetime')}|${t.getAttribute('title')}`));
    if (!titles.length || !titles.every((t) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/.test(t))) {
      fail(`account page times lack datetime/title: ${titles.join(', ')}`);
    }

    resp = await b.goto(url(acme, '/admin/reports'), { waitUntil: 'load' });
    await seePage(b, '403', resp, {
      status: 403,
      h1: 'No access',
      brand: acmeName,
      refusal: true,
      links: ['/', '/.portcullis/account', '/.portcullis/logout'],
    });
    resp = await b.goto(url(acme, '/.portcullis/no-such-page'), { waitUntil: 'load' });
    await seePage(b, '404', resp, { status: 404, h1: 'Not found', brand: acmeName, refusal: true, links: ['/', '/.portcullis/account'] });
    resp = await b.goto(url(acme, '/files/a%2Fb'), { waitUntil: 'load' });
    await seePage(b, '400', resp, { status: 400, h1: 'Request not understood', brand: acmeName, refusal: true, links: ['/'] });
    // Oversized headers on the document request only (its stylesheet must still load).
    const bigUrl = url(acme, '/app/big');
    await b.route(bigUrl, (route) => route.continue({ headers: { ...route.request().headers(), 'x-big': 'a'.repeat(70 * 1024) } }));
    resp = await b.goto(bigUrl, { waitUntil: 'load' });
    await seePage(b, '431', resp, {
      status: 431,
      h1: 'Request too large',
      brand: acmeName,
      refusal: true,
      says: ["Clear this site's cookies"],
      links: ['/'],
    });
    await b.unroute(bigUrl);

    // /favicon.ico without a session: the gateway's icon, not a 401 or a sign-in.
    const anon = await newPage(browser, 'anonymous');
    const ico = await plainGet(acme, '/favicon.ico');
    if (ico.status !== 200 || !ico.type.startsWith('image/svg+xml') || !ico.body.startsWith('<svg')) {
      fail(`/favicon.ico without a session answered ${ico.status} ${ico.type}`);
    }

    // A newcomer enrols a second factor, then signs out.
    const n = await newPage(browser, 'newcomer');
    await n.goto(url(acme, '/'), { waitUntil: 'load' });
    resp = await passwordStep(n, config.newcomer.username, config.newcomer.password);
    await seePage(n, 'enrol', resp, { status: 200, h1: 'Set up two-factor sign-in', brand: acmeName });
    const secret = await text(n, 'main p code');
    const { code } = await freshCode(base32Decode(secret), -1);
    await n.locator('#code').fill(code);
    resp = await submit(n, n.getByRole('button', { name: 'Confirm' }));
    if ((await text(n, 'h1')) !== 'Save your recovery codes') fail(`after enrolment: "${await text(n, 'h1')}"`);
    await submit(n, n.getByRole('link', { name: 'I saved them, continue' }));
    await n.goto(url(acme, '/.portcullis/logout'), { waitUntil: 'load' });
    resp = await submit(n, n.getByRole('button', { name: 'Sign out of this device' }));
    await seePage(n, 'signed-out', resp, { status: 200, h1: 'Sign in', brand: acmeName, says: ['You are signed out.'] });

    // Alice, tenant admin: trips bob from the admin page and lands back on it.
    const alice = userOf('acme', 'alice');
    const a = await newPage(browser, 'alice');
    await signIn(a, acme, alice, '/.portcullis/admin');
    resp = await a.goto(url(acme, '/.portcullis/admin'), { waitUntil: 'load' });
    await seePage(a, 'admin', resp, { status: 200, h1: 'Account breakers', brand: acmeName, links: ['/.portcullis/account'] });
    await a.getByLabel('Reason for tripping bob').fill('Phished laptop');
    resp = await submit(a, a.getByRole('button', { name: 'Trip bob', exact: true }));
    const landed = new URL(a.url());
    if (landed.pathname !== '/.portcullis/admin') fail(`after a trip the browser is on ${a.url()}`);
    await seePage(a, 'admin-tripped', resp, { status: 200, h1: 'Account breakers', says: ['Breaker tripped for bob: 1 session ended.'] });
    resp = await a.reload({ waitUntil: 'load' });
    if (resp.status() !== 200 || (await text(a, 'h1')) !== 'Account breakers') fail(`reloading after a trip: ${resp.status()}`);

    resp = await b.goto(url(acme, '/app/'), { waitUntil: 'load' });
    await seePage(b, '423-account', resp, { status: 423, h1: 'Access suspended', brand: acmeName, refusal: true });

    resp = await submit(a, a.getByRole('button', { name: 'Reset bob', exact: true }));
    if (!((await a.locator('main').textContent()) ?? '').includes('Breaker reset for bob.')) fail('no notice after a reset');
    if (new URL(a.url()).pathname !== '/.portcullis/admin') fail(`after a reset the browser is on ${a.url()}`);

    // The rest of the tenant admin's area, reached through its navigation.
    resp = await submit(a, a.getByRole('navigation', { name: 'Tenant admin' }).getByRole('link', { name: 'Users' }));
    await seePage(a, 'admin-users', resp, { status: 200, h1: 'Users', brand: acmeName, says: ['newbie'], links: ['/.portcullis/admin/sessions'] });
    resp = await submit(a, a.getByRole('button', { name: 'Reset MFA of newbie', exact: true }));
    if (new URL(a.url()).pathname !== '/.portcullis/admin/users') fail(`after an MFA reset the browser is on ${a.url()}`);
    await seePage(a, 'admin-users-reset', resp, { status: 200, h1: 'Users', says: ['MFA reset for newbie: 0 sessions ended.'] });
    resp = await submit(a, a.getByRole('link', { name: 'Sessions' }));
    await seePage(a, 'admin-sessions', resp, { status: 200, h1: 'Live sessions', brand: acmeName, says: ['alice', '(this session)'] });
    resp = await submit(a, a.getByRole('link', { name: 'Sign-in history' }));
    await seePage(a, 'admin-history', resp, { status: 200, h1: 'Sign-in history', brand: acmeName, says: ['Wrong password', 'bob'] });
    resp = await submit(a, a.getByRole('link', { name: 'Audit log' }));
    await seePage(a, 'admin-audit', resp, { status: 200, h1: 'Audit log', brand: acmeName, says: ['breaker.trip', 'user.mfa_reset'] });
    const current = await a.locator('nav[aria-label="Tenant admin"] a[aria-current="page"]').textContent();
    if (current !== 'Audit log') fail(`the navigation marks "${current}" as the current page`);

    // A whole tenant suspended by an operator.
    const globex = 'globex.localhost';
    await adminApi('PUT', '/v1/tenants/globex/breaker', { reason: 'pages test', message: 'Globex is paused for maintenance.' });
    const g = await newPage(browser, 'globex');
    resp = await g.goto(url(globex, '/app/'), { waitUntil: 'load' });
    const globexName = await text(g, 'header .brand');
    if (!globexName || globexName === 'Unknown site') fail(`423 page of globex names "${globexName}"`);
    await seePage(g, '423-tenant', resp, {
      status: 423,
      h1: 'Access suspended',
      refusal: true,
      says: ['Globex is paused for maintenance.', 'Since'],
      links: ['/.portcullis/login'],
    });
    await adminApi('DELETE', '/v1/tenants/globex/breaker');

    // A host no tenant owns.
    resp = await anon.goto(url('unknown.localhost', '/'), { waitUntil: 'load' });
    await seePage(anon, '421', resp, { status: 421, h1: 'Unknown site', brand: 'Unknown site', refusal: true });

    // Too many wrong passwords for one account.
    const i = await newPage(browser, 'initech');
    await i.goto(url('initech.localhost', '/'), { waitUntil: 'load' });
    for (let attempt = 1; ; attempt++) {
      resp = await passwordStep(i, 'iris', `wrong-password-${attempt}`);
      if (resp.status() === 429) break;
      if (resp.status() !== 401 || attempt > 12) fail(`wrong password ${attempt} answered ${resp.status()}`);
    }
    await seePage(i, '429', resp, { status: 429, h1: 'Sign in', says: ['Too many attempts. Try again in 15 minutes.'] });
    if (!resp.headers()['retry-after']) fail('429 without Retry-After');

    // A dead upstream: 502, then 503 once its breaker opens.
    const d = await newPage(browser, 'dead');
    resp = await d.goto(url(acme, '/public/x', deadPort), { waitUntil: 'load' });
    await seePage(d, '502', resp, { status: 502, h1: 'Application unavailable', brand: acmeName, refusal: true, links: ['/'] });
    for (let attempt = 0; resp.status() !== 503; attempt++) {
      if (attempt > 10) fail(`the dead upstream's breaker did not open (last status ${resp.status()})`);
      resp = await d.goto(url(acme, '/public/x', deadPort), { waitUntil: 'load' });
    }
    const retry = Number(resp.headers()['retry-after']);
    const unit = retry === 1 ? 'second' : 'seconds';
    await seePage(d, '503', resp, { status: 503, h1: 'Application unavailable', brand: acmeName, refusal: true, says: [`Try again in ${retry} ${unit}.`] });
  } finally {
    await browser.close();
  }
  if (axeFindings.length) fail(`axe found serious or critical problems:\n  ${axeFindings.join('\n  ')}`);
}

run('pages', main, OVERALL_TIMEOUT_MS, 'PASS: every page kind seen, screenshotted and checked');
