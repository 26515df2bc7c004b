'use strict';
// The action's main and post steps against the real lanyard binary and the
// real test issuer, in a faked runner environment.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const h = require('./helpers');

const TIMEOUT = 120000;

async function setup(t) {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.writeFileSync(path.join(runner.work, 'lanyard.toml'), h.CONFIG);
  const issuer = await h.startIssuer(t, defer);
  const identity = (token = h.GHA_BEARER) => ({
    ACTIONS_ID_TOKEN_REQUEST_URL: issuer.tokenUrl,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: token,
  });
  return { defer, runner, issuer, identity };
}

test('(a) main starts lanyard with the binary input, exports the contract variables; post stops it [needs lanyard start/stop/status]', { timeout: TIMEOUT }, async (t) => {
  h.requireSubcommands('start', 'stop', 'status');
  const { defer, runner, issuer, identity } = await setup(t);
  const env = h.mainEnv(runner, { inputs: { binary: h.LANYARD_BIN }, extra: identity() });

  // If the test fails before post ran: stop (idempotent), then the daemon by PID.
  defer(() => h.lanyard(['stop'], { ...env, LANYARD_STATE_DIR: path.join(runner.temp, 'lanyard') }));
  let daemon = null;
  defer(() => {
    if (daemon && h.isAlive(daemon)) process.kill(daemon, 'SIGTERM');
  });

  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 0, `main should succeed:\n${h.describe(main)}`);
  const lines = main.stdout.split('\n');
  assert.match(lines[0], /^::add-mask::./, `the first line on stdout must be ::add-mask::, got:\n${main.stdout}`);
  assert.deepEqual(h.commands(main.stdout, 'error'), [], 'no ::error:: from a successful main');

  // GITHUB_ENV carries every variable of the contract.
  const exported = h.readFileCommands(runner.files.env);
  for (const name of h.CONTRACT_VARS) assert.ok(exported.has(name), `GITHUB_ENV lacks ${name}: ${[...exported.keys()]}`);
  const proxy = exported.get('HTTPS_PROXY');
  const m = /^http:\/\/lanyard:([^@/]+)@127\.0\.0\.1:(\d+)\/?$/.exec(proxy);
  assert.ok(m, `HTTPS_PROXY is http://lanyard:<secret>@127.0.0.1:PORT, got ${proxy}`);
  for (const name of ['HTTP_PROXY', 'https_proxy', 'http_proxy']) assert.equal(exported.get(name), proxy, name);
  assert.equal(new URL(exported.get('LANYARD_PROXY')).port, m[2], 'LANYARD_PROXY is the same proxy');
  assert.equal(exported.get('NODE_USE_ENV_PROXY'), '1');
  assert.equal(exported.get('NO_PROXY'), exported.get('no_proxy'));
  const caFile = exported.get('LANYARD_CA_FILE');
  for (const name of h.CA_VARS) assert.equal(exported.get(name), caFile, `${name} is the CA bundle`);
  assert.ok(fs.existsSync(caFile), `the CA bundle ${caFile} exists while lanyard runs`);
  const stateDir = exported.get('LANYARD_STATE_DIR');
  assert.equal(stateDir, path.join(runner.temp, 'lanyard'), 'the state directory is $RUNNER_TEMP/lanyard on GitHub');
  assert.equal(fs.statSync(stateDir).mode & 0o777, 0o700, 'the state directory is mode 0700');
  assert.ok(exported.get('LANYARD_URL_GATEWAY'), 'one LANYARD_URL_<NAME> per named route');

  // The proxy secret is masked before it could appear anywhere, and only
  // the mask commands carry it.
  const secret = m[1];
  const masked = h.commands(main.stdout, 'add-mask');
  assert.ok(masked.includes(secret) || masked.includes(decodeURIComponent(secret)), `the proxy secret is masked: ${masked.length} mask(s)`);
  for (const line of lines) {
    if (!line.startsWith('::add-mask::')) assert.ok(!line.includes(secret), `stdout shows the secret outside ::add-mask:: : ${line}`);
  }
  assert.ok(!main.stderr.includes(secret), 'stderr shows the proxy secret');

  // State for post, the identity really used, the proxy listening.
  const state = h.readFileCommands(runner.files.state);
  assert.equal(state.get('binary'), h.LANYARD_BIN);
  assert.ok((await issuer.stats()).gha_requests >= 1, 'lanyard asked the issuer for a GitHub token');
  assert.ok(await h.connects(Number(m[2])), `lanyard's proxy listens on 127.0.0.1:${m[2]}`);
  assert.deepEqual(h.readLines(runner.files.path), [], 'the binary input adds nothing to GITHUB_PATH');

  // What later steps see, and the daemon's PID.
  const later = h.laterEnv(runner, env);
  daemon = h.daemonPid(later, stateDir);
  assert.ok(h.isAlive(daemon), `lanyard's daemon (PID ${daemon}) runs after the main step exited`);

  const post = await h.runStep(h.POST, later, runner.work, defer);
  assert.equal(post.code, 0, `post should succeed:\n${h.describe(post)}`);
  assert.deepEqual(h.commands(post.stdout, 'warning'), [], `post should not warn:\n${h.describe(post)}`);
  const summary = fs.readFileSync(later.GITHUB_STEP_SUMMARY, 'utf8');
  assert.ok(summary.trim().length > 0, 'lanyard stop wrote the audit summary to GITHUB_STEP_SUMMARY');
  for (const text of [summary, post.stdout, post.stderr]) assert.ok(!text.includes(secret), 'post output shows the proxy secret');

  assert.ok(!h.isAlive(daemon), `lanyard's daemon (PID ${daemon}) is gone once stop returned`);
  assert.ok(!fs.existsSync(caFile), `the CA bundle ${caFile} is removed`);
  assert.ok(!fs.existsSync(stateDir), `the state directory ${stateDir} is removed`);
  assert.equal(h.lanyard(['status'], later).status, 1, 'lanyard status says not running (exit 1)');
});

test('(b) main fails the step clearly when the issuer refuses the request token [needs lanyard start/stop/status]', { timeout: TIMEOUT }, async (t) => {
  h.requireSubcommands('start', 'stop', 'status');
  const { defer, runner, identity } = await setup(t);
  const env = h.mainEnv(runner, { inputs: { binary: h.LANYARD_BIN }, extra: identity('not-the-request-token') });
  defer(() => h.lanyard(['stop'], env));

  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, `main should fail:\n${h.describe(main)}`);
  const errors = h.commands(main.stdout, 'error');
  assert.equal(errors.length, 1, `one ::error:: annotation:\n${h.describe(main)}`);
  assert.match(errors[0], /lanyard start exited with status 1/, errors[0]);
  assert.match(errors[0], /401/, `the annotation quotes lanyard's stderr (the issuer's 401): ${errors[0]}`);
  assert.ok(!errors[0].includes('not-the-request-token'), 'the request token is not printed');
  assert.ok(!h.readFileCommands(runner.files.env).has('HTTPS_PROXY'), 'nothing is exported when start never got ready');
  assert.equal(h.readFileCommands(runner.files.state).get('binary'), h.LANYARD_BIN, 'post still gets the binary');

  // The runner still runs post (post-if: always()); nothing is left running.
  const later = h.laterEnv(runner, env);
  const post = await h.runStep(h.POST, later, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.deepEqual(h.commands(post.stdout, 'warning'), [], `stop exits 0 when nothing runs:\n${h.describe(post)}`);
  assert.equal(h.lanyard(['status'], later).status, 1, 'no lanyard left running');
});

test('(c) post exits 0 and says so when main never ran', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const env = h.laterEnv(runner, h.mainEnv(runner));
  const post = await h.runStep(h.POST, env, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.match(post.stdout, /nothing to stop/);
  assert.deepEqual(h.commands(post.stdout, 'warning'), []);
  assert.deepEqual(h.commands(post.stdout, 'error'), []);
});

test('(c) post runs lanyard stop, which exits 0 when nothing was started [needs lanyard stop]', { timeout: TIMEOUT }, async (t) => {
  h.requireSubcommands('stop');
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.appendFileSync(runner.files.state, `binary=${h.LANYARD_BIN}\n`);
  const env = h.laterEnv(runner, h.mainEnv(runner));
  const post = await h.runStep(h.POST, env, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.deepEqual(h.commands(post.stdout, 'warning'), [], `stop exits 0 when nothing runs:\n${h.describe(post)}`);
});

test('post warns, and still exits 0, when lanyard stop fails', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const fake = path.join(runner.root, 'fake-lanyard');
  fs.writeFileSync(fake, '#!/bin/sh\necho "stopping: $*"\necho "::error::injected" >&2\necho "revocation refused by the token service" >&2\nexit 4\n', { mode: 0o755 });
  fs.appendFileSync(runner.files.state, `binary=${fake}\n`);
  const post = await h.runStep(h.POST, h.laterEnv(runner, h.mainEnv(runner)), runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.match(post.stdout, /^stopping: stop$/m, 'stop output is passed through');
  const warnings = h.commands(post.stdout, 'warning');
  assert.equal(warnings.length, 1, h.describe(post));
  assert.match(warnings[0], /lanyard stop exited with status 4/);
  assert.match(warnings[0], /revocation refused by the token service/);
  // lanyard's stderr is printed on stdout, after its stdout and before the
  // warning, between ::stop-commands:: markers: a workflow command in it is
  // shown, not run.
  const stop = /^::stop-commands::([0-9a-f]{32})$/m.exec(post.stdout);
  assert.ok(stop, `stop's stderr is wrapped in stop-commands: ${post.stdout}`);
  const resume = post.stdout.indexOf(`\n::${stop[1]}::\n`);
  assert.ok(resume > stop.index, 'commands are resumed');
  assert.match(post.stdout.slice(stop.index, resume), /^::error::injected$/m);
  assert.ok(post.stdout.indexOf('stopping: stop') < stop.index, 'stdout first');
  assert.ok(post.stdout.indexOf('::warning::') > resume, 'the warning comes after commands are resumed');
  assert.deepEqual(h.commands(post.stdout.slice(0, stop.index) + post.stdout.slice(resume), 'error'), [], 'no ::error:: outside the markers');
});

test('post warns, and exits 0, when the saved binary is gone', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.appendFileSync(runner.files.state, `binary=${path.join(runner.root, 'gone', 'lanyard')}\n`);
  const post = await h.runStep(h.POST, h.laterEnv(runner, h.mainEnv(runner)), runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.match(h.commands(post.stdout, 'warning').join('\n'), /no longer there/);
});

test('main fails clearly when the binary input is not an executable', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const missing = path.join(runner.root, 'no-such-lanyard');
  const main = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { binary: missing } }), runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  assert.deepEqual(h.commands(main.stdout, 'error'), [`binary input: ${missing} is not an executable file`]);
  assert.equal(fs.readFileSync(runner.files.state, 'utf8'), '', 'no state saved');
});

test('main fails clearly outside GitHub Actions (no GITHUB_ENV)', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const env = h.mainEnv(runner, { inputs: { binary: h.LANYARD_BIN } });
  delete env.GITHUB_ENV;
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  assert.match(h.commands(main.stdout, 'error').join('\n'), /GITHUB_ENV is not set/);
});

test('main passes --config, --audience and --watch-pid to lanyard start and quotes its stderr on failure', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const fake = path.join(runner.root, 'fake-lanyard');
  fs.writeFileSync(fake, '#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\necho "lanyard: config.toml:1:1: bad key" >&2\nexit 2\n', { mode: 0o755 });
  const env = h.mainEnv(runner, { inputs: { binary: fake, config: 'ci/lanyard.toml', audience: 'https://aud.test' } });
  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 1, h.describe(main));
  const args = fs.readFileSync(`${fake}.args`, 'utf8').trim().split('\n');
  assert.deepEqual(args, ['start', '--export', 'github', '--watch-pid', String(process.pid), '--config', 'ci/lanyard.toml', '--audience', 'https://aud.test']);
  const errors = h.commands(main.stdout, 'error');
  assert.equal(errors.length, 1, h.describe(main));
  assert.match(errors[0], /^lanyard start exited with status 2 \(a config or usage error\):\nlanyard: config.toml:1:1: bad key\n/);
  assert.equal(h.readFileCommands(runner.files.state).get('binary'), fake);
});

test('main leaves out --config when the config input is empty, and --audience when audience is', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const fake = path.join(runner.root, 'fake-lanyard');
  fs.writeFileSync(fake, '#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\necho "::add-mask::s3cret"\necho "LANYARD_STATE_DIR=/tmp/somewhere" >> "$GITHUB_ENV"\n', { mode: 0o755 });
  const main = await h.runStep(h.MAIN, h.mainEnv(runner, { inputs: { binary: fake, config: '' } }), runner.work, defer);
  assert.equal(main.code, 0, h.describe(main));
  assert.equal(main.stdout.split('\n')[0], '::add-mask::s3cret', 'lanyard start\'s stdout comes first, unchanged');
  assert.deepEqual(fs.readFileSync(`${fake}.args`, 'utf8').trim().split('\n'), ['start', '--export', 'github', '--watch-pid', String(process.pid)]);
  const state = h.readFileCommands(runner.files.state);
  assert.equal(state.get('state_dir'), '/tmp/somewhere', 'the state directory start exported is kept for post');
});

test('post gives lanyard stop the state directory main saved, and not lanyard\'s own proxy', { timeout: TIMEOUT }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const fake = path.join(runner.root, 'fake-lanyard');
  fs.writeFileSync(fake, '#!/bin/sh\nenv > "$0.env"\n', { mode: 0o755 });
  fs.appendFileSync(runner.files.state, `binary=${fake}\nstate_dir=/tmp/saved-state\n`);
  const proxy = 'http://lanyard:x@127.0.0.1:9';
  fs.appendFileSync(runner.files.env, `HTTPS_PROXY=${proxy}\nhttp_proxy=${proxy}\nLANYARD_PROXY=${proxy}\nLANYARD_STATE_DIR=/tmp/other\n`);
  const env = h.laterEnv(runner, { ...h.mainEnv(runner), HTTP_PROXY: 'http://corp-proxy.test:3128' });
  const post = await h.runStep(h.POST, env, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  const seen = h.readFileCommands(`${fake}.env`);
  assert.equal(seen.get('LANYARD_STATE_DIR'), '/tmp/saved-state');
  assert.ok(!seen.has('HTTPS_PROXY') && !seen.has('http_proxy'), 'lanyard\'s own proxy is not passed to stop');
  assert.equal(seen.get('HTTP_PROXY'), 'http://corp-proxy.test:3128', 'other proxies are kept');
  assert.equal(seen.get('GITHUB_STEP_SUMMARY'), env.GITHUB_STEP_SUMMARY, 'stop gets the post step\'s summary file');
});
