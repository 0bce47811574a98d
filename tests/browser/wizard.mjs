// The tenant admin's SSO wizard in a real browser (run by tests/blackbox/sso_wizard_browser.rs):
//
//   node wizard.mjs <config.json>
//
// config.json: {"origin": "http://initech.localhost:PORT", "issuer": the oidc-provider's,
// "redirect_uri", "backchannel_logout_uri" (what the wizard must show), "admin":
// {"username", "password", "totp_secret"} (a local tenant admin), "clients":
// [{"client_id", "client_secret"}, ...] (registered at the IdP), "wrong_secret",
// "admin_group", "idp_admin" and "idp_user" ({"username", "password"} at the IdP; the
// first is in the admin group), "out_dir"}.
//
// A new tenant admin signs in (password + TOTP), opens the wizard from the admin
// navigation and connects the IdP: a wrong issuer first (error tied to its field), the
// real one (discovery in plain words), the URIs to copy, the client with a wrong secret
// (the test sign-in in a new tab fails with the IdP's error, Activate stays disabled),
// the right secret (the test passes, with claims and roles; the roles preview), an edit
// (the test is cleared), activation; then a user of the tenant signs in through SSO in a fresh
// context. The wall time from opening the wizard to that user's sign-in is printed as
// `[wizard] wall time: X.Y s` and must stay under two minutes. Afterwards, a second
// version with the other client, and a roll-back to the first one, which the next SSO
// sign-in uses. Every step is screenshotted (full page) into <out_dir>; the wizard page
// with a draft and with a passed test is checked with axe-core (serious or critical
// findings fail) and at 390 px (no sideways scrolling); no page ever holds a client
// secret; the main controls are reached with Tab. Requests to anything but loopback are
// aborted. Exit code 0 only if every check held.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, AXE_SOURCE, fail, logger, run } from './script.mjs';
import { base32Decode, freshCode, selfTestTotp } from './totp.mjs';


const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const NAV_TIMEOUT_MS = 20_000;
/** Issue 15's bar: the scripted wizard, from opening it to a user signed in through SSO. */
const WALL_TIME_LIMIT_S = 120;
/** Up to two TOTP steps for the admin's sign-in, the wizard, then the roll-back. */
const OVERALL_TIMEOUT_MS = 280_000;
/** How many Tab presses a control may be away from the field before it. */
const MAX_TABS = 40;

const log = logger('wizard');
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { origin, issuer } = config;
const [clientA, clientB] = config.clients;
const SECRETS = [...config.clients.map((c) => c.client_secret), config.wrong_secret];
const WIZARD = `${origin}/.portcullis/admin/sso`;
/** Secrets seen in a document the gateway answered (checked at the end). */
const leaks = [];

// ---- Browser helpers --------------------------------------------------------------------

function isLoopback(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A context that reaches only loopback and checks every document it gets for secrets. */
async function newContext(browser, name, options = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
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
    if (!allowed) log(`${name}: blocked non-loopback request ${route.request().url()}`);
    return allowed ? route.continue() : route.abort('blockedbyclient');
  });
  context.on('response', async (resp) => {
    if (resp.request().resourceType() !== 'document' || !resp.url().startsWith(origin)) return;
    const body = await resp.text().catch(() => '');
    for (const s of SECRETS) if (body.includes(s)) leaks.push(`${resp.url()} (${resp.status()})`);
  });
  context.on('page', (page) => {
    page.on('pageerror', (e) => log(`${name}: page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') log(`${name}: console: ${m.text()}`);
    });
  });
  return context;
}

/** Fails if the page's HTML holds a client secret, then saves a full-page screenshot. */
async function shot(page, name) {
  const html = await page.content();
  for (const s of SECRETS) {
    if (html.includes(s)) fail(`${name}: the page (${page.url()}) shows a client secret`);
  }
  await page.screenshot({ path: join(config.out_dir, `${name}.png`), fullPage: true });
  log(`${name}: ${page.url()}`);
}

/** Clicks and waits for the navigation it starts. */
async function submit(page, control) {
  const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), control.click()]);
  return resp;
}

async function h1(page) {
  return ((await page.locator('h1').first().textContent()) ?? '').trim();
}

async function mainText(page) {
  return ((await page.locator('main').first().textContent()) ?? '').replace(/\s+/g, ' ').trim();
}

/** The section (a region named by its heading) whose name ends with `name`: the
 * wizard numbers its steps ("6. Test sign-in"). */
function section(page, name) {
  return page.getByRole('region', { name: new RegExp(`(^|\\. )${name}$`) });
}

async function textOf(locator) {
  return ((await locator.textContent()) ?? '').replace(/\s+/g, ' ').trim();
}

/** Presses Tab from `from` until `target` has the focus; fails after MAX_TABS presses. */
async function tabTo(page, from, target, what) {
  await from.focus();
  for (let i = 0; i < MAX_TABS; i++) {
    await page.keyboard.press('Tab');
    if (await target.evaluate((el) => el === document.activeElement)) return;
  }
  fail(`${what} is not reached with Tab within ${MAX_TABS} presses`);
}

/** Runs axe-core (evaluated over the DevTools protocol, which the page's CSP does not
 * govern); fails on serious or critical violations. */
async function axe(page, what) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} [${v.nodes.map((n) => n.target.join(' ')).join(', ')}]`);
  if (bad.length) fail(`axe on ${what}:\n  ${bad.join('\n  ')}`);
}

/** The rows of the "Versions" table, each as its cells' texts (version, state, issuer,
 * client id, ...). */
async function versions(page) {
  return page
    .getByRole('table', { name: 'Versions' })
    .locator('tbody tr')
    .evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.replace(/\s+/g, ' ').trim())));
}

/** The client id of the version the "Versions" table shows as active. */
async function activeClient(page) {
  const active = (await versions(page)).filter((cells) => cells[1] === 'Active');
  if (active.length !== 1) fail(`the "Versions" table shows ${active.length} active versions: ${JSON.stringify(await versions(page))}`);
  return active[0][3];
}

/** axe-core at desktop and phone width, no sideways scrolling on the phone, and a
 * screenshot `phoneShot` of the phone layout. */
async function checkLayout(page, what, phoneShot) {
  await axe(page, `${what} (desktop)`);
  await page.setViewportSize(PHONE);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) fail(`${what} scrolls sideways by ${overflow}px at ${PHONE.width}px`);
  await axe(page, `${what} (phone)`);
  await shot(page, phoneShot);
  await page.setViewportSize(DESKTOP);
}

// ---- Steps --------------------------------------------------------------------------------

/** The local admin's sign-in (password, then a TOTP code), ending on the admin page. */
async function adminSignIn(page) {
  await page.goto(`${origin}/.portcullis/admin`, { waitUntil: 'load' });
  if ((await h1(page)) !== 'Sign in') fail(`the admin area without a session shows "${await h1(page)}"`);
  await page.getByLabel('User name').fill(config.admin.username);
  await page.getByLabel('Password').fill(config.admin.password);
  await submit(page, page.getByRole('button', { name: 'Continue' }));
  const { code } = await freshCode(base32Decode(config.admin.totp_secret), -1);
  await page.getByLabel('Code').fill(code);
  await submit(page, page.getByRole('button', { name: 'Sign in' }));
  if (new URL(page.url()).pathname !== '/.portcullis/admin') {
    await page.goto(`${origin}/.portcullis/admin`, { waitUntil: 'load' });
  }
  if ((await h1(page)) !== 'Account breakers') fail(`the admin page shows "${await h1(page)}"`);
}

/** The admin's form: the labelled inputs of the contract. */
function form(page) {
  return {
    issuer: page.getByLabel('Issuer URL', { exact: true }),
    clientId: page.getByLabel('Client ID', { exact: true }),
    secret: page.getByLabel('Client secret', { exact: true }),
    scopes: page.getByLabel('Scopes', { exact: true }),
    rolesClaim: page.getByLabel('Roles claim', { exact: true }),
    adminGroup: page.getByLabel('Admin group', { exact: true }),
    mfa: page.getByRole('group', { name: 'Second factor (MFA)' }),
    enforce: page.getByLabel('Enforce single sign-on', { exact: true }),
    save: page.getByRole('button', { name: 'Save draft', exact: true }),
    activate: page.getByRole('button', { name: 'Activate', exact: true }),
  };
}

async function notice(page) {
  const n = page.locator('p.notice[role=status]');
  return (await n.count()) ? textOf(n.first()) : '';
}

/** Saves the draft; the notice must say so and Activate must be disabled. */
async function saveDraft(page, what) {
  const f = form(page);
  await submit(page, f.save);
  const alert = page.getByRole('alert');
  if (await alert.count()) fail(`${what}: saving answered "${await textOf(alert.first())}"`);
  const said = await notice(page);
  if (!/saved/i.test(said)) fail(`${what}: after Save draft the notice says "${said}"`);
  if (!(await f.activate.isDisabled())) fail(`${what}: Activate is enabled right after a save`);
  if ((await f.secret.inputValue()) !== '') fail(`${what}: the secret field is filled in after the save`);
}

/**
 * Follows "Test sign-in" into its new tab, signs the IdP's admin user in there (unless
 * the IdP remembers them) and returns the tab once it shows the result.
 */
async function testSignIn(page, name) {
  const link = section(page, 'Test sign-in').getByRole('link', { name: 'Test sign-in', exact: true });
  if ((await link.getAttribute('target')) !== '_blank') fail('the "Test sign-in" link does not open a new tab');
  const [tab] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
  const result = tab.getByText(/Test sign-in (passed|failed)/);
  const idpForm = tab.locator('input[name=username]');
  await Promise.race([result.first().waitFor(), idpForm.waitFor()]);
  if (await idpForm.isVisible()) {
    await shot(tab, `${name}-idp`);
    await idpForm.fill(config.idp_admin.username);
    await tab.locator('input[name=password]').fill(config.idp_admin.password);
    await tab.locator('button[type=submit]').click();
    await result.first().waitFor();
  }
  await tab.waitForLoadState('load');
  return tab;
}

/**
 * After the test tab: the wizard reloaded, its "Test result" and Activate's state. The
 * page reloads itself when its tab is shown again, but headless Chromium keeps every tab
 * visible, so the admin reloads it here.
 */
async function testResult(page, passed, what) {
  await page.reload({ waitUntil: 'load' });
  const said = await textOf(section(page, 'Test sign-in'));
  const want = passed ? /Passed/ : /Failed/;
  if (!want.test(said)) fail(`${what}: the "Test sign-in" section says: ${said}`);
  const disabled = await form(page).activate.isDisabled();
  if (disabled === passed) fail(`${what}: Activate is ${disabled ? 'disabled' : 'enabled'} (test ${passed ? 'passed' : 'failed'})`);
  return said;
}

/** A user of the tenant signing in through SSO in a fresh context; returns the client id
 * the gateway sent them to the IdP with. */
async function ssoSignIn(browser, user, name) {
  const context = await newContext(browser, name);
  try {
    let clientId = null;
    context.on('request', (req) => {
      const u = new URL(req.url());
      if (u.origin === issuer && u.searchParams.has('client_id')) clientId = u.searchParams.get('client_id');
    });
    const page = await context.newPage();
    await page.goto(`${origin}/app/data`, { waitUntil: 'load' });
    if ((await h1(page)) !== 'Sign in') fail(`${name}: /app/data without a session shows "${await h1(page)}"`);
    await shot(page, `${name}-login`);
    await submit(page, page.getByRole('link', { name: /SSO/ }));
    await page.waitForURL(/\/interaction\//);
    await page.locator('input[name=username]').fill(user.username);
    await page.locator('input[name=password]').fill(user.password);
    await page.locator('button[type=submit]').click();
    await page.waitForURL(`${origin}/app/data`);
    const me = await page.evaluate(() => fetch('/.portcullis/api/whoami').then((r) => r.json()));
    if (me.subject !== user.username) fail(`${name}: signed in as ${JSON.stringify(me)}`);
    await shot(page, `${name}-signed-in`);
    return clientId;
  } finally {
    await context.close();
  }
}

// ---- The scenario ---------------------------------------------------------------------

async function main() {
  selfTestTotp();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  try {
    const context = await newContext(browser, 'admin', { permissions: ['clipboard-read', 'clipboard-write'] });
    const page = await context.newPage();

    // 1. The new tenant admin signs in and follows the navigation to the wizard.
    await adminSignIn(page);
    await shot(page, '01-admin');
    const nav = page.getByRole('navigation', { name: 'Tenant admin' });
    await submit(page, nav.getByRole('link', { name: 'Single sign-on', exact: true }));
    const started = performance.now();
    if (page.url() !== WIZARD) fail(`the "Single sign-on" link leads to ${page.url()}`);
    if ((await h1(page)) !== 'Single sign-on') fail(`the wizard's heading is "${await h1(page)}"`);
    await shot(page, '02-wizard');
    const f = form(page);

    // 2. A wrong issuer, checked with the keyboard only: an error tied to the field.
    await f.issuer.fill('http://127.0.0.1:1');
    const check = page.getByRole('button', { name: 'Check issuer', exact: true });
    await tabTo(page, f.issuer, check, '"Check issuer"');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
    if ((await f.issuer.getAttribute('aria-invalid')) !== 'true') fail('a wrong issuer: the field is not marked invalid');
    const describedBy = ((await f.issuer.getAttribute('aria-describedby')) ?? '').split(/\s+/).filter(Boolean);
    let fieldError = '';
    for (const id of describedBy) fieldError += ` ${await textOf(page.locator(`[id="${id}"]`))}`;
    if (!/discovery failed/i.test(fieldError)) fail(`a wrong issuer: the field's description says "${fieldError.trim()}"`);
    if (!(await page.getByRole('alert').count())) fail('a wrong issuer: no alert at the top of the page');
    if ((await f.issuer.inputValue()) !== 'http://127.0.0.1:1') fail('a wrong issuer: the field lost what was typed');
    await shot(page, '03-wrong-issuer');

    // The real issuer: discovery summarised in plain words.
    await f.issuer.fill(issuer);
    await submit(page, check);
    if ((await f.issuer.getAttribute('aria-invalid')) === 'true') fail('the real issuer is still marked invalid');
    const discovery = await textOf(section(page, 'Discovery'));
    if (!discovery.includes(issuer)) fail(`the "Discovery" section does not name the issuer: ${discovery}`);
    // Checking an issuer, right or wrong, stores nothing.
    const stored = await textOf(section(page, 'Versions'));
    if (!stored.includes('No versions yet')) fail(`after checking issuers the "Versions" section says: ${stored}`);
    await shot(page, '04-discovery');

    // 3. The URIs to paste into the IdP, read-only, with a copy button.
    for (const [label, want] of [
      ['Redirect URI', config.redirect_uri],
      ['Back-channel logout URI', config.backchannel_logout_uri],
    ]) {
      const input = page.getByLabel(label, { exact: true });
      if ((await input.inputValue()) !== want) fail(`"${label}" shows "${await input.inputValue()}", expected ${want}`);
      if (await input.isEditable()) fail(`"${label}" can be edited`);
    }
    await page.getByRole('button', { name: 'Copy redirect URI', exact: true }).click();
    await page.getByRole('status').filter({ hasText: 'Copied' }).first().waitFor();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    if (copied !== config.redirect_uri) fail(`"Copy redirect URI" put "${copied}" on the clipboard`);
    await shot(page, '05-uris-copied');

    // 4.-6. The client (a wrong secret first), the claim mapping and the options.
    await f.clientId.fill(clientA.client_id);
    await f.secret.fill(config.wrong_secret);
    if ((await f.secret.getAttribute('type')) !== 'password') fail('the client secret field is not a password field');
    if (!(await f.scopes.inputValue()).trim()) await f.scopes.fill('openid profile');
    await f.rolesClaim.fill('groups');
    await f.adminGroup.fill(config.admin_group);
    // The test IdP's accounts sign in with a second factor (amr pwd + otp): the IdP's MFA.
    await f.mfa.locator('input[type=radio][value=idp]').check();
    if (await f.enforce.isChecked()) fail('"Enforce single sign-on" is checked by default');
    await tabTo(page, f.secret, f.save, '"Save draft"');
    await shot(page, '06-filled-in');

    // 7. Saved as a draft; not active, Activate disabled.
    await saveDraft(page, 'the first draft');
    if ((await f.clientId.inputValue()) !== clientA.client_id) fail('the saved draft lost its client id');
    await shot(page, '07-draft-saved');
    await checkLayout(page, 'the wizard with a draft', '08-draft-phone');

    // 8. The test sign-in with the wrong secret fails with the IdP's error.
    let tab = await testSignIn(page, '09-test-failed');
    let said = await mainText(tab);
    if (!said.includes('Test sign-in failed') || !said.includes('invalid_client')) {
      fail(`the failed test's tab says: ${said}`);
    }
    await shot(tab, '09-test-failed-tab');
    await tab.close();
    said = await testResult(page, false, 'after the failed test');
    if (!said.includes('invalid_client')) fail(`the wizard's failed test does not name the IdP's error: ${said}`);
    await shot(page, '10-test-failed');

    // 9. The right secret (the other fields kept): the test passes.
    if ((await f.issuer.inputValue()) !== issuer) fail('the draft lost its issuer');
    await f.secret.fill(clientA.client_secret);
    await saveDraft(page, 'the corrected draft');
    await shot(page, '11-secret-corrected');
    tab = await testSignIn(page, '12-test-passed');
    said = await mainText(tab);
    if (!said.includes('Test sign-in passed') || !said.includes('tenant-admin')) fail(`the passed test's tab says: ${said}`);
    await shot(tab, '12-test-passed-tab');
    await tab.close();
    said = await testResult(page, true, 'after the passing test');
    const claims = section(page, 'Test sign-in').getByRole('table');
    const sub = claims.getByRole('row').filter({ hasText: 'sub' });
    if (!(await sub.count()) || !(await textOf(sub.first())).includes(config.idp_admin.username)) {
      fail(`the claims do not show sub = ${config.idp_admin.username}: ${said}`);
    }
    if (!said.includes('tenant-admin')) fail(`the mapped roles do not include tenant-admin: ${said}`);
    await shot(page, '13-test-passed');
    await checkLayout(page, 'the wizard with a passed test', '13-test-passed-phone');
    await submit(page, page.getByRole('button', { name: 'Preview roles', exact: true }));
    said = await textOf(section(page, 'Preview'));
    if (!said.includes('tenant-admin')) fail(`the roles preview says: ${said}`);

    // 10. An edit clears the test; put back, tested again, activated.
    await f.adminGroup.fill(`${config.admin_group}-ops`);
    await saveDraft(page, 'an edit after the test');
    said = await textOf(section(page, 'Test sign-in'));
    if (/Passed/.test(said) || !/not tested/i.test(said)) fail(`after an edit the "Test sign-in" section says: ${said}`);
    await shot(page, '14-edit-clears-test');
    await f.adminGroup.fill(config.admin_group);
    await saveDraft(page, 'the edit undone');
    tab = await testSignIn(page, '15-test-again');
    if (!(await mainText(tab)).includes('Test sign-in passed')) fail(`the second test's tab says: ${await mainText(tab)}`);
    await shot(tab, '15-test-again-tab');
    await tab.close();
    await testResult(page, true, 'after the second passing test');
    const testLink = section(page, 'Test sign-in').getByRole('link', { name: 'Test sign-in', exact: true });
    await tabTo(page, testLink, f.activate, '"Activate"');
    await submit(page, f.activate);
    said = await notice(page);
    if (!/version 1 is active/i.test(said)) fail(`after Activate the notice says "${said}"`);
    await shot(page, '16-activated');

    // 11. A user of the tenant signs in through SSO: the wizard's job is done.
    const firstClient = await ssoSignIn(browser, config.idp_user, '17-sso-user');
    const wall = (performance.now() - started) / 1000;
    log(`wall time: ${wall.toFixed(1)} s`);
    if (wall > WALL_TIME_LIMIT_S) fail(`the scripted wizard took ${wall.toFixed(1)} s, over ${WALL_TIME_LIMIT_S} s`);
    if (firstClient !== clientA.client_id) fail(`the SSO sign-in used client ${firstClient}`);

    // 12. The versions: the first one active; a second one, then a roll-back to the first.
    if ((await activeClient(page)) !== clientA.client_id) fail('the "Versions" table does not show the first client as active');
    await f.clientId.fill(clientB.client_id);
    await f.secret.fill(clientB.client_secret);
    await saveDraft(page, 'the second version');
    tab = await testSignIn(page, '18-second-test');
    if (!(await mainText(tab)).includes('Test sign-in passed')) fail(`the second version's test says: ${await mainText(tab)}`);
    await shot(tab, '18-second-test-tab');
    await tab.close();
    await testResult(page, true, 'the second version');
    await submit(page, f.activate);
    said = await notice(page);
    if (!/version 2 is active/i.test(said)) fail(`after activating the second version the notice says "${said}"`);
    if ((await activeClient(page)) !== clientB.client_id) fail('the "Versions" table does not show the second client as active');
    await shot(page, '19-second-version-active');
    if ((await ssoSignIn(browser, config.idp_user, '20-sso-second')) !== clientB.client_id) {
      fail('the SSO sign-in does not use the second version\'s client');
    }
    await submit(page, page.getByRole('button', { name: 'Roll back to version 1', exact: true }));
    said = await notice(page);
    if (!/version \d+ is active/i.test(said)) fail(`after the roll-back the notice says "${said}"`);
    if ((await activeClient(page)) !== clientA.client_id) fail('after the roll-back the first client is not active');
    await shot(page, '21-rolled-back');
    if ((await ssoSignIn(browser, config.idp_user, '22-sso-rolled-back')) !== clientA.client_id) {
      fail('after the roll-back the SSO sign-in does not use the first client');
    }
  } finally {
    await browser.close();
  }
  if (leaks.length) fail(`a client secret was in these answers: ${leaks.join(', ')}`);
}

run('wizard', main, OVERALL_TIMEOUT_MS, 'PASS: the wizard connected the IdP, a user signed in through SSO');
