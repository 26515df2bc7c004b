'use strict';
// The action pins the binary to its own release. A copy of the action (action.yml,
// action/, agent/Cargo.toml) is "checked out" in a temp folder, as the runner does for
// `uses: lanyard-ci/lanyard@<ref>`, and run with the default inputs. A local release
// tree stands in for https://github.com/lanyard-ci/lanyard/releases (the test hook
// LANYARD_ACTION_TEST_RELEASES_URL): download/v<X>/ is made by the release's own
// .github/workflows/package-release.sh from the binary under test; other releases
// hold stand-in binaries, so that fetching the wrong one is seen.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const h = require('./helpers');

const TIMEOUT = 120000;
const PACKAGE = path.join(h.REPO, '.github', 'workflows', 'package-release.sh');

// A release folder made by package-release.sh (archive + sums), as release.yml does.
function packageRelease(dir, binary) {
  fs.mkdirSync(dir, { recursive: true });
  for (const args of [['archive', h.TARGET, binary, dir], ['sums', dir, h.TARGET]]) {
    const r = spawnSync('sh', [PACKAGE, ...args], { encoding: 'utf8', env: { ...process.env, SOURCE_DATE_EPOCH: '1' } });
    assert.equal(r.status, 0, `package-release.sh ${args[0]}: ${r.stderr}`);
  }
}

// A stand-in lanyard that says it is `version` and fails anything else.
function standIn(dir, version) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'lanyard');
  fs.writeFileSync(file, `#!/bin/sh\n[ "$1" = --version ] && { echo "lanyard ${version}"; exit 0; }\necho "stand-in lanyard ${version}" >&2\nexit 3\n`, { mode: 0o755 });
  return file;
}

// root/download/v<X>/, root/latest/download/ served as /releases/...; hits recorded.
async function releasesServer(defer, root) {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url);
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.join(root, rel.replace(/^\/releases\//, ''));
    if (rel.startsWith('/releases/') && !rel.includes('..') && fs.existsSync(file) && fs.statSync(file).isFile()) {
      res.writeHead(200).end(fs.readFileSync(file));
    } else {
      res.writeHead(404).end('not found\n');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  return { url: `http://127.0.0.1:${server.address().port}/releases`, hits };
}

// The action's files at a ref whose agent/Cargo.toml says `version`.
function checkout(dir, version) {
  fs.mkdirSync(path.join(dir, 'action'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'agent'));
  fs.copyFileSync(path.join(h.REPO, 'action.yml'), path.join(dir, 'action.yml'));
  for (const f of fs.readdirSync(path.join(h.REPO, 'action'))) {
    fs.copyFileSync(path.join(h.REPO, 'action', f), path.join(dir, 'action', f));
  }
  const toml = fs.readFileSync(path.join(h.REPO, 'agent', 'Cargo.toml'), 'utf8');
  const changed = toml.replace(/^version = "[^"]+"$/m, `version = "${version}"`);
  assert.match(changed, new RegExp(`^version = "${version.replace(/\./g, '\\.')}"$`, 'm'));
  fs.writeFileSync(path.join(dir, 'agent', 'Cargo.toml'), changed);
  return path.join(dir, 'action', 'main.js');
}

async function setup(t) {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.writeFileSync(path.join(runner.work, 'lanyard.toml'), h.CONFIG);
  const root = path.join(runner.root, 'releases');
  const real = h.lanyardVersion();
  packageRelease(path.join(root, 'download', `v${real}`), h.LANYARD_BIN);
  packageRelease(path.join(root, 'download', 'v9.9.9'), standIn(path.join(runner.root, 's999'), '9.9.9'));
  packageRelease(path.join(root, 'latest', 'download'), standIn(path.join(runner.root, 'slatest'), '10.0.0'));
  const server = await releasesServer(defer, root);
  const issuer = await h.startIssuer(t, defer);
  const env = (ref, inputs = {}) => h.mainEnv(runner, {
    inputs,
    extra: {
      GITHUB_ACTION_REF: ref,
      LANYARD_ACTION_TEST_RELEASES_URL: server.url,
      // refused identity: start fails after the install, so these tests are about the install
      ACTIONS_ID_TOKEN_REQUEST_URL: issuer.tokenUrl,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'not-the-request-token',
    },
  });
  return { defer, runner, root, server, env, real };
}

function installed(runner) {
  const dir = path.join(runner.temp, 'lanyard-bin');
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

test('(a) at a release ref, the default version is the checkout\'s Cargo.toml version: exactly that release\'s archive is downloaded and installed', { timeout: TIMEOUT }, async (t) => {
  const { defer, runner, server, env, real } = await setup(t);
  for (const ref of [`v${real}`, `v${real.split('.')[0]}`]) {
    fs.rmSync(path.join(runner.temp, 'lanyard-bin'), { recursive: true, force: true });
    fs.writeFileSync(runner.files.path, '');
    server.hits.length = 0;
    const main = checkout(path.join(runner.root, `co-${ref}`), real);
    const e = env(ref);
    assert.equal(e.INPUT_VERSION, '', 'action.yml leaves version empty by default');
    defer(() => h.lanyard(['stop'], e));
    const step = await h.runStep(main, e, runner.work, defer);
    assert.equal(step.code, 1, `start is refused by the issuer:\n${h.describe(step)}`);
    assert.match(h.commands(step.stdout, 'error').join('\n'), /^lanyard start exited/, `${ref}: the failure is start's, after the install`);
    assert.match(step.stdout, new RegExp(`version ${real.replace(/\./g, '\\.')}, this action's own \\(ref ${ref}\\)`));
    assert.deepEqual(server.hits.sort(), [`/releases/download/v${real}/SHA256SUMS`, `/releases/download/v${real}/lanyard-${h.TARGET}.tar.gz`].sort(), `${ref}: release v${real} only`);
    const bin = path.join(runner.temp, 'lanyard-bin', real, 'lanyard');
    assert.equal(h.sha256(fs.readFileSync(bin)), h.sha256(fs.readFileSync(h.LANYARD_BIN)), 'the installed binary is release X\'s');
    assert.deepEqual(h.readLines(runner.files.path), [path.dirname(bin)]);
  }
});

test('(a) a checkout whose Cargo.toml says 9.9.9 installs release v9.9.9, not latest', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, env } = await setup(t);
  const main = checkout(path.join(runner.root, 'co'), '9.9.9');
  const step = await h.runStep(main, env('v9'), runner.work, () => {});
  assert.equal(step.code, 1, h.describe(step));
  assert.match(h.commands(step.stdout, 'error').join('\n'), /stand-in lanyard 9\.9\.9/, 'the v9.9.9 binary ran');
  assert.deepEqual(server.hits.sort(), ['/releases/download/v9.9.9/SHA256SUMS', `/releases/download/v9.9.9/lanyard-${h.TARGET}.tar.gz`].sort());
  assert.deepEqual(installed(runner), ['9.9.9']);
});

test('(a) version: latest is used only when asked for', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, env, real } = await setup(t);
  const main = checkout(path.join(runner.root, 'co'), real);
  const step = await h.runStep(main, env(`v${real}`, { version: 'latest' }), runner.work, () => {});
  assert.equal(step.code, 1, h.describe(step));
  assert.match(h.commands(step.stdout, 'error').join('\n'), /stand-in lanyard 10\.0\.0/);
  assert.deepEqual(server.hits.sort(), ['/releases/latest/download/SHA256SUMS', `/releases/latest/download/lanyard-${h.TARGET}.tar.gz`].sort());
});

test('(a) at a branch whose version has no release, the step fails saying what to set; nothing installed', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, env } = await setup(t);
  const main = checkout(path.join(runner.root, 'co'), '7.7.7');
  const step = await h.runStep(main, env('main'), runner.work, () => {});
  assert.equal(step.code, 1, h.describe(step));
  const errors = h.commands(step.stdout, 'error');
  assert.equal(errors.length, 1, h.describe(step));
  assert.match(errors[0], /could not download .*\/releases\/download\/v7\.7\.7\/SHA256SUMS: HTTP 404/);
  assert.match(errors[0], /There is no lanyard release 7\.7\.7: this action is used at ref "main" that is not a release/);
  assert.match(errors[0], /set the `version` input to a released version \(or `latest`\), or give a `binary`/);
  assert.deepEqual(server.hits, ['/releases/download/v7.7.7/SHA256SUMS']);
  assert.deepEqual(installed(runner), []);
  assert.equal(fs.readFileSync(runner.files.state, 'utf8'), '', 'no binary saved for post');
});

test('(a) a version tag that disagrees with the checkout\'s Cargo.toml is refused before any download', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, env, real } = await setup(t);
  const main = checkout(path.join(runner.root, 'co'), real);
  const step = await h.runStep(main, env('v1.2.3-not-this'), runner.work, () => {});
  assert.equal(step.code, 1, h.describe(step));
  assert.match(h.commands(step.stdout, 'error').join('\n'), new RegExp(`used at v1\\.2\\.3-not-this, but its agent/Cargo\\.toml says version ${real.replace(/\./g, '\\.')}; set the \`version\` input`));
  assert.deepEqual(server.hits, []);
});
