'use strict';
// The action's post step (post-if: always()): `lanyard stop` revokes the
// credentials, prints the audit summary, appends it to $GITHUB_STEP_SUMMARY
// and removes the CA bundle and the state directory. This step never fails
// the job: trouble is reported as a warning.

const fs = require('node:fs');
const lib = require('./lib');

// `lanyard stop`'s exit status when a revocation failed (README "Exit codes").
const REVOKE_FAILED = 3;

async function post() {
  const binary = lib.getState('binary');
  if (!binary) {
    console.log('lanyard: nothing to stop (the lanyard step did not get as far as starting it)');
    return;
  }
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    lib.warning(`lanyard: cannot run \`lanyard stop\`: ${binary} is no longer there or not executable`);
    return;
  }
  const env = { ...process.env };
  const stateDir = lib.getState('state_dir');
  if (stateDir) env.LANYARD_STATE_DIR = stateDir;
  // Later steps' proxy variables point at the lanyard being stopped; stop
  // itself has no reason to go through it.
  if (env.LANYARD_PROXY) {
    for (const name of ['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy', 'ALL_PROXY', 'all_proxy']) {
      if (env[name] === env.LANYARD_PROXY) delete env[name];
    }
  }

  const result = await lib.run(binary, ['stop'], { env });
  lib.printVerbatim(result.stderr);
  if (result.error) {
    lib.warning(`lanyard: could not run ${binary} stop: ${result.error.message}`);
  } else if (result.code === REVOKE_FAILED) {
    const said = result.stderr.trim() ? `:\n${lib.tail(result.stderr)}` : '';
    lib.warning(
      `lanyard stop could not revoke every credential (exit status ${REVOKE_FAILED}): they stay valid until they expire${said}`,
    );
  } else if (result.code !== 0 || result.signal) {
    const said = result.stderr.trim() ? `:\n${lib.tail(result.stderr)}` : '';
    lib.warning(
      `lanyard stop ${lib.describeExit(result)}; its credentials may not all be revoked before they expire${said}`,
    );
  }
}

function report(err) {
  lib.warning(`lanyard post step: ${err && err.message ? err.message : err}`);
}

process.on('uncaughtException', report);
post()
  .catch(report)
  .finally(() => {
    process.exitCode = 0;
  });
