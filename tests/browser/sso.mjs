// Real-browser single sign-on test (run by tests/blackbox/sso.rs).
//
//   node sso.mjs <gateway origin, e.g. http://initech.localhost:PORT> <username> <password> <out-dir>
//
// Drives Debian's Chromium through playwright-core: the tenant's login page, "Sign in
// with your organisation (SSO)", the real oidc-provider's login form, and back to the app
// signed in. Every request to a non-loopback address is aborted. Screenshots of each step
// go to <out-dir>. Exit code 0 only if every step held.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [origin, username, password, outDir] = process.argv.slice(2);
if (!origin || !username || !password || !outDir) {
  console.error('usage: node sso.mjs <origin> <username> <password> <out-dir>');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const loopback = (host) =>
  host === 'localhost' || host.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(host);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let ok = false;
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  context.setDefaultTimeout(20_000);
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    return loopback(u.hostname) ? route.continue() : route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  await page.goto(`${origin}/.portcullis/login?rd=%2Fapp%2Fdata`);
  await page.screenshot({ path: join(outDir, 'sso-01-login.png'), fullPage: true });
  await page.getByRole('link', { name: /SSO/ }).click();
  await page.waitForURL(/\/interaction\//);
  await page.screenshot({ path: join(outDir, 'sso-02-idp.png'), fullPage: true });
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForURL(`${origin}/app/data`);
  await page.screenshot({ path: join(outDir, 'sso-03-app.png'), fullPage: true });
  const me = await page.evaluate(() => fetch('/.portcullis/api/whoami').then((r) => r.json()));
  if (me.subject !== username) throw new Error(`signed in as ${JSON.stringify(me)}`);
  console.log(`[sso] signed in as ${me.subject} (${me.amr.join(',')})`);
  ok = true;
} catch (e) {
  console.error(`[sso] failed: ${e.message}`);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
