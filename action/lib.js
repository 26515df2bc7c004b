'use strict';
// GitHub's workflow commands and file commands, and running a child process
// with its output passed through. Node built-ins only: the action ships as
// plain files, with nothing to install or bundle.

const crypto = require('node:crypto');
const fs = require('node:fs');
const { spawn } = require('node:child_process');

// ------------------------------------------------------------------ inputs

// The runner gives each input as INPUT_<NAME>: upper case, spaces as `_`,
// `-` kept (INPUT_DOWNLOAD-URL). It always sets declared inputs, with
// action.yml's default when the workflow leaves one out; `fallback` only
// matters when the script is run by hand.
function getInput(name, fallback = '') {
  const value = process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`];
  return value === undefined ? fallback : value.trim();
}

// ---------------------------------------------------------- stdout commands

function escapeData(text) {
  return String(text).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function issue(command, message) {
  process.stdout.write(`::${command}::${escapeData(message)}\n`);
}

const error = (message) => issue('error', message);
const warning = (message) => issue('warning', message);

// Prints a child's stderr so that the runner does not read it as workflow
// commands (lanyard's stderr can quote a token service's words). It goes to
// stdout, after the child's own stdout: the runner reads our two streams
// separately, and only one stream keeps the order, so that commands are
// never paused while an `::add-mask::` or our `::error::` is read.
function printVerbatim(text) {
  if (!text) return;
  const token = crypto.randomBytes(16).toString('hex');
  process.stdout.write(`::stop-commands::${token}\n`);
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  process.stdout.write(`::${token}::\n`);
}

// ------------------------------------------------------------ file commands

function fileFor(variable) {
  const file = process.env[variable];
  if (!file) {
    throw new Error(
      `${variable} is not set: this script runs as a step of a GitHub Actions job (uses: lanyard-ci/lanyard@v1)`,
    );
  }
  return file;
}

// `name=value`, or the heredoc form when the value spans lines.
function keyValue(name, value) {
  const text = String(value);
  if (!/[\r\n]/.test(text)) return `${name}=${text}`;
  const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
  return `${name}<<${delimiter}\n${text}\n${delimiter}`;
}

function appendLine(variable, line) {
  fs.appendFileSync(fileFor(variable), `${line}\n`);
}

const saveState = (name, value) => appendLine('GITHUB_STATE', keyValue(name, value));
const getState = (name) => process.env[`STATE_${name}`] || '';
const addPath = (dir) => appendLine('GITHUB_PATH', dir);
const setOutput = (name, value) => appendLine('GITHUB_OUTPUT', keyValue(name, value));

// Reads `NAME=value` and `NAME<<DELIM ... DELIM` lines, the format of
// GITHUB_ENV and GITHUB_STATE. Later lines win.
function parseFileCommands(text) {
  const out = new Map();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line === '') continue;
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const body = [];
      for (i++; i < lines.length && lines[i].replace(/\r$/, '') !== heredoc[2]; i++) body.push(lines[i]);
      out.set(heredoc[1], body.join('\n'));
      continue;
    }
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

// ------------------------------------------------------------ child process

const STDERR_LIMIT = 256 * 1024;

// Runs `file args`, passing its stdout through as it comes and collecting its
// stderr. Resolves with { code, signal, stderr, error, leftOpen }. `start`
// detaches its daemon from our pipes; if something still holds them
// `graceMs` after the process exited, we stop waiting rather than hang the job.
function run(file, args, { env = process.env, graceMs = 5000 } = {}) {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ code: null, signal: null, stderr: '', error: err, leftOpen: false });
      return;
    }
    let stderr = '';
    let exit = null;
    let timer = null;
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      resolve({ stderr, error: null, leftOpen: false, ...exit, ...result });
    };
    child.stdout.on('data', (chunk) => process.stdout.write(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length);
    });
    child.on('error', (err) => finish({ code: null, signal: null, error: err }));
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      timer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish({ leftOpen: true });
      }, graceMs);
    });
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

function describeExit({ code, signal }) {
  return signal ? `was killed by ${signal}` : `exited with status ${code}`;
}

// The last lines of a child's stderr, for an annotation.
function tail(text, maxLines = 40) {
  const lines = String(text).trimEnd().split('\n');
  return lines.length > maxLines ? ['…', ...lines.slice(-maxLines)].join('\n') : lines.join('\n');
}

module.exports = {
  getInput,
  escapeData,
  error,
  warning,
  printVerbatim,
  keyValue,
  saveState,
  getState,
  addPath,
  setOutput,
  parseFileCommands,
  run,
  describeExit,
  tail,
};
