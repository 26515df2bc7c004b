//! Two jobs on one host, same user, no `LANYARD_STATE_DIR`: each platform's
//! job id puts each job's state in its own folder, so two concurrent
//! `start`s both get ready, and `status`/`stop` with one job's variables
//! reach that job's daemon only.

mod common;

use common::job::Job;
use common::*;

/// One job's environment as its platform sets it: the job id variable(s),
/// a shared TMPDIR (no RUNNER_TEMP, no CI_BUILDS_DIR, no XDG_RUNTIME_DIR).
fn job_env(job: &Job, tmp: &str, ids: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("LANYARD_TEST_TOKEN".to_string(), job.token.clone()),
        ("TMPDIR".to_string(), tmp.to_string()),
        ("HOME".to_string(), job.dir.path().display().to_string()),
    ];
    env.extend(ids.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn call(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    lanyard(args, &pairs)
}

fn exported(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}='")))
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        .to_string()
}

fn pid_of(env: &[(String, String)]) -> u64 {
    let (code, out, err) = call(&["status", "--json"], env);
    assert_eq!(code, 0, "status: {out}{err}");
    json_of(&out)["pid"].as_u64().expect("pid")
}

fn two_concurrent_jobs(platform: &str, a: &[(&str, &str)], b: &[(&str, &str)]) {
    let tmp = tempfile::tempdir().expect("tmp");
    let shared = tmp.path().display().to_string();
    let (ja, jb) = (Job::new(""), Job::new(""));
    let (ea, eb) = (job_env(&ja, &shared, a), job_env(&jb, &shared, b));
    let start = |job: &Job, env: &[(String, String)]| {
        let config = job.config.display().to_string();
        call(
            &[
                "start",
                "--config",
                &config,
                "--export",
                "sh",
                "--watch-pid",
                "0",
            ],
            env,
        )
    };
    // Both at once, as two jobs scheduled together on one runner host.
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| start(&ja, &ea));
        let tb = s.spawn(|| start(&jb, &eb));
        (ta.join().expect("a"), tb.join().expect("b"))
    });
    // Stop both whatever the assertions below say.
    struct StopOnDrop<'a>(&'a [(String, String)]);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            call(&["stop"], self.0);
        }
    }
    let _sa = StopOnDrop(&ea);
    let _sb = StopOnDrop(&eb);
    assert_eq!(
        ra.0, 0,
        "{platform}: job A's start failed:\n{}{}",
        ra.1, ra.2
    );
    assert_eq!(
        rb.0, 0,
        "{platform}: job B's start failed:\n{}{}",
        rb.1, rb.2
    );
    let (sa, sb) = (
        exported(&ra.1, "LANYARD_STATE_DIR"),
        exported(&rb.1, "LANYARD_STATE_DIR"),
    );
    assert_ne!(sa, sb, "{platform}: both jobs got the same state folder");
    for s in [&sa, &sb] {
        assert!(
            s.starts_with(&shared),
            "{platform}: {s} is not under TMPDIR"
        );
    }
    // status and stop find each job's own daemon.
    let (pa, pb) = (pid_of(&ea), pid_of(&eb));
    assert_ne!(
        pa, pb,
        "{platform}: status reached the same daemon for both jobs"
    );
    let (code, out, err) = call(&["stop"], &ea);
    assert_eq!(code, 0, "{platform}: stop A: {out}{err}");
    assert!(out.contains(&format!("removed {sa}")), "{platform}: {out}");
    assert_eq!(call(&["status"], &ea).0, 1, "{platform}: A is stopped");
    assert_eq!(pid_of(&eb), pb, "{platform}: stopping A left B running");
    let (code, out, err) = call(&["stop"], &eb);
    assert_eq!(code, 0, "{platform}: stop B: {out}{err}");
    assert!(out.contains(&format!("removed {sb}")), "{platform}: {out}");
    ja.assert_no_leak(&[&ra.1, &ra.2, &out, &err]);
}

#[test]
fn two_buildkite_jobs_on_one_host_run_side_by_side() {
    two_concurrent_jobs(
        "buildkite",
        &[("BUILDKITE_JOB_ID", "0190e1a2-aaaa-7000-8000-000000000001")],
        &[("BUILDKITE_JOB_ID", "0190e1a2-bbbb-7000-8000-000000000002")],
    );
}

#[test]
fn two_jenkins_builds_on_one_host_run_side_by_side() {
    // BUILD_TAG is jenkins-${JOB_NAME}-${BUILD_NUMBER}; folder jobs hold
    // slashes in JOB_NAME, which must not become path separators.
    two_concurrent_jobs(
        "jenkins",
        &[("BUILD_TAG", "jenkins-team/app-41")],
        &[("BUILD_TAG", "jenkins-team/app-42")],
    );
}

#[test]
fn two_jobs_of_each_other_platform_get_different_state_folders() {
    for (platform, a, b) in [
        (
            "gitlab",
            vec![("CI_JOB_ID", "101")],
            vec![("CI_JOB_ID", "102")],
        ),
        (
            "github",
            vec![
                ("GITHUB_RUN_ID", "9"),
                ("GITHUB_RUN_ATTEMPT", "1"),
                ("GITHUB_JOB", "build"),
            ],
            vec![
                ("GITHUB_RUN_ID", "9"),
                ("GITHUB_RUN_ATTEMPT", "2"),
                ("GITHUB_JOB", "build"),
            ],
        ),
        (
            "circleci",
            vec![("CIRCLE_WORKFLOW_JOB_ID", "5c1d-1")],
            vec![("CIRCLE_WORKFLOW_JOB_ID", "5c1d-2")],
        ),
        (
            "bitbucket",
            vec![("BITBUCKET_STEP_UUID", "{8a2b-1}")],
            vec![("BITBUCKET_STEP_UUID", "{8a2b-2}")],
        ),
    ] {
        two_concurrent_jobs(platform, &a, &b);
    }
}
