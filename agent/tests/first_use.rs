//! What a new user meets in the first minutes, before any peer is needed:
//! a command typed without `--`, and a config file that says nothing.
//! Each mistake stops at once with a message that names the fix, and the
//! command is never run.

mod common;

use common::*;

/// A marker the command would create if lanyard ran it.
fn marker_cmd(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let m = dir.join("ran");
    (format!("touch {}", m.display()), m)
}

#[test]
fn run_without_double_dash_suggests_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, marker) = marker_cmd(dir.path());
    let m = marker.display().to_string();
    for (args, fixed) in [
        (
            vec!["run", "touch", m.as_str()],
            format!("lanyard run -- touch {m}"),
        ),
        (
            vec!["run", "--max-lifetime", "1h", "touch", "-c", m.as_str()],
            format!("lanyard run --max-lifetime 1h -- touch -c {m}"),
        ),
        (
            vec!["run", "sh", "-c", "touch \"$0\"", m.as_str()],
            format!("lanyard run -- sh -c 'touch \"$0\"' {m}"),
        ),
    ] {
        let (code, out, err) = lanyard(&args, &[]);
        assert_eq!(code, 2, "{args:?}: usage error expected\n{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains(&fixed),
            "{args:?}: the message should show the command after `--`:\n{err}"
        );
        assert!(!marker.exists(), "{args:?}: the command must not run");
    }
}

#[test]
fn an_empty_config_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cmd, marker) = marker_cmd(dir.path());
    for text in ["", "# nothing yet\n", "[identity]\nsource = \"github\"\n"] {
        let cfg = write_config(dir.path(), text);
        let c = cfg.display().to_string();
        let (code, _, err) = lanyard(&["run", "--config", &c, "--", "sh", "-c", &cmd], &[]);
        assert_eq!(code, 2, "{text:?}: config error expected\n{err}");
        assert!(
            err.contains(&c) && err.contains("no [[credential]]"),
            "{text:?}: the error should name the file and what is missing:\n{err}"
        );
        assert!(!marker.exists(), "{text:?}: the command must not run");
    }
}
