//! `lanyard start` / `stop` / `status`: one session per job, detached.
//!
//! `start` spawns `lanyard __daemon` in a new session with stdin from
//! /dev/null and stdout/stderr to a log file in the state directory, so it
//! never holds the caller's pipes (a known way to hang CI jobs). The daemon
//! reports readiness (or the control plane's error) over a one-shot Unix
//! socket, then serves `status` and `stop` on `control.sock`. It exits on
//! its own when the watched process dies or the maximum lifetime passes,
//! revoking everything first.
//!
//! `client`: the commands as the caller sees them; `serve`: the detached
//! daemon and its control socket; `protocol`: the messages between them;
//! `export`: how `start` hands the environment over. This file: the state
//! directory both sides share.

mod client;
mod export;
mod protocol;
mod serve;

use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::env::Env;

pub use client::{start, status, stop, StartError, StartOptions};
pub use export::{Export, ExportError};
pub use serve::{daemon, DaemonOptions};

const PID_FILE: &str = "pid";
const CONTROL: &str = "control.sock";
const READY: &str = "ready.sock";
const LOG: &str = "lanyard.log";
const ENV_FILE: &str = "lanyard.env";
const CREATED: &str = ".created-by-lanyard";
/// Where the daemon keeps the audit record (one line: the path), so that a
/// `stop` after a crash can still summarise it.
const AUDIT_PATH: &str = "audit-path";
/// Everything lanyard writes in the state folder; all of it is removed at
/// teardown. The audit file is not here: it is kept, outside the folder.
const OWNED: &[&str] = &[
    PID_FILE,
    CONTROL,
    READY,
    LOG,
    ENV_FILE,
    "ca-bundle.pem",
    AUDIT_PATH,
    CREATED,
];

/// The state directory, in the contract's order of preference. Outside
/// `$RUNNER_TEMP` (GitHub empties it at each job's start and end, and a
/// runner runs one job at a time) the folder's name holds the platform's
/// job id, so two jobs of one user on one host never share it.
pub fn state_dir(env: &dyn Env) -> PathBuf {
    if let Some(d) = env.non_empty("LANYARD_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(t) = env.non_empty("RUNNER_TEMP") {
        return Path::new(&t).join("lanyard");
    }
    if let (Some(b), Some(j)) = (env.non_empty("CI_BUILDS_DIR"), env.non_empty("CI_JOB_ID")) {
        return Path::new(&b).join(format!(".lanyard-{}", path_safe(&j)));
    }
    let tag = job_tag(env).map(|t| format!("-{t}")).unwrap_or_default();
    if let Some(x) = env.non_empty("XDG_RUNTIME_DIR") {
        return Path::new(&x).join(format!("lanyard{tag}"));
    }
    let tmp = env.non_empty("TMPDIR").unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp).join(format!("lanyard-{}{tag}", nix::unistd::getuid().as_raw()))
}

/// This job's id on its platform, made safe for a file name; `None` off CI.
/// Jenkins: `BUILD_TAG` (jenkins-JOB_NAME-BUILD_NUMBER) and the executor;
/// Buildkite: `BUILDKITE_JOB_ID`; GitLab: `CI_JOB_ID`; GitHub: the run,
/// its attempt and the job; CircleCI: `CIRCLE_WORKFLOW_JOB_ID`; Bitbucket:
/// `BITBUCKET_STEP_UUID`.
pub fn job_tag(env: &dyn Env) -> Option<String> {
    let joined = |names: &[&str]| {
        let parts: Vec<String> = names.iter().filter_map(|n| env.non_empty(n)).collect();
        (!parts.is_empty()).then(|| parts.join("-"))
    };
    let tag = joined(&["BUILDKITE_JOB_ID"])
        .or_else(|| joined(&["CI_JOB_ID"]))
        .or_else(|| {
            env.non_empty("GITHUB_RUN_ID")?;
            joined(&["GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB"])
        })
        .or_else(|| joined(&["CIRCLE_WORKFLOW_JOB_ID"]))
        .or_else(|| joined(&["BITBUCKET_STEP_UUID"]))
        .or_else(|| {
            env.non_empty("BUILD_TAG")?;
            joined(&["BUILD_TAG", "EXECUTOR_NUMBER"])
        })?;
    let safe = path_safe(&tag);
    (!safe.is_empty()).then_some(safe)
}

/// Letters, digits, `.`, `_` and `-` only (a Jenkins folder job's `/`, a
/// Bitbucket UUID's braces become `-` or go), at most 64 bytes, and never
/// `.` or `..`.
fn path_safe(s: &str) -> String {
    let mapped: String = s
        .chars()
        .filter(|c| !matches!(c, '{' | '}'))
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if mapped.chars().all(|c| c == '.') {
        mapped.replace('.', "-")
    } else {
        mapped
    }
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {} exists and is not a directory (a symlink?)", .0.display())]
    NotADirectory(PathBuf),
    #[error("state directory {} belongs to uid {uid}, not to this user", dir.display())]
    NotOurs { dir: PathBuf, uid: u32 },
    #[error("chmod 700 {}: {source}", dir.display())]
    Chmod {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {}: {source}", dir.display())]
    Stat {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Create (0700) or check an existing state directory: a real directory,
/// ours, private. Returns whether we created it.
fn ensure_dir(dir: &Path) -> Result<bool, StateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            if !m.file_type().is_dir() {
                return Err(StateDirError::NotADirectory(dir.to_owned()));
            }
            if m.uid() != nix::unistd::getuid().as_raw() {
                return Err(StateDirError::NotOurs {
                    dir: dir.to_owned(),
                    uid: m.uid(),
                });
            }
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                    |source| StateDirError::Chmod {
                        dir: dir.to_owned(),
                        source,
                    },
                )?;
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|source| StateDirError::Create {
                    dir: parent.to_owned(),
                    source,
                })?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateDirError::Create {
                    dir: dir.to_owned(),
                    source,
                })?;
            Ok(true)
        }
        Err(source) => Err(StateDirError::Stat {
            dir: dir.to_owned(),
            source,
        }),
    }
}

/// Remove what lanyard wrote; the folder itself only if lanyard made it.
fn clean(dir: &Path) {
    let created = dir.join(CREATED).exists();
    for f in OWNED {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if created {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Is `pid` running? An exited process that its parent has not reaped yet
/// (a zombie) is not.
/// Why: the daemon's parent is whatever adopted it; a slow reaper (PID 1
/// here reaps every ~2 s) made every `lanyard stop` wait for it.
fn alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces or ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state != 'Z' && state != 'X'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // No /proc (not Linux): the signal check decides.
        Err(_) => true,
    }
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The parent of `pid` (Linux /proc), for "the process that started the
/// job's shell".
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may contain spaces and parens.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::env::MapEnv;

    #[cfg(target_os = "linux")]
    #[test]
    fn an_unreaped_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id() as i32;
        // Poll the real condition (bounded): the child has exited but is
        // not reaped, so it is a zombie that signal 0 still reaches.
        let zombie = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !zombie(pid) {
            assert!(std::time::Instant::now() < end, "child {pid} never exited");
            std::thread::yield_now();
        }
        assert!(
            kill(Pid::from_raw(pid), None).is_ok(),
            "a zombie still takes signal 0"
        );
        assert!(!alive(pid), "a zombie counts as gone");
        child.wait().expect("reap");
        assert!(!alive(pid));
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn state_dir_follows_the_contract_order() {
        let e = MapEnv::new([("RUNNER_TEMP", "/rt"), ("XDG_RUNTIME_DIR", "/x")]);
        assert_eq!(state_dir(&e), PathBuf::from("/rt/lanyard"));
        let e = MapEnv::new([
            ("CI_BUILDS_DIR", "/b"),
            ("CI_JOB_ID", "9"),
            ("XDG_RUNTIME_DIR", "/x"),
        ]);
        assert_eq!(state_dir(&e), PathBuf::from("/b/.lanyard-9"));
        let e = MapEnv::new([("LANYARD_STATE_DIR", "/s"), ("RUNNER_TEMP", "/rt")]);
        assert_eq!(state_dir(&e), PathBuf::from("/s"));
    }

    #[test]
    fn state_dir_names_the_platforms_job() {
        let uid = nix::unistd::getuid().as_raw();
        let cases: [(&[(&str, &str)], String); 7] = [
            (
                &[("BUILD_TAG", "jenkins-team/app-41")],
                format!("/t/lanyard-{uid}-jenkins-team-app-41"),
            ),
            (
                &[("BUILD_TAG", "jenkins-app-7"), ("EXECUTOR_NUMBER", "1")],
                format!("/t/lanyard-{uid}-jenkins-app-7-1"),
            ),
            (
                &[("BUILDKITE_JOB_ID", "01-ab")],
                format!("/t/lanyard-{uid}-01-ab"),
            ),
            (&[("CI_JOB_ID", "77")], format!("/t/lanyard-{uid}-77")),
            (
                &[
                    ("GITHUB_RUN_ID", "9"),
                    ("GITHUB_RUN_ATTEMPT", "2"),
                    ("GITHUB_JOB", "build"),
                ],
                format!("/t/lanyard-{uid}-9-2-build"),
            ),
            (
                &[("CIRCLE_WORKFLOW_JOB_ID", "c-1")],
                format!("/t/lanyard-{uid}-c-1"),
            ),
            (
                &[("BITBUCKET_STEP_UUID", "{a-1}")],
                format!("/t/lanyard-{uid}-a-1"),
            ),
        ];
        for (vars, want) in cases {
            let mut env = MapEnv::new([("TMPDIR", "/t")]);
            env.0
                .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            assert_eq!(state_dir(&env), PathBuf::from(want), "{vars:?}");
        }
        let x = MapEnv::new([("XDG_RUNTIME_DIR", "/x"), ("CI_JOB_ID", "5")]);
        assert_eq!(state_dir(&x), PathBuf::from("/x/lanyard-5"));
        let laptop = MapEnv::new([("TMPDIR", "/t")]);
        assert_eq!(
            state_dir(&laptop),
            PathBuf::from(format!("/t/lanyard-{uid}"))
        );
        assert_eq!(path_safe(".."), "--");
        assert_eq!(path_safe("../../etc"), "..-..-etc");
    }

    #[test]
    fn parent_of_reads_proc() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
    }
}
