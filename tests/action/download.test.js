'use strict';
// The action's download path: a real release folder (an archive of the real
// binary made with tar czf, and SHA256SUMS from sha256sum) served over HTTP
// on 127.0.0.1 by a server inside the test.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after, before, test } = require('node:test');
const h = require('./helpers');

const TIMEOUT = 120000;
let shared; // the good release folder, built once for this file

before(() => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanyard-release-'));
  shared = h.makeRelease(dir);
});
after(() => {
  if (shared) fs.rmSync(shared.dir, { recursive: true, force: true });
});

async function setup(t, folder = shared) {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.writeFileSync(path.join(runner.work, 'lanyard.toml'), h.CONFIG);
  const issuer = await h.startIssuer(t, defer);
  const server = await h.releaseServer(defer, folder);
  const identity = (token = h.GHA_BEARER) => ({
    ACTIONS_ID_TOKEN_REQUEST_URL: issuer.tokenUrl,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: token,
  });
  return { defer, runner, issuer, server, identity };
}

// A `lanyard` on PATH that is not the real one: it records every call.
function decoy(runner, version) {
  const dir = path.join(runner.root, 'decoy-bin');
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(runner.root, 'decoy.log');
  fs.writeFileSync(path.join(dir, 'lanyard'), `#!/bin/sh\necho "$*" >> '${log}'\n[ "$1" = --version ] && echo "lanyard ${version}"\nexit 0\n`, { mode: 0o755 });
  return { dir, calls: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []) };
}

function assertInstalled(runner, label, server) {
  const dir = path.join(runner.temp, 'lanyard-bin', label);
  const bin = path.join(dir, 'lanyard');
  assert.deepEqual(h.readLines(runner.files.path), [dir], 'GITHUB_PATH gets the install folder, once');
  assert.ok(fs.statSync(bin).mode & 0o100, `${bin} is executable`);
  assert.equal(h.sha256(fs.readFileSync(bin)), h.sha256(fs.readFileSync(h.LANYARD_BIN)), 'the installed binary is the released one');
  assert.equal(h.readFileCommands(runner.files.state).get('binary'), bin, 'post gets the installed binary');
  assert.deepEqual(
    server.hits.filter((u) => u.startsWith('/rel/')).sort(),
    [`/rel/SHA256SUMS`, `/rel/lanyard-${h.TARGET}.tar.gz`].sort(),
    'each asset is fetched once',
  );
  assert.deepEqual(fs.readdirSync(path.join(runner.temp, 'lanyard-bin')), [label], 'no staging folder left behind');
  return bin;
}

test('(d) download: "latest" ignores lanyard on PATH, follows redirects, installs the verified archive and adds it to GITHUB_PATH', { timeout: TIMEOUT }, async (t) => {
  const { defer, runner, server, identity } = await setup(t);
  const fake = decoy(runner, h.lanyardVersion());
  // A refused identity makes start fail after the install, with or without
  // `lanyard start` in the binary, so this test is about the install only.
  const env = h.mainEnv(runner, {
    inputs: { version: 'latest', 'download-url': `${server.base}/redirect/` },
    extra: { ...identity('not-the-request-token'), PATH: `${fake.dir}${path.delimiter}${process.env.PATH}` },
  });
  assert.ok(env['INPUT_DOWNLOAD-URL'], 'the runner keeps "-" in input names');
  defer(() => h.lanyard(['stop'], env));
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, `start is refused by the issuer:\n${h.describe(main)}`);
  const errors = h.commands(main.stdout, 'error');
  assert.equal(errors.length, 1, h.describe(main));
  assert.match(errors[0], /^lanyard start exited/, 'the failure is start\'s, after the install');
  assert.match(main.stdout, /matches SHA256SUMS \(sha256:[0-9a-f]{64}\)/);
  assertInstalled(runner, 'latest', server);
  assert.deepEqual(server.hits.filter((u) => u.startsWith('/redirect/')).length, 2, 'both assets came through a redirect');
  assert.deepEqual(fake.calls(), [], 'the lanyard on PATH was not used for "latest"');
});

test('(d) download end to end: a pinned version through a redirect, installed, started and stopped [needs lanyard start/stop/status]', { timeout: TIMEOUT }, async (t) => {
  h.requireSubcommands('start', 'stop', 'status');
  const { defer, runner, server, identity } = await setup(t);
  const version = h.lanyardVersion();
  const env = h.mainEnv(runner, { inputs: { version: `v${version}`, 'download-url': `${server.base}/redirect` }, extra: identity() });
  // If the test fails before post ran: stop (idempotent), then the daemon by PID.
  defer(() => h.lanyard(['stop'], { ...env, LANYARD_STATE_DIR: path.join(runner.temp, 'lanyard') }));
  let daemon = null;
  defer(() => {
    if (daemon && h.isAlive(daemon)) process.kill(daemon, 'SIGTERM');
  });
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 0, h.describe(main));
  const bin = assertInstalled(runner, version, server);
  assert.ok(server.hits.some((u) => u.startsWith('/redirect/')), 'the redirect was followed');
  const exported = h.readFileCommands(runner.files.env);
  for (const name of h.CONTRACT_VARS) assert.ok(exported.has(name), `GITHUB_ENV lacks ${name}`);

  const later = h.laterEnv(runner, env);
  assert.equal(h.lanyard(['status'], later).status, 0, 'running');
  daemon = h.daemonPid(later, exported.get('LANYARD_STATE_DIR'));
  const post = await h.runStep(h.POST, later, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.deepEqual(h.commands(post.stdout, 'warning'), [], h.describe(post));
  assert.ok(!h.isAlive(daemon), `lanyard's daemon (PID ${daemon}) is gone`);
  assert.ok(!fs.existsSync(exported.get('LANYARD_CA_FILE')), 'the CA bundle is removed');
  assert.ok(fs.existsSync(bin), 'the installed binary stays for the rest of the job');
});

test('(d) a tampered archive is refused: nothing installed, nothing started', { timeout: TIMEOUT }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanyard-release-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const release = h.makeRelease(dir);
  const sums = fs.readFileSync(path.join(dir, 'SHA256SUMS'));
  h.makeRelease(dir, { readme: 'lanyard, with a little something added\n' }); // same name, other bytes
  fs.writeFileSync(path.join(dir, 'SHA256SUMS'), sums);

  const { runner, issuer, server, identity, defer } = await setup(t, release);
  const env = h.mainEnv(runner, { inputs: { 'download-url': `${server.base}/rel/` }, extra: identity() });
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  const errors = h.commands(main.stdout, 'error');
  assert.equal(errors.length, 1, h.describe(main));
  assert.match(errors[0], new RegExp(`checksum mismatch for lanyard-${h.TARGET}\\.tar\\.gz: .*refusing to install it`));
  assert.deepEqual(h.readLines(runner.files.path), [], 'nothing added to GITHUB_PATH');
  const binDir = path.join(runner.temp, 'lanyard-bin');
  assert.deepEqual(fs.existsSync(binDir) ? fs.readdirSync(binDir) : [], [], 'nothing installed');
  assert.equal(fs.readFileSync(runner.files.state, 'utf8'), '', 'no binary saved for post');
  assert.equal((await issuer.stats()).gha_requests, 0, 'lanyard never ran');
});

test('(d) an archive without a SHA256SUMS line is refused before it is downloaded', { timeout: TIMEOUT }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanyard-release-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(path.join(shared.dir, shared.archive), path.join(dir, shared.archive));
  fs.writeFileSync(path.join(dir, 'SHA256SUMS'), `${'a'.repeat(64)}  lanyard-sparc64-unknown-linux-musl.tar.gz\n`);
  const { runner, server, defer } = await setup(t, { dir });
  const main = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { 'download-url': `${server.base}/rel/` } }), runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  assert.deepEqual(h.commands(main.stdout, 'error'), [`SHA256SUMS has no line for lanyard-${h.TARGET}.tar.gz; refusing to install it`]);
  assert.deepEqual(server.hits, ['/rel/SHA256SUMS'], 'the archive is not fetched');
  assert.deepEqual(h.readLines(runner.files.path), []);
});

test('(d) a missing SHA256SUMS is refused', { timeout: TIMEOUT }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lanyard-release-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(path.join(shared.dir, shared.archive), path.join(dir, shared.archive));
  const { runner, server, defer } = await setup(t, { dir });
  const main = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { 'download-url': `${server.base}/rel` } }), runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  assert.match(h.commands(main.stdout, 'error').join('\n'), /could not download http:\/\/127\.0\.0\.1:\d+\/rel\/SHA256SUMS: .*HTTP 404/);
  assert.deepEqual(h.readLines(runner.files.path), []);
});

test('(d) plain http to a non-loopback host is refused, as download-url and as a redirect', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, defer } = await setup(t);
  const direct = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { 'download-url': 'http://example.invalid/rel/' } }), runner.work, defer);
  assert.equal(direct.code, 1, h.describe(direct));
  assert.match(h.commands(direct.stdout, 'error').join('\n'), /^refusing plain http download-url http:\/\/example\.invalid\/rel\//);

  const redirected = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { 'download-url': `${server.base}/evil/` } }), runner.work, defer);
  assert.equal(redirected.code, 1, h.describe(redirected));
  assert.match(h.commands(redirected.stdout, 'error').join('\n'), /refusing plain http redirect from .* to http:\/\/example\.invalid\/SHA256SUMS/);

  const creds = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { 'download-url': `http://u:p@127.0.0.1:1/rel/` } }), runner.work, defer);
  assert.equal(creds.code, 1, h.describe(creds));
  assert.match(h.commands(creds.stdout, 'error').join('\n'), /must not contain user info/);
  assert.deepEqual(h.readLines(runner.files.path), []);
});

test('(d) a pinned version uses a matching lanyard on PATH without downloading', { timeout: TIMEOUT }, async (t) => {
  h.requireLanyard();
  const { defer, runner, server, identity } = await setup(t);
  const bin = path.join(runner.root, 'path-bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(h.LANYARD_BIN, path.join(bin, 'lanyard'));
  const env = h.mainEnv(runner, {
    inputs: { version: h.lanyardVersion(), 'download-url': `${server.base}/rel/` },
    extra: { ...identity('not-the-request-token'), PATH: `${bin}${path.delimiter}${process.env.PATH}` },
  });
  defer(() => h.lanyard(['stop'], env));
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, `start is refused by the issuer:\n${h.describe(main)}`);
  assert.match(h.commands(main.stdout, 'error').join('\n'), /^lanyard start exited/);
  assert.equal(h.readFileCommands(runner.files.state).get('binary'), path.join(bin, 'lanyard'));
  assert.deepEqual(server.hits, [], 'nothing downloaded');
  assert.deepEqual(h.readLines(runner.files.path), [], 'PATH already has it');
});

test('(d) a pinned version downloads when the lanyard on PATH is another version', { timeout: TIMEOUT }, async (t) => {
  const { defer, runner, server, identity } = await setup(t);
  const version = h.lanyardVersion();
  const fake = decoy(runner, '0.0.0-old');
  const env = h.mainEnv(runner, {
    inputs: { version, 'download-url': `${server.base}/rel/` },
    extra: { ...identity('not-the-request-token'), PATH: `${fake.dir}${path.delimiter}${process.env.PATH}` },
  });
  defer(() => h.lanyard(['stop'], env));
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, `start is refused by the issuer:\n${h.describe(main)}`);
  assert.match(main.stdout, /lanyard 0\.0\.0-old, not /);
  assertInstalled(runner, version, server);
  assert.deepEqual(fake.calls(), ['--version'], 'the old lanyard was only asked its version');
});

test('(d) a release whose binary is another version than asked is refused', { timeout: TIMEOUT }, async (t) => {
  const { runner, server, defer } = await setup(t);
  const main = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { version: '99.0.0', 'download-url': `${server.base}/rel/` } }), runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  assert.match(h.commands(main.stdout, 'error').join('\n'), /^asked for lanyard 99\.0\.0, but the archive at .* holds lanyard /);
  assert.deepEqual(h.readLines(runner.files.path), []);
  assert.deepEqual(fs.readdirSync(path.join(runner.temp, 'lanyard-bin')), [], 'nothing left installed');
});
