//! A real forward proxy (Debian's tinyproxy, installed by
//! scripts/ensure-tools.sh) on an ephemeral loopback port, with its config
//! and log in a temp dir. It runs in a mount namespace of its own whose
//! `/etc/hosts` maps `names` to 127.0.0.1: only the proxy can resolve them,
//! so a peer under such a name is reachable only through it.

use std::process::Command;

use super::*;

pub struct Tinyproxy {
    pub proc: Proc,
    pub port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    /// `auth`: (user, password) the proxy demands (407 otherwise);
    /// `deny`: host names it refuses (403).
    pub fn start(names: &[&str], auth: Option<(&str, &str)>, deny: &[&str]) -> Tinyproxy {
        let bin = which("tinyproxy").unwrap_or_else(|| {
            panic!(
                "tinyproxy missing — run scripts/ensure-tools.sh (the README's test command does)"
            )
        });
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
             MaxClients 50\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
            log.display()
        );
        if let Some((u, p)) = auth {
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        if !deny.is_empty() {
            let filter = dir.path().join("filter");
            let lines: String = deny
                .iter()
                .map(|d| format!("^{}$\n", d.replace('.', "\\.")))
                .collect();
            std::fs::write(&filter, lines).expect("filter");
            conf.push_str(&format!(
                "Filter \"{}\"\nFilterURLs Off\nFilterExtended On\nFilterDefaultDeny No\n",
                filter.display()
            ));
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("conf");
        let hosts = dir.path().join("hosts");
        let mut text = String::from("127.0.0.1 localhost\n");
        for n in names {
            text.push_str(&format!("127.0.0.1 {n}\n"));
        }
        std::fs::write(&hosts, text).expect("hosts");
        let stderr = dir.path().join("stderr.log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/hosts && exec \"$2\" -d -c \"$3\"")
            .arg("sh")
            .arg(&hosts)
            .arg(&bin)
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("start tinyproxy");
        let proc = Proc::adopt("tinyproxy", child, stderr, dir);
        wait_port(port, &proc);
        Tinyproxy { proc, port, log }
    }

    /// Its log: one `Request (file descriptor N): CONNECT host:port ...`
    /// line per request.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The request lines it logged (`CONNECT a:443 HTTP/1.1`, `GET http://…`).
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, r)| r.to_owned()))
            .filter(|r| r.contains(" HTTP/1."))
            .collect()
    }

    pub fn version() -> String {
        Command::new("tinyproxy")
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .or_else(|| {
            ["/usr/bin", "/usr/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
        })
}
