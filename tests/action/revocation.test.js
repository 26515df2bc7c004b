'use strict';
// The post step when `lanyard stop` exits 3 (a revocation failed: the
// credential stays valid until it expires): one ::warning:: that says so,
// and the step still exits 0. A stand-in binary gives the exit status; the
// real `lanyard stop` exiting 3 is agent/tests/revocation.rs.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const h = require('./helpers');

test('post turns `lanyard stop` exit 3 into a warning that a revocation failed', { timeout: 60000 }, async (t) => {
  const defer = h.cleanups(t);
  const runner = h.fakeRunner(defer);
  const fake = path.join(runner.root, 'fake-lanyard');
  fs.writeFileSync(fake, [
    '#!/bin/sh',
    'echo "lanyard: credential api (sha256:0123): revocation FAILED: https://sts.test/revoke refused (500): boom"',
    'echo "lanyard stop: revocation failed for api: still valid until it expires (see above); exit status 3" >&2',
    'exit 3',
    '',
  ].join('\n'), { mode: 0o755 });
  fs.appendFileSync(runner.files.state, `binary=${fake}\n`);
  const post = await h.runStep(h.POST, h.laterEnv(runner, h.mainEnv(runner)), runner.work, defer);
  assert.equal(post.code, 0, h.describe(post));
  const warnings = h.commands(post.stdout, 'warning');
  assert.equal(warnings.length, 1, h.describe(post));
  assert.match(warnings[0], /^lanyard stop could not revoke every credential \(exit status 3\): they stay valid until they expire/,
    `the warning says what exit 3 means: ${warnings[0]}`);
  assert.match(warnings[0], /revocation failed for api/, 'the warning quotes which credential');
});
