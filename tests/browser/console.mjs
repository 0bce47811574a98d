// Real-browser walk of a whole incident through the operator console (run by
// tests/blackbox/console.rs):
//
//   node console.mjs <config.json>
//
// config.json: {"demo": <demo.json>, "out_dir": "..."}.
//
// Operator A (the demo's first prod operator) signs in to /console/ on the admin
// listener, dry-runs and then trips tenant acme with incident INC-7 and a message for
// users; a user's request to acme's /.portcullis/status shows `suspended` with that
// message; A proposes the reset; operator B (the second prod operator, another person)
// signs in and approves it on the pending-changes page; the status is `ok` again; the
// incident's timeline page lists the trip before the reset. Forms are filled and sent
// with the keyboard. Screenshots of each step go to <out_dir>/console-*.png; every console
// page is checked with axe-core (serious or critical findings fail the run). Requests to
// anything but loopback are aborted. Exit code 0 only if every step held.

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { AXE_SOURCE, CHROMIUM, CHROMIUM_ARGS, fail, logger, run } from './script.mjs';

const NAV_TIMEOUT_MS = 20_000;
const OVERALL_TIMEOUT_MS = 150_000;
/** The header colour of style.css: proof that the stylesheet applied under the CSP. */
const BRAND_BACKGROUND = 'rgb(31, 58, 95)';
const INCIDENT = 'INC-7';
const MESSAGE = 'Acme is paused while we rotate its keys. Back within the hour.';

const log = logger('console');
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const demo = config.demo;
const outDir = config.out_dir;
const admin = `http://${demo.admin}`;
const publicPort = demo.public.slice(demo.public.lastIndexOf(':') + 1);
const statusUrl = `http://acme.localhost:${publicPort}/.portcullis/status`;

const prodOperators = demo.operators.filter((o) => o.tier === 'prod');
if (prodOperators.length < 2) fail('demo.json names fewer than two prod operators');
const [operatorA, operatorB] = prodOperators;

function isLoopback(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

async function newPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
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
    if (allowed) return route.continue();
    log(`${name}: blocked non-loopback request ${route.request().url()}`);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`${name}: page error: ${e.message}`));
  return page;
}

const axeFindings = [];

/** Runs axe-core on a console page (over the DevTools protocol, which the page's CSP does
 * not govern) and keeps its serious and critical violations. */
async function axe(page, what) {
  const has = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!has) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  for (const v of result.violations) {
    if (v.impact === 'serious' || v.impact === 'critical') {
      const where = v.nodes.map((n) => n.target.join(' ')).join(', ');
      axeFindings.push(`${what}: ${v.impact} ${v.id}: ${v.help} [${where}]`);
    }
  }
}

/** Screenshots a step; console pages (not the JSON status) are also checked with axe. */
async function shot(page, file) {
  const path = join(outDir, file);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
  if (new URL(page.url()).pathname.startsWith('/console/')) await axe(page, file);
}

async function h1(page) {
  return ((await page.locator('h1').first().textContent()) ?? '').trim();
}

async function expectH1(page, what, expected) {
  const got = await h1(page);
  if (got !== expected) {
    const body = ((await page.locator('main').textContent()) ?? '').replace(/\s+/g, ' ').slice(0, 400);
    fail(`${what}: expected heading "${expected}", got "${got}" at ${page.url()}: ${body}`);
  }
}

/** Waits for the navigation a keyboard action starts. */
async function submitWith(page, action) {
  await Promise.all([page.waitForNavigation(), action()]);
}

/** Signs in by typing the token and pressing Enter. */
async function signIn(page, who, token) {
  await page.goto(`${admin}/console/`);
  if (new URL(page.url()).pathname !== '/console/signin') fail(`${who}: not sent to the sign-in page (${page.url()})`);
  await expectH1(page, `${who} sign-in`, 'Operator sign-in');
  await page.locator('#token').focus();
  await page.keyboard.type(token);
  await submitWith(page, () => page.keyboard.press('Enter'));
  await expectH1(page, `${who} signed in`, 'Tenants of tier prod');
  const brand = await page.locator('header').evaluate((el) => getComputedStyle(el).backgroundColor);
  if (brand !== BRAND_BACKGROUND) fail(`the stylesheet did not apply (header ${brand})`);
}

/** A user's view of acme's status (a page without a session). */
async function userStatus(page) {
  const resp = await page.goto(statusUrl);
  if (!resp || resp.status() !== 200) fail(`status answered ${resp && resp.status()}`);
  return JSON.parse((await page.locator('body').textContent()) ?? '{}');
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const a = await newPage(browser, 'operator A');
    await a.goto(`${admin}/console/signin`);
    await shot(a, 'console-01-signin.png');
    await signIn(a, 'operator A', operatorA.tokens[0]);
    const acmeRow = a.locator('#tenant-acme');
    if (!((await acmeRow.textContent()) ?? '').includes('Off')) fail('acme is not shown as off before the trip');
    await shot(a, 'console-02-tenants.png');

    // Trip acme with an incident and a message, after a dry run; keyboard only.
    await a.goto(`${admin}/console/breakers`);
    await a.locator('#trip-tenant').selectOption('acme');
    await a.locator('#trip-reason').fill('Signing keys leaked in a public repository');
    await a.locator('#trip-message').fill(MESSAGE);
    await a.locator('#trip-incident').fill(INCIDENT);
    // Enter submits with the form's first button: the dry run.
    await submitWith(a, () => a.locator('#trip-incident').press('Enter'));
    const dry = ((await a.locator('#dry-run').textContent()) ?? '').trim();
    if (dry !== 'Dry run: tenant acme') fail(`no dry-run report (got "${dry}")`);
    await shot(a, 'console-03-dry-run.png');
    const tripNow = a.getByRole('button', { name: 'Trip tenant acme now' });
    await tripNow.focus();
    await submitWith(a, () => a.keyboard.press('Enter'));
    const notice = ((await a.locator('.notice').textContent()) ?? '').trim();
    if (!notice.startsWith('Kill switch tripped')) fail(`no trip notice (got "${notice}")`);
    await shot(a, 'console-04-tripped.png');

    // A user sees the suspension and the operator's message.
    const user = await newPage(browser, 'user');
    const suspended = await userStatus(user);
    if (suspended.status !== 'suspended' || suspended.message !== MESSAGE) {
      fail(`status after the trip: ${JSON.stringify(suspended)}`);
    }
    await shot(user, 'console-05-status-suspended.png');

    // A proposes the reset; A cannot approve it.
    await a.goto(`${admin}/console/breakers`);
    await a.getByLabel('Reason for resetting tenant acme').fill('Keys rotated, repository cleaned');
    await submitWith(a, () => a.getByLabel('Reason for resetting tenant acme').press('Enter'));
    if (new URL(a.url()).pathname !== '/console/changes') fail(`the proposal did not lead to pending changes (${a.url()})`);
    const approveA = a.getByRole('button', { name: 'Approve tenant.breaker_reset of acme' });
    if (!(await approveA.isDisabled())) fail('the proposer can press Approve');
    await shot(a, 'console-06-reset-proposed.png');
    if ((await userStatus(user)).status !== 'suspended') fail('the reset applied without a second operator');

    // B signs in and approves the digest shown.
    const b = await newPage(browser, 'operator B');
    await signIn(b, 'operator B', operatorB.tokens[0]);
    await b.goto(`${admin}/console/changes`);
    const approveB = b.getByRole('button', { name: 'Approve tenant.breaker_reset of acme' });
    await approveB.focus();
    await submitWith(b, () => b.keyboard.press('Enter'));
    const approved = ((await b.locator('.notice').textContent()) ?? '').trim();
    if (approved !== 'Change approved and applied.') fail(`approval notice: "${approved}"`);
    await shot(b, 'console-07-reset-approved.png');

    const ok = await userStatus(user);
    if (ok.status !== 'ok') fail(`status after the approved reset: ${JSON.stringify(ok)}`);
    await shot(user, 'console-08-status-ok.png');

    // The incident's timeline: trip, then reset.
    await b.goto(`${admin}/console/incidents`);
    await b.locator('#incident-id').fill(INCIDENT);
    await submitWith(b, () => b.locator('#incident-id').press('Enter'));
    await expectH1(b, 'timeline', `Incident ${INCIDENT}`);
    const kinds = (await b.locator('tr.event td.kind').allTextContents()).map((k) => k.trim());
    const lifecycle = kinds.filter((k) => k === 'trip' || k === 'reset');
    if (lifecycle.join(',') !== 'trip,reset') fail(`timeline kinds: ${kinds.join(', ')}`);
    await shot(b, 'console-09-timeline.png');

    // The pages not on the incident's path, for axe.
    for (const path of ['/console/sessions?tenant=acme', '/console/audit?action=breaker.trip', '/console/upstreams']) {
      await b.goto(`${admin}${path}`);
      if (!(await h1(b))) fail(`${path} has no heading`);
      await axe(b, path);
    }
    if (axeFindings.length) fail(`axe found serious or critical problems:\n  ${axeFindings.join('\n  ')}`);
  } finally {
    await browser.close();
  }
}

run('console', main, OVERALL_TIMEOUT_MS, 'PASS: an incident walked through the console');
