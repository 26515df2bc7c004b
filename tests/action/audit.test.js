'use strict';
// The audit record on GitHub: the main step names it in the `audit-file`
// output, it survives the post step's `lanyard stop`, and a workflow step
// between them (the README's `lanyard stop` + actions/upload-artifact) finds
// it complete. Real lanyard binary, real test issuer, faked runner files.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const h = require('./helpers');

const TIMEOUT = 120000;

test('main names the audit file in the audit-file output; it is complete after `lanyard stop` and survives the post step [needs lanyard start/stop]', { timeout: TIMEOUT }, async (t) => {
  h.requireSubcommands('start', 'stop');
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  fs.writeFileSync(path.join(runner.work, 'lanyard.toml'), h.CONFIG);
  const issuer = await h.startIssuer(t, defer);
  const env = h.mainEnv(runner, {
    inputs: { binary: h.LANYARD_BIN },
    extra: { ACTIONS_ID_TOKEN_REQUEST_URL: issuer.tokenUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: h.GHA_BEARER },
  });
  defer(() => h.lanyard(['stop'], { ...env, LANYARD_STATE_DIR: path.join(runner.temp, 'lanyard') }));

  const main = await h.runStep(h.MAIN, env, runner.work, defer);
  assert.equal(main.code, 0, `main should succeed:\n${h.describe(main)}`);
  const outputs = h.readFileCommands(runner.files.output);
  const audit = outputs.get('audit-file');
  assert.equal(audit, path.join(runner.temp, 'lanyard-audit.jsonl'), `audit-file output is $RUNNER_TEMP/lanyard-audit.jsonl: ${[...outputs]}`);
  assert.ok(fs.existsSync(audit), `${audit} exists while lanyard runs`);

  // The README's step before upload-artifact: `lanyard stop` with what later steps see.
  const later = h.laterEnv(runner, env);
  const stop = h.lanyard(['stop'], later);
  assert.equal(stop.status, 0, `lanyard stop: ${stop.stdout}${stop.stderr}`);
  assert.ok(stop.stdout.includes(`audit record kept in ${audit}`), `stop names the audit file:\n${stop.stdout}`);
  const first = JSON.parse(fs.readFileSync(audit, 'utf8').split('\n')[0]);
  assert.equal(first.event, 'job', 'the audit file starts with the job header');

  // The post step then finds nothing to stop, warns about nothing, and keeps the file.
  const post = await h.runStep(h.POST, later, runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  assert.deepEqual(h.commands(post.stdout, 'warning'), [], h.describe(post));
  assert.ok(fs.existsSync(audit), `${audit} survives the post step`);
});
