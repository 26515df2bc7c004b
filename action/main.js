'use strict';
// The action's main step: find or install lanyard, then
//   lanyard start --export github [--config F] [--audience A] --watch-pid <runner>
// which appends the proxy and CA variables to $GITHUB_ENV for later steps and
// prints `::add-mask::<secret>` first. The post step (post.js) stops it.

const fs = require('node:fs');
const path = require('node:path');
const lib = require('./lib');
const { normalizeVersion, ownVersion, resolveBinary } = require('./install');

function fileSize(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

// What `start` appended to GITHUB_ENV, read back for LANYARD_STATE_DIR.
function appendedEnv(file, from) {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(0, size - from));
      fs.readSync(fd, buf, 0, buf.length, from);
      return lib.parseFileCommands(buf.toString('utf8'));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return new Map();
  }
}

function readAuditPath(stateDir) {
  try {
    return fs.readFileSync(path.join(stateDir, 'audit-path'), 'utf8').replace(/\n$/, '');
  } catch {
    return '';
  }
}

const EXIT_MEANING = { 1: 'it never got ready', 2: 'a config or usage error' };

async function main() {
  for (const variable of ['GITHUB_ENV', 'GITHUB_STATE']) {
    if (!process.env[variable]) {
      throw new Error(`${variable} is not set: this action runs as a step of a GitHub Actions job`);
    }
  }
  const config = lib.getInput('config', 'lanyard.toml');
  const audience = lib.getInput('audience');
  const binaryInput = lib.getInput('binary');
  const downloadUrl = lib.getInput('download-url');
  const asked = lib.getInput('version');
  // An empty `version` means the release this action belongs to, so that
  // pinning the action (@v1, @v1.2.3, a release's commit SHA) pins the binary.
  const own = asked || binaryInput ? null : ownVersion();
  const version = own ? own.version : normalizeVersion(asked);
  if (own) console.log(`lanyard: version ${version}, this action's own (ref ${own.ref || 'unknown'})`);
  let binary;
  try {
    binary = await resolveBinary({ binary: binaryInput, version, downloadUrl, runnerTemp: process.env.RUNNER_TEMP });
  } catch (err) {
    if (own && !downloadUrl && err.status === 404) {
      throw new Error(
        `${err.message}\nThere is no lanyard release ${version}: this action is used at ` +
          `${own.ref ? `ref "${own.ref}"` : 'a ref'} that is not a release, and takes its binary version from its ` +
          `agent/Cargo.toml (${version}). Use the action at a release (lanyard-ci/lanyard@v1), or set the ` +
          '`version` input to a released version (or `latest`), or give a `binary`.',
      );
    }
    throw err;
  }
  // Saved before starting: the post step stops whatever got started, even
  // after a failed start.
  lib.saveState('binary', binary);

  // The daemon exits on its own when the watched process dies. Our parent
  // is the runner's worker, which lives until the job (and this action's
  // post step) is over; our own process ends with this step. In a job
  // container (`docker exec`) our parent is outside the PID namespace
  // (ppid 0): watch the container's PID 1, which lives as long as the job.
  const watch = process.ppid > 0 ? process.ppid : 1;
  const args = ['start', '--export', 'github', '--watch-pid', String(watch)];
  if (config) args.push('--config', config);
  if (audience) args.push('--audience', audience);

  const envFile = process.env.GITHUB_ENV;
  const before = fileSize(envFile);
  const result = await lib.run(binary, args);
  lib.printVerbatim(result.stderr);
  if (result.error) throw new Error(`could not run ${binary}: ${result.error.message}`);
  if (result.code !== 0 || result.signal) {
    const meaning = EXIT_MEANING[result.code] ? ` (${EXIT_MEANING[result.code]})` : '';
    const said = result.stderr.trim() ? `:\n${lib.tail(result.stderr)}` : ' and printed nothing on stderr';
    throw new Error(`lanyard start ${lib.describeExit(result)}${meaning}${said}\n(binary: ${binary})`);
  }
  if (result.leftOpen) {
    lib.warning('lanyard start exited but something still held its output open; carrying on');
  }
  const stateDir = appendedEnv(envFile, before).get('LANYARD_STATE_DIR');
  if (stateDir) lib.saveState('state_dir', stateDir);
  // The audit record's path (the daemon writes it to <state>/audit-path), for
  // an actions/upload-artifact step: a JavaScript action cannot upload an
  // artifact itself without bundling the artifact toolkit.
  const audit = stateDir ? readAuditPath(stateDir) : '';
  if (audit) lib.setOutput('audit-file', audit);
  else lib.warning('lanyard: cannot tell where the audit record is; the audit-file output is empty');
  console.log(`lanyard: started (${binary}); later steps reach their APIs through its proxy, and the post step stops it`);
}

main().catch((err) => {
  lib.error(err.message);
  process.exitCode = 1;
});
