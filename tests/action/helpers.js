'use strict';
// A faked GitHub runner for the action's tests: temp files for the file
// commands, INPUT_* variables, the real test issuer as GitHub's ID-token
// endpoint, and helpers to look at what lanyard left behind.

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..');
const MAIN = path.join(REPO, 'action', 'main.js');
const POST = path.join(REPO, 'action', 'post.js');
const LANYARD_BIN = path.resolve(REPO, process.env.LANYARD_BIN || 'target/debug/lanyard');
const PYTHON = path.join(REPO, 'target', 'peers', 'venv', 'bin', 'python');
const ISSUER = path.join(REPO, 'agent', 'tests', 'peers', 'issuer.py');
const GHA_BEARER = 'gha-request-token';
const TARGET = { x64: 'x86_64-unknown-linux-musl', arm64: 'aarch64-unknown-linux-musl' }[process.arch];

// The config every lifecycle test uses: the README's GitHub lanyard.toml (the
// block after "with a `lanyard.toml` committed"), with only its API host moved
// to gateway.test: the GitHub token itself as the credential (passthrough), so
// no token service is needed.
function readmeConfig() {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const m = /with a `lanyard\.toml` committed[^]*?```toml\n([^]*?)```/.exec(readme);
  assert.ok(m, 'README.md shows the lanyard.toml the GitHub snippet needs');
  assert.match(m[1], /^source = "github"$/m);
  return m[1].replace(/https:\/\/api\.example\.com/g, 'https://gateway.test');
}
const CONFIG = readmeConfig();

// Variables docs/lifecycle-contract.md says `start --export github` writes.
const CONTRACT_VARS = [
  'HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy', 'NO_PROXY', 'no_proxy',
  'SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS', 'GIT_SSL_CAINFO',
  'NODE_USE_ENV_PROXY', 'LANYARD_PROXY', 'LANYARD_CA_FILE', 'LANYARD_STATE_DIR', 'LANYARD_URL_GATEWAY',
];
const CA_VARS = ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS', 'GIT_SSL_CAINFO', 'LANYARD_CA_FILE'];

// ----------------------------------------------------------------- cleanup

// One after-hook per test that runs its clean-ups last-registered first.
function cleanups(t) {
  const stack = [];
  t.after(async () => {
    while (stack.length) {
      try {
        await stack.pop()();
      } catch (err) {
        console.error(`cleanup: ${err.message}`);
      }
    }
  });
  return (fn) => stack.push(fn);
}

// ------------------------------------------------------------ preconditions

function requireLanyard() {
  assert.ok(fs.existsSync(LANYARD_BIN), `${LANYARD_BIN} is missing: build lanyard (cargo build) or set LANYARD_BIN`);
}

// Fails (never skips) with a clear message when the binary lacks a command.
function requireSubcommands(...names) {
  requireLanyard();
  for (const name of names) {
    const r = spawnSync(LANYARD_BIN, [name, '--help'], { encoding: 'utf8' });
    assert.equal(
      r.status, 0,
      `${LANYARD_BIN} has no \`${name}\` subcommand yet (docs/lifecycle-contract.md); \`lanyard ${name} --help\` said: ${r.stderr.trim()}`,
    );
  }
}

function lanyardVersion() {
  const r = spawnSync(LANYARD_BIN, ['--version'], { encoding: 'utf8' });
  const m = /^lanyard\s+v?(\S+)/m.exec(r.stdout);
  assert.ok(m, `\`${LANYARD_BIN} --version\` printed ${JSON.stringify(r.stdout)}`);
  return m[1];
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// ------------------------------------------------------------------ issuer

async function startIssuer(t, defer) {
  assert.ok(fs.existsSync(PYTHON), `${PYTHON} is missing: run scripts/install-peers.sh`);
  const child = spawn(PYTHON, [ISSUER, '--gha-bearer', GHA_BEARER], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  defer(async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGTERM');
    await exited;
  });
  const line = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`issuer exited (${code}) before its ready line: ${stderr}`)));
    child.once('error', reject);
  });
  const ready = JSON.parse(line);
  return {
    ...ready,
    tokenUrl: `${ready.issuer}/gha/token?api-version=2.0`,
    stats: () => getJson(`${ready.issuer}/stats`),
  };
}

async function getJson(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return res.json();
}

// ------------------------------------------------------------ fake runner

// Input defaults as action.yml declares them (the runner passes them all).
function actionDefaults() {
  const text = fs.readFileSync(path.join(REPO, 'action.yml'), 'utf8');
  const block = /^inputs:\n((?: .*\n|\n)*)/m.exec(text);
  assert.ok(block, 'action.yml has an inputs: block');
  const defaults = {};
  let current = null;
  for (const line of block[1].split('\n')) {
    const name = /^ {2}([A-Za-z_][\w-]*):\s*$/.exec(line);
    if (name) {
      current = name[1];
      defaults[current] = '';
      continue;
    }
    const def = /^ {4}default:\s*(.*)$/.exec(line);
    if (def && current) defaults[current] = def[1].replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return defaults;
}

const inputVar = (name) => `INPUT_${name.replace(/ /g, '_').toUpperCase()}`;

function fakeRunner(defer) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lanyard-action-'));
  defer(() => fs.rmSync(root, { recursive: true, force: true }));
  const r = {
    root,
    temp: path.join(root, 'runner-temp'),
    work: path.join(root, 'work'),
    home: path.join(root, 'home'),
    files: {
      env: path.join(root, 'files', 'env'),
      state: path.join(root, 'files', 'state'),
      path: path.join(root, 'files', 'path'),
      output: path.join(root, 'files', 'output'),
    },
    steps: 0,
  };
  for (const dir of [r.temp, r.work, r.home, path.join(root, 'files')]) fs.mkdirSync(dir, { recursive: true });
  for (const file of Object.values(r.files)) fs.writeFileSync(file, '');
  return r;
}

// A fresh step summary file, as the runner gives every step its own.
function newSummary(runner) {
  const file = path.join(runner.root, 'files', `summary-${++runner.steps}`);
  fs.writeFileSync(file, '');
  return file;
}

// The environment of the action's main step.
function mainEnv(runner, { inputs = {}, extra = {} } = {}) {
  const env = {
    PATH: process.env.PATH,
    HOME: runner.home,
    LANG: 'C.UTF-8',
    CI: 'true',
    GITHUB_ACTIONS: 'true',
    RUNNER_OS: 'Linux',
    RUNNER_TEMP: runner.temp,
    GITHUB_WORKSPACE: runner.work,
    GITHUB_ENV: runner.files.env,
    GITHUB_STATE: runner.files.state,
    GITHUB_PATH: runner.files.path,
    GITHUB_OUTPUT: runner.files.output,
    GITHUB_STEP_SUMMARY: newSummary(runner),
  };
  for (const [name, value] of Object.entries({ ...actionDefaults(), ...inputs })) env[inputVar(name)] = value;
  return Object.assign(env, extra);
}

// The environment of a later step (the post step): the runner applies what
// earlier steps wrote to GITHUB_ENV and GITHUB_PATH, and gives the post step
// the main step's GITHUB_STATE as STATE_<name>.
function laterEnv(runner, base, { state = true } = {}) {
  const env = { ...base, ...Object.fromEntries(readFileCommands(runner.files.env)) };
  const added = readLines(runner.files.path);
  if (added.length) env.PATH = [...added.reverse(), env.PATH].join(path.delimiter);
  if (state) for (const [name, value] of readFileCommands(runner.files.state)) env[`STATE_${name}`] = value;
  env.GITHUB_STEP_SUMMARY = newSummary(runner);
  return env;
}

function readLines(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

// GITHUB_ENV / GITHUB_STATE: `NAME=value` or `NAME<<DELIM` … `DELIM`.
function readFileCommands(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out = new Map();
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] === '') continue;
    const h = /^([^=<]+)<<(.+)$/.exec(lines[i]);
    if (h) {
      const end = lines.indexOf(h[2], i + 1);
      assert.ok(end > i, `unterminated heredoc for ${h[1]} in ${file}`);
      out.set(h[1], lines.slice(i + 1, end).join('\n'));
      i = end;
      continue;
    }
    const eq = lines[i].indexOf('=');
    assert.ok(eq > 0, `malformed line in ${file}: ${JSON.stringify(lines[i])}`);
    out.set(lines[i].slice(0, eq), lines[i].slice(eq + 1));
  }
  return out;
}

// Runs main.js or post.js the way the runner does: `node <script>`.
function runStep(script, env, cwd, defer) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    defer(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function describe(step) {
  return `exit ${step.code}${step.signal ? ` (${step.signal})` : ''}\n--- stdout\n${step.stdout}--- stderr\n${step.stderr}`;
}

// Messages of `::name::` (or `::name k=v::`) commands, unescaped, as the
// runner reads them: nothing between `::stop-commands::T` and `::T::`.
function commands(stdout, name) {
  const out = [];
  let stopped = null;
  for (const line of stdout.split('\n')) {
    if (stopped !== null) {
      if (line === `::${stopped}::`) stopped = null;
      continue;
    }
    const stop = /^::stop-commands::(.+)$/.exec(line);
    if (stop) {
      stopped = stop[1];
      continue;
    }
    const m = new RegExp(`^::${name}(?: [^:]*)?::(.*)$`).exec(line);
    if (m) out.push(m[1].replace(/%0D/g, '\r').replace(/%0A/g, '\n').replace(/%25/g, '%'));
  }
  return out;
}

// ----------------------------------------------------------- lanyard state

function lanyard(args, env) {
  return spawnSync(LANYARD_BIN, args, { env, encoding: 'utf8', timeout: 60000 });
}

// The daemon's PID: `lanyard status --json` (any numeric "pid" field), else
// a pid file in the state directory.
function daemonPid(env, stateDir) {
  const r = lanyard(['status', '--json'], env);
  assert.equal(r.status, 0, `lanyard status --json should exit 0 while running: ${r.stderr}`);
  let found = null;
  const walk = (v) => {
    if (found !== null || v === null || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (/^(pid|daemon_pid)$/i.test(k) && Number.isInteger(x) && x > 0) {
        found = x;
        return;
      }
      walk(x);
    }
  };
  try {
    walk(JSON.parse(r.stdout));
  } catch (err) {
    assert.fail(`lanyard status --json printed no JSON (${err.message}): ${r.stdout}`);
  }
  if (found === null) {
    for (const name of ['lanyard.pid', 'pid', 'daemon.pid']) {
      try {
        const n = Number(fs.readFileSync(path.join(stateDir, name), 'utf8').trim());
        if (Number.isInteger(n) && n > 0) return n;
      } catch {
        // try the next name
      }
    }
  }
  assert.ok(found !== null, `no PID in lanyard status --json (${r.stdout.trim()}) nor a pid file in ${stateDir}`);
  return found;
}

// Alive and not a zombie (the detached daemon's parent may not reap it).
function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function connects(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

// ---------------------------------------------------------- release folder

// A release folder as the contract describes it, built from the real binary.
function makeRelease(dir, { readme = 'lanyard\n' } = {}) {
  assert.ok(TARGET, `no release target for process.arch ${process.arch}`);
  requireLanyard();
  const staging = fs.mkdtempSync(path.join(dir, '.staging-'));
  fs.copyFileSync(LANYARD_BIN, path.join(staging, 'lanyard'));
  fs.chmodSync(path.join(staging, 'lanyard'), 0o755);
  fs.writeFileSync(path.join(staging, 'README.md'), readme);
  fs.writeFileSync(path.join(staging, 'LICENSE'), 'test licence\n');
  const archive = `lanyard-${TARGET}.tar.gz`;
  const tar = spawnSync('tar', ['czf', path.join(dir, archive), '-C', staging, 'lanyard', 'README.md', 'LICENSE'], { encoding: 'utf8' });
  assert.equal(tar.status, 0, `tar czf: ${tar.stderr}`);
  fs.rmSync(staging, { recursive: true, force: true });
  const other = TARGET.startsWith('x86_64') ? 'aarch64-unknown-linux-musl' : 'x86_64-unknown-linux-musl';
  const sums = spawnSync('sha256sum', [archive], { cwd: dir, encoding: 'utf8' });
  assert.equal(sums.status, 0, `sha256sum: ${sums.stderr}`);
  fs.writeFileSync(path.join(dir, 'SHA256SUMS'), `${'0'.repeat(64)}  lanyard-${other}.tar.gz\n${sums.stdout}`);
  return { dir, archive };
}

// Serves folders over plain HTTP on 127.0.0.1, port 0:
//   /rel/<name>        the file <name> of `folder`
//   /redirect/<name>   302 to /rel/<name>
//   /evil/<name>       302 to http://example.invalid/<name> (must be refused)
async function releaseServer(defer, folder) {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url);
    const url = new URL(req.url, 'http://127.0.0.1');
    const [, kind, name] = /^\/([a-z]+)\/([^/]*)$/.exec(url.pathname) || [];
    if (kind === 'redirect') {
      res.writeHead(302, { location: `/rel/${name}` }).end();
    } else if (kind === 'evil') {
      res.writeHead(302, { location: `http://example.invalid/${name}` }).end();
    } else if (kind === 'rel' && /^[\w.-]+$/.test(name || '') && fs.existsSync(path.join(folder.dir, name))) {
      const body = fs.readFileSync(path.join(folder.dir, name));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
    } else {
      res.writeHead(404).end('not found\n');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  return { base: `http://127.0.0.1:${server.address().port}`, hits, folder };
}

module.exports = {
  REPO, MAIN, POST, LANYARD_BIN, GHA_BEARER, TARGET, CONFIG, CONTRACT_VARS, CA_VARS,
  cleanups, requireLanyard, requireSubcommands, lanyardVersion, sha256,
  startIssuer, actionDefaults, inputVar, fakeRunner, mainEnv, laterEnv, readLines, readFileCommands,
  runStep, describe, commands, lanyard, daemonPid, isAlive, connects, makeRelease, releaseServer,
};
