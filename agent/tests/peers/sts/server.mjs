// RFC 8693 token-exchange test peer on oidc-provider (panva). See ../README.md.
// Env: SUBJECT_ISSUER (required), SUBJECT_AUDIENCE, ALLOWED_REPOSITORY, TOKEN_TTL; optionally
// DEVELOPER_ISSUER (an OIDC IdP such as idp.mjs whose ID tokens are accepted too), DEVELOPER_AUDIENCE
// (default lanyard-cli) and DEVELOPER_EMAIL_DOMAIN (default acme.test).
// Prints one ready line {"port","issuer","token_endpoint","revocation_endpoint","introspection_endpoint"}.
import { createServer } from 'node:http';
import { createRemoteJWKSet, jwtVerify, errors as joseErrors, generateKeyPair, exportJWK, SignJWT } from 'jose';
import { randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const log = (...a) => console.error('sts:', ...a);
const SUBJECT_ISSUER = process.env.SUBJECT_ISSUER?.replace(/\/+$/, '');
if (!SUBJECT_ISSUER) {
  log('SUBJECT_ISSUER is required');
  process.exit(2);
}
const SUBJECT_AUDIENCE = process.env.SUBJECT_AUDIENCE || 'https://sts.test';
const ALLOWED_REPOSITORY = process.env.ALLOWED_REPOSITORY || 'acme/app';
const TOKEN_TTL = Number(process.env.TOKEN_TTL || 30);

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const SUBJECT_TYPES = new Set(['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token']);
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
// requested_token_type=...:jwt gets a JWT signed with this key (kid sts-jwt-1), published at /jwt/jwks.json,
// for resource servers that verify tokens themselves (Tyk's jwt_source).
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const JWT_KID = 'sts-jwt-1';
const jwtKeys = await generateKeyPair('RS256', { extractable: true });
const jwtJwks = { keys: [{ ...(await exportJWK(jwtKeys.publicKey)), kid: JWT_KID, alg: 'RS256', use: 'sig' }] };
const jwks = createRemoteJWKSet(new URL(`${SUBJECT_ISSUER}/jwks.json`));
// A developer's ID token from the company IdP (lanyard login) is a second kind of subject token.
const DEVELOPER_ISSUER = process.env.DEVELOPER_ISSUER?.replace(/\/+$/, '');
const DEVELOPER_AUDIENCE = process.env.DEVELOPER_AUDIENCE || 'lanyard-cli';
const DEVELOPER_EMAIL_DOMAIN = process.env.DEVELOPER_EMAIL_DOMAIN || 'acme.test';
const developerJwks = DEVELOPER_ISSUER ? createRemoteJWKSet(new URL(`${DEVELOPER_ISSUER}/jwks`)) : undefined;
const unverifiedIssuer = (jwt) => {
  try {
    return JSON.parse(Buffer.from(String(jwt).split('.')[1], 'base64url').toString()).iss;
  } catch {
    return undefined;
  }
};

// The http server must listen before the Provider exists, since the issuer URL carries the port.
const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const refuse = (description) => new errors.CustomOIDCProviderError('invalid_grant', description);
// Public clients may only see/revoke their own tokens; the confidential test clients may handle any.
const mayHandle = (client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId;

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'lanyard', client_secret: 'lanyard-secret', token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [TOKEN_EXCHANGE, 'client_credentials'], redirect_uris: [], response_types: [] },
    { client_id: 'lanyard-post', client_secret: 'lanyard-secret', token_endpoint_auth_method: 'client_secret_post',
      grant_types: [TOKEN_EXCHANGE, 'client_credentials'], redirect_uris: [], response_types: [] },
    { client_id: 'lanyard-public', token_endpoint_auth_method: 'none',
      grant_types: [TOKEN_EXCHANGE], redirect_uris: [], response_types: [] },
    { client_id: 'lanyard-federated', token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS256', jwks_uri: `${SUBJECT_ISSUER}/jwks.json`,
      grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
  ],
  scopes: ['openid', 'read', 'write', 'deploy'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async (ctx, client, token) => mayHandle(client, token) },
    revocation: { enabled: true, allowedPolicy: async (ctx, client, token) => mayHandle(client, token) },
  },
  ttl: { ClientCredentials: TOKEN_TTL },
  // oidc-provider's fetch refuses loopback addresses (SSRF guard), but the client jwks_uri is on 127.0.0.1.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});
provider.proxy = false;

async function verifySubject(subjectToken, developer) {
  try {
    const { payload } = developer
      ? await jwtVerify(subjectToken, developerJwks, { issuer: DEVELOPER_ISSUER })
      : await jwtVerify(subjectToken, jwks, { issuer: SUBJECT_ISSUER });
    return payload;
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw refuse('subject token expired');
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'iss') {
      throw refuse(`subject token issuer ${JSON.stringify(err.payload?.iss)} is not ${JSON.stringify(SUBJECT_ISSUER)}`);
    }
    throw refuse(`subject token is invalid: ${err.code ?? err.name}: ${err.message}`);
  }
}

provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const { params, client } = ctx.oidc;
  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!SUBJECT_TYPES.has(params.subject_token_type)) {
    throw new errors.InvalidRequest(`unsupported subject_token_type ${JSON.stringify(params.subject_token_type ?? null)}`);
  }
  if (params.requested_token_type && ![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.requested_token_type)) {
    throw new errors.InvalidRequest(`unsupported requested_token_type ${JSON.stringify(params.requested_token_type)}`);
  }

  const developer = Boolean(DEVELOPER_ISSUER) && unverifiedIssuer(params.subject_token) === DEVELOPER_ISSUER;
  const claims = await verifySubject(params.subject_token, developer);
  if (developer) {
    if (![claims.aud].flat().includes(DEVELOPER_AUDIENCE)) {
      throw refuse(`developer token audience ${JSON.stringify(claims.aud ?? null)} is not ${JSON.stringify(DEVELOPER_AUDIENCE)}`);
    }
    if (typeof claims.email !== 'string' || !claims.email.endsWith(`@${DEVELOPER_EMAIL_DOMAIN}`)) {
      throw refuse(`developer ${JSON.stringify(claims.email ?? claims.sub ?? null)} is not in ${DEVELOPER_EMAIL_DOMAIN}`);
    }
    const token = new provider.ClientCredentials({
      client,
      scope: params.scope || undefined,
      extra: { sub: claims.sub, email: claims.email, kind: 'developer', audience: params.audience, resource: params.resource },
    });
    ctx.oidc.entity('ClientCredentials', token);
    const accessToken = await token.save();
    log(`token-exchange ok (developer): client=${client.clientId} sub=${claims.sub} email=${claims.email}`);
    ctx.body = {
      access_token: accessToken,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: token.expiration,
      ...(token.scope ? { scope: token.scope } : {}),
    };
    return;
  }
  const auds = [claims.aud].flat();
  if (!auds.includes(SUBJECT_AUDIENCE)) {
    throw refuse(`subject token audience ${JSON.stringify(claims.aud ?? null)} is not ${JSON.stringify(SUBJECT_AUDIENCE)}`);
  }
  const repository = claims.repository ?? claims.project_path;
  if (repository !== ALLOWED_REPOSITORY) {
    throw refuse(`subject token repository ${JSON.stringify(repository ?? null)} is not allowed`);
  }

  if (params.requested_token_type === JWT_TOKEN_TYPE) {
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({ repository, client_id: client.clientId, ...(params.scope ? { scope: params.scope } : {}) })
      .setProtectedHeader({ alg: 'RS256', kid: JWT_KID, typ: 'JWT' })
      .setIssuer(issuer).setSubject(claims.sub).setAudience(params.audience ?? params.resource ?? issuer)
      .setIssuedAt(now).setExpirationTime(now + TOKEN_TTL).setJti(randomUUID())
      .sign(jwtKeys.privateKey);
    log(`token-exchange ok (jwt): client=${client.clientId} sub=${claims.sub}`);
    ctx.body = { access_token: jwt, issued_token_type: JWT_TOKEN_TYPE, token_type: 'Bearer', expires_in: TOKEN_TTL,
      ...(params.scope ? { scope: params.scope } : {}) };
    return;
  }

  // ClientCredentials is an opaque token that introspection and revocation understand.
  const token = new provider.ClientCredentials({
    client,
    scope: params.scope || undefined,
    extra: { sub: claims.sub, repository, audience: params.audience, resource: params.resource },
  });
  ctx.oidc.entity('ClientCredentials', token);
  const accessToken = await token.save();
  log(`token-exchange ok: client=${client.clientId} sub=${claims.sub}`);
  ctx.body = {
    access_token: accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}, ['subject_token', 'subject_token_type', 'audience', 'resource', 'scope', 'requested_token_type',
  'actor_token', 'actor_token_type'], ['audience', 'resource']);

// oidc-provider keeps the real reason of e.g. invalid_client in error_detail, out of the body. A test peer
// should explain itself, so log every refusal and append the detail to the body's error_description.
for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'server_error']) {
  provider.on(event, (ctx, err) => {
    log(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}`
      + (err.error_detail ? ` (${err.error_detail})` : ''));
    if (err.expose && err.error_detail && ctx.body?.error_description) {
      ctx.body.error_description += ` (${err.error_detail})`;
    }
  });
}

const handle = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'GET' && req.url === '/jwt/jwks.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(jwtJwks));
    return;
  }
  handle(req, res);
});
console.log(JSON.stringify({
  port,
  issuer,
  token_endpoint: `${issuer}/token`,
  revocation_endpoint: `${issuer}/token/revocation`,
  introspection_endpoint: `${issuer}/token/introspection`,
}));

const stop = () => server.close(() => process.exit(0)) && server.closeAllConnections();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
