// What every browser script shares: Debian's Chromium and its flags, axe-core's source,
// its log prefix, a failed step, and the way it runs (an overall time limit, exit code 0
// only when every step held).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** Debian's Chromium, and the flags every test browser runs with. */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** axe-core, to inject into a page before `axe.run`. */
export const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** A step whose check did not hold (as opposed to an error of the script itself). */
export class StepFailed extends Error {}

/** Throws a StepFailed with `msg`. */
export function fail(msg) {
  throw new StepFailed(msg);
}

/** A logger that prefixes each line with `[name]`. */
export function logger(name) {
  return (msg) => console.log(`[${name}] ${msg}`);
}

/**
 * Runs `main`, exits 0 with `passMessage` when it resolves, 1 when a step failed, an
 * error was thrown or `timeoutMs` passed.
 */
export function run(name, main, timeoutMs, passMessage) {
  const timer = setTimeout(() => {
    console.error(`[${name}] FAIL: timed out after ${timeoutMs / 1000} s`);
    process.exit(1);
  }, timeoutMs);
  timer.unref();
  main().then(
    () => {
      console.log(`[${name}] ${passMessage}`);
      process.exit(0);
    },
    (e) => {
      if (e instanceof StepFailed) console.error(`[${name}] FAIL: ${e.message}`);
      else console.error(`[${name}] ERROR: ${e && e.stack ? e.stack : e}`);
      process.exit(1);
    },
  );
}
