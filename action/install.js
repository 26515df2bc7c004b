'use strict';
// Finding or installing the lanyard binary. Release assets follow
// docs/lifecycle-contract.md: lanyard-<target>.tar.gz with `lanyard` at its
// root, and SHA256SUMS beside it in sha256sum format.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { addPath } = require('./lib');

// Test hook (tests/action only, like install.sh's LANYARD_TEST_UNAME_*): a
// stand-in for GitHub's releases URL, still held to checkUrl's rules.
const RELEASES = process.env.LANYARD_ACTION_TEST_RELEASES_URL || 'https://github.com/lanyard-ci/lanyard/releases';
const CARGO_TOML = path.join(__dirname, '..', 'agent', 'Cargo.toml');
const TARGETS = { x64: 'x86_64-unknown-linux-musl', arm64: 'aarch64-unknown-linux-musl' };
const MAX_ARCHIVE_BYTES = 256 * 1024 * 1024;
const MAX_SUMS_BYTES = 1024 * 1024;
const DOWNLOAD_TIMEOUT_MS = 5 * 60 * 1000;
const MAX_REDIRECTS = 10;
const ATTEMPTS = 3;

// ------------------------------------------------------------ pure helpers

function targetFor(arch, platform) {
  if (platform !== 'linux') {
    throw new Error(
      `lanyard releases binaries for Linux only, and this runner is ${platform}/${arch}; ` +
        'install lanyard yourself and give its path in the `binary` input',
    );
  }
  const target = TARGETS[arch];
  if (!target) {
    throw new Error(
      `no lanyard release for the CPU architecture "${arch}" (there are binaries for x64 and arm64); ` +
        'install lanyard yourself and give its path in the `binary` input',
    );
  }
  return target;
}

// "latest", or a version with or without its leading "v" → "latest" | "0.1.0".
function normalizeVersion(input) {
  const text = String(input || '').trim();
  if (text === '' || text === 'latest') return 'latest';
  const m = /^v?([0-9][0-9A-Za-z.+_-]*)$/.exec(text);
  if (!m || m[1].includes('..')) {
    throw new Error(`invalid version input "${text}": expected "latest" or a version such as 0.1.0`);
  }
  return m[1];
}

// The version of the release this action's files belong to: agent/Cargo.toml
// beside action.yml (the release workflow refuses a tag that differs from it).
// GITHUB_ACTION_REF, the ref in `uses: lanyard-ci/lanyard@<ref>`, is checked
// against it when it looks like a version: v1.2.3 must be 1.2.3, v1 a 1.x.
function ownVersion(cargoToml = CARGO_TOML, ref = process.env.GITHUB_ACTION_REF || '') {
  let text;
  try {
    text = fs.readFileSync(cargoToml, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${cargoToml} to learn this action's version (${err.code || err.message}); set the \`version\` input`);
  }
  const m = /^version = "([^"]+)"$/m.exec(text);
  if (!m) throw new Error(`${cargoToml} has no version = "..." line; set the \`version\` input`);
  const version = normalizeVersion(m[1]);
  const full = /^v?([0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?)$/.exec(ref);
  const partial = /^v([0-9]+)(?:\.([0-9]+))?$/.exec(ref);
  if (full && full[1] !== version) {
    throw new Error(`this action is used at ${ref}, but its agent/Cargo.toml says version ${version}; set the \`version\` input`);
  }
  if (partial) {
    const [major, minor] = version.split('.');
    if (partial[1] !== major || (partial[2] !== undefined && partial[2] !== minor)) {
      throw new Error(`this action is used at ${ref}, but its agent/Cargo.toml says version ${version}; set the \`version\` input`);
    }
  }
  return { version, ref, tagged: Boolean(full || partial) };
}

function defaultDownloadUrl(version) {
  return version === 'latest' ? `${RELEASES}/latest/download/` : `${RELEASES}/download/v${version}/`;
}

function isLoopbackHost(hostname) {
  const host = hostname.toLowerCase();
  return host === 'localhost' || host === '[::1]' || /^127(\.[0-9]{1,3}){3}$/.test(host);
}

// https://, or http:// to a loopback host; the checksums come from the same
// place as the archive, so a URL someone on the path can rewrite proves nothing.
function checkUrl(raw, what) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${what} is not a URL: "${raw}"`);
  }
  if (url.username || url.password) throw new Error(`${what} must not contain user info: ${redact(url)}`);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:') {
    if (isLoopbackHost(url.hostname)) return url;
    throw new Error(
      `refusing plain http ${what} ${redact(url)}: anyone on the network path could replace both the ` +
        'archive and SHA256SUMS. Use https:// (plain http is accepted only for 127.0.0.1, localhost and [::1]).',
    );
  }
  throw new Error(`${what} must be an https:// URL, not ${url.protocol}//: ${redact(url)}`);
}

function checkFolderUrl(raw) {
  const url = checkUrl(raw, 'download-url');
  if (url.search || url.hash || raw.includes('?') || raw.includes('#')) {
    throw new Error(`download-url must be a plain folder URL, without query or fragment: ${redact(url)}`);
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

// For messages: no query string (signed redirect URLs carry signatures).
function redact(url) {
  return `${url.protocol}//${url.host}${url.pathname}${url.search ? '?…' : ''}`;
}

// The digest SHA256SUMS gives for `name`; a missing line, or two lines that
// disagree, is refused.
function expectedDigest(sums, name) {
  const found = new Set();
  for (const raw of sums.split('\n')) {
    const m = /^([0-9A-Fa-f]{64}) [ *](.+)$/.exec(raw.replace(/\r$/, ''));
    if (m && m[2].replace(/^\.\//, '') === name) found.add(m[1].toLowerCase());
  }
  if (found.size === 0) throw new Error(`SHA256SUMS has no line for ${name}; refusing to install it`);
  if (found.size > 1) throw new Error(`SHA256SUMS gives ${name} two different digests; refusing to install it`);
  return [...found][0];
}

function verifyDigest(data, sums, name) {
  const expected = expectedDigest(sums, name);
  const actual = crypto.createHash('sha256').update(data).digest('hex');
  if (!crypto.timingSafeEqual(Buffer.from(actual), Buffer.from(expected))) {
    throw new Error(
      `checksum mismatch for ${name}: SHA256SUMS says ${expected}, the download is ${actual}; refusing to install it`,
    );
  }
  return actual;
}

// ------------------------------------------------------------- downloading

class HttpError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function fetchOnce(start, maxBytes) {
  let url = start;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    checkUrl(url.href, hop === 0 ? 'download URL' : `redirect from ${redact(start)} to`);
    const res = await fetch(url, {
      redirect: 'manual',
      headers: { 'user-agent': 'lanyard-action' },
      signal: AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS),
    });
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      const location = res.headers.get('location');
      await res.body?.cancel();
      if (!location) throw new HttpError(`GET ${redact(url)}: HTTP ${res.status} without a Location`, res.status);
      url = new URL(location, url);
      continue;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new HttpError(`GET ${redact(url)}: HTTP ${res.status} ${res.statusText}`.trim(), res.status);
    }
    const chunks = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > maxBytes) throw new Error(`GET ${redact(url)}: more than ${maxBytes} bytes; refusing it`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }
  throw new Error(`GET ${redact(start)}: more than ${MAX_REDIRECTS} redirects`);
}

// Network failures, 429 and 5xx are tried again; anything else is final.
async function download(url, maxBytes) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetchOnce(url, maxBytes);
    } catch (err) {
      const transient = err instanceof HttpError ? err.status === 429 || err.status >= 500 : err.name === 'TypeError';
      if (!transient || attempt >= ATTEMPTS) {
        const cause = err.cause && err.cause.message ? ` (${err.cause.message})` : '';
        const final = new Error(`could not download ${redact(url)}: ${err.message}${cause}`);
        final.status = err.status;
        throw final;
      }
      const delay = 1000 * 2 ** attempt;
      console.log(`lanyard: ${err.message}; trying again in ${delay / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

// ------------------------------------------------------------ the binary

function isExecutableFile(file) {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function findOnPath(name, searchPath = process.env.PATH || '') {
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.resolve(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return null;
}

// "lanyard 0.1.0" → "0.1.0"; null when it does not run or says something else.
function binaryVersion(file) {
  const r = spawnSync(file, ['--version'], { encoding: 'utf8', timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0) return null;
  const m = /^lanyard\s+v?(\S+)/m.exec(r.stdout);
  return m ? m[1] : null;
}

// Unpacks into a staging folder beside `dest`; `check(bin)` runs there, and
// only then is the folder renamed into place.
function extract(archive, archiveName, dest, check) {
  const parent = path.dirname(dest);
  fs.mkdirSync(parent, { recursive: true });
  const staging = fs.mkdtempSync(path.join(parent, '.staging-'));
  try {
    const archivePath = path.join(staging, archiveName);
    fs.writeFileSync(archivePath, archive);
    const out = path.join(staging, 'out');
    fs.mkdirSync(out);
    const r = spawnSync('tar', ['-xzf', archivePath, '-C', out, '--no-same-owner'], { encoding: 'utf8' });
    if (r.error) throw new Error(`could not run tar to unpack ${archiveName}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`tar could not unpack ${archiveName}: ${r.stderr.trim()}`);
    const bin = path.join(out, 'lanyard');
    let stat;
    try {
      stat = fs.lstatSync(bin);
    } catch {
      throw new Error(`${archiveName} has no \`lanyard\` at its root`);
    }
    if (!stat.isFile()) throw new Error(`${archiveName}: \`lanyard\` is not a regular file`);
    fs.chmodSync(bin, 0o755);
    check(bin);
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(out, dest);
    return path.join(dest, 'lanyard');
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

async function install({ version, downloadUrl, runnerTemp }) {
  if (!runnerTemp) throw new Error('RUNNER_TEMP is not set, so there is nowhere to install lanyard');
  const target = targetFor(process.arch, process.platform);
  const folder = checkFolderUrl(downloadUrl || defaultDownloadUrl(version));
  const archiveName = `lanyard-${target}.tar.gz`;
  console.log(`lanyard: downloading ${archiveName} and SHA256SUMS from ${redact(folder)}`);
  const sums = (await download(new URL('SHA256SUMS', folder), MAX_SUMS_BYTES)).toString('utf8');
  expectedDigest(sums, archiveName); // refuse before fetching the archive
  const archive = await download(new URL(archiveName, folder), MAX_ARCHIVE_BYTES);
  const digest = verifyDigest(archive, sums, archiveName);
  console.log(`lanyard: ${archiveName} matches SHA256SUMS (sha256:${digest})`);

  const dir = path.join(runnerTemp, 'lanyard-bin', version);
  let got;
  const bin = extract(archive, archiveName, dir, (staged) => {
    got = binaryVersion(staged);
    if (!got) throw new Error(`the lanyard in ${archiveName} does not run on this runner (\`lanyard --version\` failed)`);
    if (version !== 'latest' && got !== version) {
      throw new Error(`asked for lanyard ${version}, but the archive at ${redact(folder)} holds lanyard ${got}`);
    }
  });
  addPath(dir);
  console.log(`lanyard: installed lanyard ${got} in ${dir}, on PATH for later steps`);
  return bin;
}

// The `binary` input, else a matching `lanyard` on PATH (pinned versions
// only), else the release download.
async function resolveBinary({ binary, version, downloadUrl, runnerTemp }) {
  if (binary) {
    const file = path.resolve(binary);
    if (!isExecutableFile(file)) throw new Error(`binary input: ${file} is not an executable file`);
    return file;
  }
  if (version !== 'latest') {
    const onPath = findOnPath('lanyard');
    if (onPath) {
      const got = binaryVersion(onPath);
      if (got === version) return onPath;
      console.log(`lanyard: ${onPath} is ${got ? `lanyard ${got}` : 'not a working lanyard'}, not ${version}`);
    }
  }
  return install({ version, downloadUrl, runnerTemp });
}

module.exports = {
  targetFor,
  normalizeVersion,
  ownVersion,
  defaultDownloadUrl,
  isLoopbackHost,
  checkUrl,
  checkFolderUrl,
  expectedDigest,
  verifyDigest,
  findOnPath,
  binaryVersion,
  resolveBinary,
};
