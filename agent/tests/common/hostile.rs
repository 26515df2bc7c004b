//! Peers started in a named misbehaving mode.

use std::process::Command;

use serde_json::Value;

use super::*;

/// A `peers/<script> --dir DIR --mode MODE ARGS…` peer whose ready line
/// gives its port; DIR is where it records what it saw.
pub(crate) fn start_mode_peer(
    script: &str,
    mode: &str,
    args: &[&str],
) -> (Proc, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(python());
    cmd.arg(root().join("agent/tests/peers").join(script))
        .arg("--dir")
        .arg(dir.path())
        .args(["--mode", mode])
        .args(args);
    let name = format!("{} {mode}", script.trim_end_matches(".py"));
    let (proc, v) = spawn_ready(&name, cmd);
    (proc, v["port"].as_u64().expect("port") as u16, dir)
}

/// The hostile raw-socket upstream (`peers/hostile.py`) in one of its
/// modes: `clte`, `hang`, `drip`, `burst401`.
pub struct Hostile {
    pub proc: Proc,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Hostile {
    pub fn start(mode: &str, args: &[&str]) -> Hostile {
        let (proc, port, dir) = start_mode_peer("hostile.py", mode, args);
        Hostile { proc, port, dir }
    }

    /// Every connection (`{"event":"connect","conn"}`) and request head
    /// (`{"event":"request","conn","method","path","auth"}`), in order.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .collect()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "request")
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "connect")
            .count()
    }
}
