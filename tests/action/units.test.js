'use strict';
// The action's pure helpers, and action.yml's shape.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const install = require('../../action/install');
const lib = require('../../action/lib');
const h = require('./helpers');

test('action.yml: a node24 action with main, post (always) and the five inputs', () => {
  const text = fs.readFileSync(path.join(h.REPO, 'action.yml'), 'utf8');
  assert.match(text, /^runs:\n {2}using: node24\n {2}main: action\/main\.js\n {2}post: action\/post\.js\n {2}post-if: always\(\)\n/m);
  assert.deepEqual(h.actionDefaults(), { config: 'lanyard.toml', version: '', audience: '', 'download-url': '', binary: '' });
  for (const file of ['main.js', 'post.js']) assert.ok(fs.existsSync(path.join(h.REPO, 'action', file)));
});

test('the action needs nothing but Node built-ins', () => {
  for (const file of fs.readdirSync(path.join(h.REPO, 'action'))) {
    const text = fs.readFileSync(path.join(h.REPO, 'action', file), 'utf8');
    for (const [, mod] of text.matchAll(/require\('([^']+)'\)/g)) {
      assert.ok(mod.startsWith('node:') || mod.startsWith('./'), `${file} requires ${mod}`);
    }
  }
  assert.ok(!fs.existsSync(path.join(h.REPO, 'action', 'package.json')));
});

test('targets: Linux x64 and arm64 only, with a clear refusal otherwise', () => {
  assert.equal(install.targetFor('x64', 'linux'), 'x86_64-unknown-linux-musl');
  assert.equal(install.targetFor('arm64', 'linux'), 'aarch64-unknown-linux-musl');
  assert.throws(() => install.targetFor('ia32', 'linux'), /no lanyard release for the CPU architecture "ia32".*`binary` input/);
  assert.throws(() => install.targetFor('arm64', 'darwin'), /Linux only, and this runner is darwin\/arm64/);
  assert.throws(() => install.targetFor('x64', 'win32'), /Linux only/);
});

test('versions: latest, with or without v, and nothing path-like', () => {
  assert.equal(install.normalizeVersion(''), 'latest');
  assert.equal(install.normalizeVersion('latest'), 'latest');
  assert.equal(install.normalizeVersion('0.1.0'), '0.1.0');
  assert.equal(install.normalizeVersion(' v1.2.3-rc.1 '), '1.2.3-rc.1');
  for (const bad of ['v', 'main', '../1', '1/2', '1..2', '1.0 ', 'v1.0;rm']) {
    if (bad.trim() === '1.0') continue;
    assert.throws(() => install.normalizeVersion(bad), /invalid version input/, bad);
  }
  assert.equal(install.defaultDownloadUrl('latest'), 'https://github.com/lanyard-ci/lanyard/releases/latest/download/');
  assert.equal(install.defaultDownloadUrl('0.1.0'), 'https://github.com/lanyard-ci/lanyard/releases/download/v0.1.0/');
});

test('download URLs: https, or http to loopback only; a plain folder', () => {
  for (const ok of ['https://example.com/r/', 'http://127.0.0.1:8080/r/', 'http://127.1.2.3/r/', 'http://localhost/r/', 'http://[::1]:9/r/']) {
    assert.doesNotThrow(() => install.checkFolderUrl(ok), ok);
  }
  assert.equal(install.checkFolderUrl('https://example.com/a/b').href, 'https://example.com/a/b/');
  assert.throws(() => install.checkFolderUrl('http://example.com/r/'), /refusing plain http/);
  assert.throws(() => install.checkFolderUrl('http://127.0.0.1.example.com/r/'), /refusing plain http/);
  assert.throws(() => install.checkFolderUrl('http://10.0.0.1/r/'), /refusing plain http/);
  assert.throws(() => install.checkFolderUrl('ftp://example.com/r/'), /must be an https:\/\/ URL/);
  assert.throws(() => install.checkFolderUrl('file:///tmp/r/'), /must be an https:\/\/ URL/);
  assert.throws(() => install.checkFolderUrl('https://u:p@example.com/r/'), /user info/);
  assert.throws(() => install.checkFolderUrl('https://example.com/r/?sig=1'), /without query or fragment/);
  assert.throws(() => install.checkFolderUrl('https://example.com/r/#x'), /without query or fragment/);
  assert.throws(() => install.checkFolderUrl('not a url'), /is not a URL/);
});

test('SHA256SUMS: the line for the name, sha256sum\'s binary marker, CRLF; missing or conflicting lines refused', () => {
  const a = 'a'.repeat(64);
  const b = 'B'.repeat(64);
  const name = 'lanyard-x86_64-unknown-linux-musl.tar.gz';
  assert.equal(install.expectedDigest(`${b}  other.tar.gz\n${a}  ${name}\n`, name), a);
  assert.equal(install.expectedDigest(`${b} *${name}\r\n`, name), b.toLowerCase());
  assert.equal(install.expectedDigest(`${a}  ./${name}\n${a}  ${name}\n`, name), a);
  assert.throws(() => install.expectedDigest(`${a}  other.tar.gz\n`, name), /no line for/);
  assert.throws(() => install.expectedDigest(`${a.slice(1)}  ${name}\n`, name), /no line for/);
  assert.throws(() => install.expectedDigest(`${a}  ${name}.sig\n`, name), /no line for/);
  assert.throws(() => install.expectedDigest(`${a}  ${name}\n${b}  ${name}\n`, name), /two different digests/);
  const data = Buffer.from('archive bytes');
  const digest = h.sha256(data);
  assert.equal(install.verifyDigest(data, `${digest}  ${name}\n`, name), digest);
  assert.throws(() => install.verifyDigest(Buffer.from('other bytes'), `${digest}  ${name}\n`, name), /checksum mismatch/);
});

test('workflow commands: escaping, key=value and heredoc, and reading them back', () => {
  assert.equal(lib.escapeData('50%\r\nnext'), '50%25%0D%0Anext');
  assert.equal(lib.keyValue('binary', '/x/lanyard'), 'binary=/x/lanyard');
  const multi = lib.keyValue('v', 'a\nb');
  assert.match(multi, /^v<<ghadelimiter_[0-9a-f-]{36}\na\nb\nghadelimiter_[0-9a-f-]{36}$/);
  const parsed = lib.parseFileCommands(`A=1\n${multi}\nB=x=y\r\nA=2\n`);
  assert.deepEqual(Object.fromEntries(parsed), { A: '2', v: 'a\nb', B: 'x=y' });
  assert.equal(lib.tail('1\n2\n3\n', 2), '…\n2\n3');
});

test('own version: agent/Cargo.toml beside action.yml, checked against a version-like GITHUB_ACTION_REF', (t) => {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'lanyard-own-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const toml = path.join(dir, 'Cargo.toml');
  fs.writeFileSync(toml, '[package]\nname = "lanyard"\nversion = "1.4.2"\n\n[dependencies]\nx = { version = "9" }\n');
  assert.deepEqual(install.ownVersion(toml, 'v1.4.2'), { version: '1.4.2', ref: 'v1.4.2', tagged: true });
  assert.deepEqual(install.ownVersion(toml, 'v1'), { version: '1.4.2', ref: 'v1', tagged: true });
  assert.deepEqual(install.ownVersion(toml, 'v1.4'), { version: '1.4.2', ref: 'v1.4', tagged: true });
  assert.deepEqual(install.ownVersion(toml, 'main'), { version: '1.4.2', ref: 'main', tagged: false });
  assert.deepEqual(install.ownVersion(toml, '0123456789abcdef0123456789abcdef01234567').tagged, false);
  assert.throws(() => install.ownVersion(toml, 'v1.4.3'), /used at v1\.4\.3, but its agent\/Cargo\.toml says version 1\.4\.2; set the `version` input/);
  assert.throws(() => install.ownVersion(toml, 'v2'), /used at v2, but .* 1\.4\.2/);
  assert.throws(() => install.ownVersion(toml, 'v1.3'), /used at v1\.3, but .* 1\.4\.2/);
  assert.throws(() => install.ownVersion(path.join(dir, 'missing.toml'), ''), /cannot read .*missing\.toml.*set the `version` input/);
  fs.writeFileSync(toml, '[package]\nname = "lanyard"\n');
  assert.throws(() => install.ownVersion(toml, ''), /no version = "\.\.\." line; set the `version` input/);
  // The repository's own: the version the release workflow checks the tag against.
  const real = install.ownVersion(path.join(h.REPO, 'agent', 'Cargo.toml'), '');
  assert.equal(real.version, h.lanyardVersion(), 'agent/Cargo.toml and the binary under test agree');
});
