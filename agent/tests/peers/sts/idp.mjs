// Developer IdP test peer on oidc-provider (panva): the company IdP a developer signs in to with
// `lanyard login`. See ../README.md. Env: ID_TOKEN_TTL (seconds, default 300).
// Prints one ready line {"port","issuer","token_endpoint","revocation_endpoint","device_authorization_endpoint"}.
//
// One public native client, `lanyard-cli`: device flow, authorization code + PKCE with loopback
// redirects (any port), refresh tokens (offline_access), revocation. The user step uses
// oidc-provider's own pages (devInteractions): any login name signs in as that account, whose
// email is <login>@acme.test; tests drive those pages with browser.mjs.
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const log = (...a) => console.error('idp:', ...a);
// stdout carries exactly the ready line: oidc-provider's notices go to stderr with the logs.
const ready = (line) => process.stdout.write(`${line}\n`);
console.log = console.info = console.warn = (...a) => console.error(...a);
const ID_TOKEN_TTL = Number(process.env.ID_TOKEN_TTL || 300);
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const stats = { refresh: 0, device: 0, code: 0, revoked: 0 };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'lanyard-cli', client_name: 'lanyard', application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_CODE, 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      // RFC 8252 §7.3: a loopback redirect matches on any port.
      redirect_uris: ['http://127.0.0.1/callback'],
    },
  ],
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // Put the email claim in the ID token itself (the exchange only sees the ID token).
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: `${id}@acme.test`, email_verified: true }; } };
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  ttl: { IdToken: ID_TOKEN_TTL, AccessToken: ID_TOKEN_TTL, DeviceCode: 600, RefreshToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  cookies: { keys: ['lanyard-test-idp-cookie-key'] },
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params.grant_type;
  if (gt === 'refresh_token') stats.refresh += 1;
  else if (gt === DEVICE_CODE) stats.device += 1;
  else if (gt === 'authorization_code') stats.code += 1;
  log(`grant ok: ${gt}`);
});
provider.on('refresh_token.destroyed', () => { stats.revoked += 1; log('refresh token destroyed (revoked)'); });
for (const event of ['grant.error', 'revocation.error', 'server_error', 'authorization.error', 'code_verification.error', 'device_authorization.error']) {
  provider.on(event, (ctx, err) => {
    log(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}` + (err.error_detail ? ` (${err.error_detail})` : ''));
  });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  // Test-only counters, so a test can see refreshes happen.
  if (req.url === '/test/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  callback(req, res);
});

ready(JSON.stringify({
  port,
  issuer,
  token_endpoint: `${issuer}/token`,
  revocation_endpoint: `${issuer}/token/revocation`,
  device_authorization_endpoint: `${issuer}/device/auth`,
}));

const stop = () => server.close(() => process.exit(0)) && server.closeAllConnections();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
