//! What a pipeline author meets in the first hour with a running session:
//! `--max-lifetime` under `run`, how `status` speaks of an expired
//! credential, and routes that were configured but never used.

mod common;

use std::time::{Duration, Instant};

use common::job::Job;
use common::*;

/// `run --max-lifetime` ends CMD when the lifetime passes, as the daemon
/// does for `start`: CMD's group gets SIGTERM, lanyard says why, tears down
/// and exits 124, so a job cannot keep using routes past its lifetime.
#[test]
fn run_ends_the_command_when_the_maximum_lifetime_passes() {
    let job = Job::new("");
    let marker = job.dir.path().join("got-term");
    let m = marker.display().to_string();
    let config = job.config.display().to_string();
    let home = job.dir.path().display().to_string();
    // The command would run for a minute; it records the SIGTERM it gets.
    let script = "trap 'touch \"$M\"; exit 143' TERM; \
                  curl -sS -o /dev/null -w '%{http_code}\\n' https://127.0.0.1:$UP/v1/a; \
                  sleep 60 & wait";
    let up = job.up.port.to_string();
    let began = Instant::now();
    let (code, out, err) = lanyard(
        &[
            "run",
            "--config",
            &config,
            "--max-lifetime",
            "3s",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[
            ("LANYARD_TEST_TOKEN", &job.token),
            ("UP", &up),
            ("M", &m),
            ("HOME", &home),
        ],
    );
    let took = began.elapsed();
    assert_eq!(
        code, 124,
        "exit 124 when the lifetime ended CMD\n{out}\n{err}"
    );
    assert!(
        out.contains("200"),
        "the call before the end worked: {out}\n{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "CMD ran on past its lifetime: {took:?}"
    );
    assert!(marker.exists(), "CMD was told (SIGTERM)\n{err}");
    assert!(
        err.contains("maximum lifetime (3s) passed"),
        "stderr says why CMD was ended:\n{err}"
    );
    job.assert_no_leak(&[&out, &err]);
}
