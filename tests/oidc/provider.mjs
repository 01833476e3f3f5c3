// A real OpenID Provider for Gatehouse's integration tests.
//
//   node provider.mjs serve KEYS_FILE PORT   serve on 127.0.0.1:PORT with the keys in KEYS_FILE
//   node provider.mjs rotate KEYS_FILE       add a new signing key in front of the old ones
//
// Clients (secret = "<client_id>-secret", client_secret_post):
//   gatehouse    client credentials and authorization code; tokens carry
//                realm_access.roles = ["operator"], groups = ["research"]
//   plain        client credentials; no role or group claims
//   short-lived  client credentials; access tokens live 1 second
//   EXTRA_CLIENTS='{"id": {claims}}' adds client-credentials clients whose
//                access tokens carry those claims (sub = the client id)
// Accounts (authorization code, any password): claims sub, email
// <login>@example.com, email_verified true, name; ACCOUNTS='{"login": {claims}}'
// replaces some of them for a login (null removes a claim).
// Access tokens are RS256 JWTs (RFC 9068) whose aud is the requested
// resource indicator (default https://gateway.example).
import fs from 'node:fs';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const [, , mode, keysFile, port] = process.argv;

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function readKeys() {
  return fs.existsSync(keysFile) ? JSON.parse(fs.readFileSync(keysFile, 'utf8')) : [];
}

if (mode === 'rotate') {
  fs.writeFileSync(keysFile, JSON.stringify([newKey(), ...readKeys()]));
  process.exit(0);
}

let keys = readKeys();
if (keys.length === 0) {
  keys = [newKey()];
  fs.writeFileSync(keysFile, JSON.stringify(keys));
}

const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.REDIRECT_URIS || 'http://127.0.0.1/callback').split(',');
const extraClients = JSON.parse(process.env.EXTRA_CLIENTS || '{}');
const accounts = JSON.parse(process.env.ACCOUNTS || '{}');
const client = (id, extra = {}) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_post',
  ...extra,
});

const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [
    client('gatehouse', { grant_types: ['client_credentials', 'authorization_code'], response_types: ['code'], redirect_uris: redirectUris }),
    client('plain'),
    client('short-lived'),
    ...Object.keys(extraClients).map((id) => client(id)),
  ],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'email', 'profile', 'api'],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://gateway.example',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: {
    ClientCredentials: (ctx, token, clientObj) => (clientObj.clientId === 'short-lived' ? 1 : 600),
    AccessToken: 600,
    IdToken: 600,
  },
  extraTokenClaims: (ctx, token) =>
    token.clientId === 'gatehouse'
      ? { realm_access: { roles: ['operator'] }, groups: ['research'] }
      : extraClients[token.clientId] || {},
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => {
      const claims = { sub: id, email: `${id}@example.com`, email_verified: true, name: `User ${id}`, ...accounts[id] };
      for (const [k, v] of Object.entries(claims)) if (v === null) delete claims[k];
      return claims;
    },
  }),
  pkce: { required: () => true },
});

provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
