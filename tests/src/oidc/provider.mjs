// A real OpenID provider for the tests: npm `oidc-provider` (OpenID Certified), over HTTPS
// with the test PKI. Started by tests/src/oidc.rs with one argument: a JSON file
// {issuer, host, port, cert, key, clients, users, ttl}. Prints `ready` when it listens.
//
// Interactions (login) are this script's own pages: a login form (`login`, `password`)
// checked against the configured users; consent is granted for the requested scopes at once
// (first-party clients). Everything else — authorization, token, device flow pages, JWKS,
// discovery — is the library's.
import { readFileSync } from 'node:fs';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import https from 'node:https';
import Provider from 'oidc-provider';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = cfg.users;

const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
key.kid = `k-${randomBytes(4).toString('hex')}`;
key.alg = 'RS256';
key.use = 'sig';

const ttl = cfg.ttl || {};
const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  jwks: { keys: [key] },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  findAccount: async (_ctx, id) => {
    const u = users[id];
    if (!u) return undefined;
    return {
      accountId: id,
      claims: async () => ({
        sub: id,
        name: u.name,
        email: u.email,
        email_verified: true,
        preferred_username: id,
        groups: u.groups,
      }),
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  // ID tokens from the token endpoint carry the scopes' claims (groups among them).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    IdToken: ttl.id_token || 3600,
    AccessToken: ttl.access_token || 3600,
    RefreshToken: 86400,
    DeviceCode: ttl.device_code || 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  pkce: { required: () => true },
});
provider.proxy = false;

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(res, uid, error) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><head><title>Sign in</title></head><body>
<h1>Sign in to the test IdP</h1>${error ? `<p id="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login">
<input id="login" name="login" type="text" autofocus>
<input id="password" name="password" type="password">
<button id="submit" type="submit">Sign in</button>
</form></body></html>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res) {
  const m = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  const details = await provider.interactionDetails(req, res);
  if (m[1] !== details.uid) throw new Error('interaction mismatch');
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method === 'POST' && m[2]) {
      const form = await readForm(req);
      const u = users[form.get('login')];
      if (!u || u.password !== form.get('password')) {
        return loginPage(res, details.uid, 'Invalid user name or password');
      }
      return provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, { mergeWithLastSubmission: false });
    }
    return loginPage(res, details.uid);
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  res.writeHead(400);
  res.end(`unknown prompt ${prompt.name}`);
}

const callback = provider.callback();
const server = https.createServer({
  cert: readFileSync(cfg.cert),
  key: readFileSync(cfg.key),
}, (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      console.error('interaction failed', e);
      if (!res.headersSent) { res.writeHead(500); }
      res.end(String(e && e.message));
    });
    return;
  }
  callback(req, res);
});
// Say why it ends, on stderr (the test shows that log when `ready` never came).
process.on('exit', (code) => console.error(`oidc provider: exiting with code ${code}`));
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => { console.error(`oidc provider: ${sig}`); process.exit(128); });
}
server.on('error', (e) => { console.error('oidc provider: server error', e); process.exit(70); });
server.listen(cfg.port, cfg.host, () => console.log('ready'));
