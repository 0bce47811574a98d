// TOTP codes for the browser tests (RFC 6238, SHA-1, 6 digits, 30 s), as an
// authenticator app computes them; shared by signin.mjs and pages.mjs.

import { createHmac } from 'node:crypto';

export const STEP_SECONDS = 30;
const MIN_REMAINING_SECONDS = 3;

function log(msg) {
  console.log(`[totp] ${msg}`);
}

export function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.toUpperCase().replace(/[\s=]/g, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) throw new Error(`TOTP secret is not base32 (bad character ${JSON.stringify(ch)})`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

export function hotp(key, counter, digits = 6) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(msg).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 10 ** digits).padStart(digits, '0');
}

// RFC 6238 appendix B (SHA-1, T = 59 s): 94287082 (8 digits) -> 287082 with 6.
export function selfTestTotp() {
  const key = Buffer.from('12345678901234567890', 'ascii');
  const got8 = hotp(key, Math.floor(59 / STEP_SECONDS), 8);
  const got6 = hotp(key, Math.floor(1111111109 / STEP_SECONDS), 6);
  if (got8 !== '94287082' || got6 !== '081804') {
    throw new Error(`TOTP self-test failed (${got8}, ${got6}): the code generator is wrong`);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A code for a time step later than `afterStep`, with at least 3 s left in its step. */
export async function freshCode(key, afterStep) {
  for (;;) {
    const now = Date.now() / 1000;
    const step = Math.floor(now / STEP_SECONDS);
    const remaining = (step + 1) * STEP_SECONDS - now;
    if (step > afterStep && remaining >= MIN_REMAINING_SECONDS) {
      return { code: hotp(key, step), step };
    }
    const waitMs = Math.ceil(remaining * 1000) + 200;
    log(
      step <= afterStep
        ? `waiting ${(waitMs / 1000).toFixed(1)} s for the next TOTP step (codes are single-use)`
        : `only ${remaining.toFixed(1)} s left in this TOTP step, waiting ${(waitMs / 1000).toFixed(1)} s for the next`,
    );
    await sleep(waitMs);
  }
}

