// A real OpenID Connect provider (npm `oidc-provider`) for the gateway's SSO tests.
// One provider per process; start several processes (different ports) for several IdPs.
// Started by tests/blackbox/idp.rs; needs `npm ci --prefix tests/idp` first.
//
//   node tests/idp/server.mjs <config.json>
//
// config.json:
//   { "accounts": [{ "sub": "alice", "password": "pw", "email": "alice@example.com",
//                    "name": "Alice", "groups": ["admins"], "amr": ["pwd", "otp"] }] }
//
// Start-up, in two steps:
// 1. Listens on 127.0.0.1 on a port the OS picks (never a port picked beforehand, which
//    another process could take meanwhile) and prints `LISTENING <port>`; the issuer is
//    http://127.0.0.1:<port>.
// 2. Reads its clients as one JSON line on stdin, then serves and prints `READY`:
//      { "clients": [{ "client_id": "gw", "client_secret": "secret",
//                      "redirect_uris": ["http://.../callback"],
//                      "post_logout_redirect_uris": ["http://.../"],          // optional
//                      "backchannel_logout_uri": "http://.../bc-logout",      // optional
//                      "token_endpoint_auth_method": "client_secret_post" }]  // optional,
//      }                                   // default client_secret_basic (oidc-provider
//                                          // accepts exactly the registered method)
//    The clients come second because a gateway needs the issuer in its policy before it
//    starts, and the client's redirect URI names the port that gateway then bound.
//    Requests that arrive before the clients wait for them.
//
// Behaviour:
// - Authorization code flow only, PKCE S256 required, RS256 ID tokens (fresh key per
//   process). Scopes: openid (sub, amr, sid), email (email, email_verified),
//   profile (name, groups), groups (groups). All of them go into the ID token too.
// - Login: GET /interaction/<uid> answers an HTML form (POST username=<sub>&password=...
//   to its action). A wrong password answers 401 with the form again. Consent is
//   approved automatically. The account's `amr` becomes the ID token's `amr`.
// - Clients with a backchannel_logout_uri get `sid` in ID tokens and a logout_token
//   POSTed (loopback allowed) when the IdP session ends: RP-initiated logout at
//   /session/end, or the test hook below.
// - Test hooks: GET /test/health -> {"ok":true,"issuer":...};
//   POST /test/logout/<sub> -> ends every IdP session of <sub>, sends the back-channel
//   logouts, answers {"sessions":N,"notified":[{"client_id","sid"}...],"errors":[...]}.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createInterface } from 'node:readline';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = new Map(config.accounts.map((a) => [a.sub, a]));

// Step 1: the listener (requests wait for `serving`, settled in step 2).
let serve;
const serving = new Promise((resolve) => { serve = resolve; });
const server = http.createServer((req, res) => {
  serving.then(() => route(req, res)).catch((err) => {
    console.error(`${req.method} ${req.url}: ${err.stack ?? err}`);
    if (!res.headersSent) json(res, err.statusCode ?? 500, { error: err.name, message: err.message });
    else res.end();
  });
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const issuer = `http://127.0.0.1:${server.address().port}`;
console.log(`LISTENING ${server.address().port}`);
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

// Step 2: the clients.
const lines = createInterface({ input: process.stdin });
const [clientsLine] = await once(lines, 'line');
lines.close();
const { clients } = JSON.parse(clientsLine);

const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};

const provider = new Provider(issuer, {
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    ...(c.backchannel_logout_uri && {
      backchannel_logout_uri: c.backchannel_logout_uri,
      backchannel_logout_session_required: true,
    }),
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
  })),
  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // email, name, groups in the ID token, not only userinfo
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
  },
  // The provider's own fetch refuses loopback addresses (SSRF guard); the test
  // back-channel receivers live on 127.0.0.1, so drop its guarded dispatcher.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      claims: () => ({
        sub,
        email: account.email,
        email_verified: true,
        name: account.name,
        groups: account.groups ?? [],
      }),
    };
  },
});

provider.on('backchannel.error', (ctx, err, client) =>
  console.error(`backchannel logout to ${client.clientId} failed: ${err.message}`));
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// IdP sessions per account, for the logout hook (ids are checked again on use).
const sessionsOf = new Map();
provider.on('session.saved', (session) => {
  if (!session.accountId) return;
  if (!sessionsOf.has(session.accountId)) sessionsOf.set(session.accountId, new Set());
  sessionsOf.get(session.accountId).add(session.jti);
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginForm(res, uid, status, message) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><title>Test IdP sign-in</title>
<h1>Sign in to ${escape(issuer)}</h1>${message ? `<p class="error">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="username" autocomplete="username"> <input name="password" type="password">
<button type="submit">Sign in</button></form>`);
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// Grants every scope and claim the client asked for (consent is automatic here).
async function approve(details, accountId) {
  const { params, prompt } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(prompt.details.missingOIDCScope?.join(' ') ?? params.scope);
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function logoutAccount(sub) {
  const result = { sessions: 0, notified: [], errors: [] };
  for (const id of sessionsOf.get(sub) ?? []) {
    const session = await provider.Session.find(id);
    if (!session || session.accountId !== sub) continue;
    result.sessions += 1;
    for (const [clientId, { grantId }] of Object.entries(session.authorizations ?? {})) {
      const client = await provider.Client.find(clientId);
      const sid = session.sidFor(clientId);
      if (client?.backchannelLogoutUri) {
        try {
          await client.backchannelLogout(sub, sid);
          result.notified.push({ client_id: clientId, sid });
        } catch (err) {
          result.errors.push(`${clientId}: ${err.message}`);
        }
      }
      if (grantId) await (await provider.Grant.find(grantId))?.destroy();
    }
    await session.destroy();
  }
  sessionsOf.delete(sub);
  return result;
}

const oidc = provider.callback();

async function route(req, res) {
  const { pathname } = new URL(req.url, issuer);
  let m;
  if (req.method === 'GET' && pathname === '/test/health') {
    return json(res, 200, { ok: true, issuer });
  }
  if (req.method === 'POST' && (m = pathname.match(/^\/test\/logout\/([^/]+)$/))) {
    return json(res, 200, await logoutAccount(decodeURIComponent(m[1])));
  }
  if (req.method === 'GET' && (m = pathname.match(/^\/interaction\/([^/]+)$/))) {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') return loginForm(res, details.uid, 200);
    const grantId = await approve(details, details.session.accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'POST' && (m = pathname.match(/^\/interaction\/([^/]+)\/login$/))) {
    const details = await provider.interactionDetails(req, res);
    const form = await readForm(req);
    const account = accounts.get(form.get('username'));
    if (!account || account.password !== form.get('password')) {
      return loginForm(res, details.uid, 401, 'Wrong username or password.');
    }
    const grantId = await approve(details, account.sub);
    return provider.interactionFinished(req, res, {
      login: { accountId: account.sub, amr: account.amr ?? ['pwd'] },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }
  return oidc(req, res);
}

serve();
console.log('READY');
