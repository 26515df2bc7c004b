//! A long job against moto with its signature checks on: a boto3 client
//! runs through lanyard's proxy with the placeholder keys while lanyard
//! re-exchanges the role session under it, and no call fails.
//!
//! Time is compressed: real STS's minimum session is 900 s (the issue asks
//! for 15 minutes), which is too long for CI. `peers/aws_sts.py --mode
//! moto` forwards AssumeRoleWithWebIdentity to moto and hands lanyard
//! moto's real keys with an Expiration a few seconds away, so lanyard
//! re-exchanges every few seconds. The refresh path is the one a 15-minute
//! session takes; only the clock is shorter.
//!
//! The same job checks that nothing lanyard prints or keeps (`status`,
//! `status --json`, the daemon's log, `stop`'s summary, the audit file)
//! holds a real key or a placeholder: the placeholders appear only in
//! what `start` exports, by design.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::aws::{assert_keys_absent, aws_venv, ci_role, sts_front_user, AwsJob, AwsSts, Moto};
use common::*;
use serde_json::Value;

const SECRET: &str = "long-job-secret-canary-5d02";

/// Calls `sts get-caller-identity` and `secretsmanager get-secret-value`
/// in a loop until `$STOP` exists (or its own deadline), with retries off
/// so a refused call cannot hide behind a retry; writes its count of
/// good calls to `$PROGRESS` after each round and prints a JSON summary.
const CLIENT: &str = r#"
import json, os, time, boto3
from botocore.config import Config
cfg = Config(retries={'total_max_attempts': 1})
e = os.environ['M']
sts = boto3.client('sts', endpoint_url=e, region_name='us-east-1', config=cfg)
sm = boto3.client('secretsmanager', endpoint_url=e, region_name='us-east-1', config=cfg)
ok, failures = 0, []
deadline = time.monotonic() + 150
while not os.path.exists(os.environ['STOP']) and time.monotonic() < deadline:
    for name, call in (('sts', lambda: sts.get_caller_identity()['Arn'].startswith('arn:aws:sts::123456789012:assumed-role/ci-deploy/')),
                       ('secret', lambda: sm.get_secret_value(SecretId='ci/db')['SecretString'] == os.environ['S'])):
        try:
            if call():
                ok += 1
            else:
                failures.append(name + ': a wrong answer')
        except Exception as ex:
            failures.append(f'{name}: {type(ex).__name__}: {str(ex)[:300]}')
    with open(os.environ['PROGRESS'] + '.tmp', 'w') as f:
        f.write(str(ok))
    os.replace(os.environ['PROGRESS'] + '.tmp', os.environ['PROGRESS'])
print(json.dumps({'ok': ok, 'failed': len(failures), 'first_failures': failures[:4]}))
"#;

fn rotations(job: &AwsJob) -> u64 {
    job.status_json()["credentials"][0]["rotations"]
        .as_u64()
        .unwrap_or(0)
}

fn progress(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `cond` until it holds, or fails with `what` after `secs`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

#[test]
fn a_running_client_sees_no_signature_failure_across_three_re_exchanges_and_nothing_leaks() {
    let moto = Moto::start();
    let script = ci_role(&["sts:GetCallerIdentity", "secretsmanager:GetSecretValue"])
        + "client('secretsmanager').create_secret(Name='ci/db', SecretString=SECRET)\n";
    moto.boto(&script.replace("SECRET", &format!("{SECRET:?}")));
    let front = sts_front_user(&moto);
    moto.auth_after(0);
    // Once on, only `/moto-api/reset-auth` turns the checks off and
    // nothing calls it again: on before and after the run is on throughout.
    moto.assert_checks_on();

    // moto's keys, Expiration 6 s away: a re-exchange every few seconds.
    let sts = AwsSts::forwarding_to(&moto, &front, 6);
    let route = format!(
        "[[route]]\nname = \"moto\"\nurl = \"{}/\"\ncredential = \"aws\"\naws_region = \"us-east-1\"\n",
        moto.url
    );
    let job = AwsJob::new(&sts.url, &route);
    let (code, start_out, start_err) = job.start();
    assert_eq!(code, 0, "stdout:\n{start_out}\nstderr:\n{start_err}");
    let vars: HashMap<String, String> = start_out
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect();
    assert!(
        vars["AWS_ACCESS_KEY_ID"].starts_with("ASIALANYARD"),
        "{start_out}"
    );

    let d = job.dir.path();
    let (stop_file, progress_file) = (d.join("stop"), d.join("progress"));
    let mut client = Command::new(aws_venv().join("bin/python"));
    client
        .args(["-c", CLIENT])
        .env_clear()
        .envs(&vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", d)
        .env("M", &moto.url)
        .env("S", SECRET)
        .env("STOP", &stop_file)
        .env("PROGRESS", &progress_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let client = client.spawn().expect("start the client");

    // The client is running before the re-exchanges counted here, and
    // keeps running after the last of them.
    wait_for(60, "the client made no call", || {
        progress(&progress_file) >= 2
    });
    let first = rotations(&job);
    wait_for(90, "three re-exchanges under the client", || {
        rotations(&job) >= first + 3
    });
    let after = progress(&progress_file);
    wait_for(60, "the client made no call after the re-exchanges", || {
        progress(&progress_file) >= after + 4
    });
    std::fs::write(&stop_file, "").expect("stop file");
    let out = client.wait_with_output().expect("client");
    let (cout, cerr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "client:\n{cout}\n{cerr}");
    let summary = json_of(cout.trim());
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["ok"].as_u64().unwrap_or(0) >= 8, "{summary}");
    moto.assert_checks_on();

    // Several role sessions served the calls: moto issued a key per
    // exchange, and the audit's fingerprints of the signing keys changed.
    let roles = moto.assumed_roles();
    let ids: std::collections::BTreeSet<&str> = roles
        .iter()
        .filter_map(|r| r["access_key_id"].as_str())
        .collect();
    assert!(ids.len() >= 4, "{roles:#?}");
    let audit: Vec<Value> = job
        .audit_text()
        .lines()
        .map(json_of)
        .filter(|l| l.get("decision").is_some())
        .collect();
    let signed: Vec<&Value> = audit.iter().filter(|l| l["decision"] == "signed").collect();
    assert!(
        signed.iter().all(|l| l["status"] == 200),
        "a signed call failed: {:#?}",
        signed.iter().find(|l| l["status"] != 200)
    );
    let prints: std::collections::BTreeSet<&str> = signed
        .iter()
        .filter_map(|l| l["fingerprint"].as_str())
        .collect();
    assert!(prints.len() >= 4, "{prints:?}");

    // Nothing lanyard prints or keeps holds a key or a placeholder.
    let status_json = job.status_json().to_string();
    let (code, status, status_err) = job.lanyard(&["status"]);
    assert_eq!(code, 0, "{status}\n{status_err}");
    let log_path = find_file(std::path::Path::new(&job.state), "lanyard.log")
        .expect("start's daemon log in the state folder");
    let log = std::fs::read_to_string(&log_path).expect("daemon log");
    assert!(log.contains("credential refreshed"), "{log}");
    let (code, stop, stop_err) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "{stop}\n{stop_err}");
    let audit_text = job.audit_text();
    let texts = [
        start_err.as_str(),
        &status_json,
        &status,
        &status_err,
        &log,
        &stop,
        &stop_err,
        &audit_text,
        &cout,
        &cerr,
    ];
    assert_keys_absent(&texts, &roles);
    assert_keys_absent(&texts, &sts.issued());
    for p in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert_absent(&texts, &vars[p], "a placeholder");
    }
    assert_absent(&texts, SECRET, "the secret");
}
