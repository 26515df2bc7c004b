//! nginx (HTTPS, HTTP/2) in front of `git http-backend`: a real git server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// nginx (HTTPS, HTTP/2) in front of `git http-backend` via fcgiwrap,
/// demanding Basic auth `x-access-token:<token>`.
pub struct GitServer {
    pub nginx: Proc,
    pub fcgi: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl GitServer {
    pub fn start(cert: &Path, key: &Path, token: &str) -> GitServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let repos = d.join("repos");
        std::fs::create_dir_all(&repos).expect("repos");
        // A real repository with one commit, served bare.
        let work = d.join("work");
        let git = |args: &[&str], cwd: &Path| {
            let out = Command::new("git")
                .args(args)
                .current_dir(cwd)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .expect("git");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::create_dir_all(&work).expect("work");
        git(&["init", "-q", "-b", "main"], &work);
        std::fs::write(work.join("README"), "served through lanyard\n").expect("file");
        git(&["add", "README"], &work);
        git(&["commit", "-q", "-m", "first"], &work);
        git(
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().expect("utf8"),
                repos.join("app.git").to_str().expect("utf8"),
            ],
            d,
        );
        git(
            &["config", "http.receivepack", "true"],
            &repos.join("app.git"),
        );
        std::fs::write(
            d.join("htpasswd"),
            format!("x-access-token:{{PLAIN}}{token}\n"),
        )
        .expect("htpasswd");
        let sock = d.join("fcgi.sock");
        let fcgiwrap = ["/usr/sbin/fcgiwrap", "/usr/bin/fcgiwrap"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("fcgiwrap is not installed — run scripts/ensure-tools.sh");
        let log = d.join("fcgi.log");
        let child = Command::new(fcgiwrap)
            .args(["-s", &format!("unix:{}", sock.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("fcgiwrap");
        let fcgi = Proc {
            name: "fcgiwrap".into(),
            child,
            log,
            _dir: tempfile::tempdir().expect("tmp"),
        };
        let end = std::time::Instant::now() + READY_TIMEOUT;
        while !sock.exists() {
            assert!(
                std::time::Instant::now() < end,
                "fcgiwrap never made {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let backend = [
            "/usr/lib/git-core/git-http-backend",
            "/usr/libexec/git-core/git-http-backend",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("git-http-backend");
        let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed — run scripts/ensure-tools.sh");
        let user = if nix_is_root() { "user root;" } else { "" };
        // nginx cannot bind port 0, so a free port is picked first; another
        // process may take it in between. nginx writes its pid file only
        // after every listen socket is bound, so the pid file (not a connect,
        // which another listener on that port would also answer) says it is
        // up; a bind refusal picks a new port.
        let mut attempt = 0;
        let (nginx, port) = loop {
            attempt += 1;
            let port = free_port();
            let pid_file = d.join("nginx.pid");
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(d.join("error.log"));
            let conf = format!(
                r#"{user}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log combined;
  client_body_temp_path {d}/body;
  fastcgi_temp_path {d}/fastcgi;
  proxy_temp_path {d}/proxy;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  log_format proto '$server_protocol $request_method $uri $status';
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    access_log {d}/proto.log proto;
    location ~ ^/git(/.*)$ {{
      auth_basic "git";
      auth_basic_user_file {d}/htpasswd;
      fastcgi_pass unix:{sock};
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {repos};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param PATH_INFO $1;
    }}
  }}
}}
"#,
                d = d.display(),
                cert = cert.display(),
                key = key.display(),
                sock = sock.display(),
                repos = repos.display(),
            );
            let conf_path = d.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("nginx.conf");
            let log = d.join("nginx.stderr");
            let child = Command::new(nginx_bin)
                .args([
                    "-p",
                    &d.display().to_string(),
                    "-c",
                    &conf_path.display().to_string(),
                    "-e",
                    &d.join("error.log").display().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("nginx");
            let nginx = Proc {
                name: "nginx".into(),
                child,
                log: d.join("error.log"),
                _dir: tempfile::tempdir().expect("tmp"),
            };
            let want = nginx.pid().to_string();
            let end = std::time::Instant::now() + READY_TIMEOUT;
            let up = loop {
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
                if pid.trim() == want {
                    break true;
                }
                if nginx.log_text().contains("Address already in use") {
                    break false;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "nginx never wrote its pid file; log:\n{}",
                    nginx.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                break (nginx, port);
            }
            assert!(
                attempt < 5,
                "nginx could not bind a free port in 5 attempts; log:\n{}",
                nginx.log_text()
            );
            eprintln!("nginx: port {port} was taken before nginx bound it; picking another");
            drop(nginx);
        };
        wait_port(port, &nginx);
        GitServer {
            nginx,
            fcgi,
            port,
            dir,
        }
    }

    /// `HTTP/2.0 GET /git/app.git/info/refs 200` lines.
    pub fn protocol_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proto.log")).unwrap_or_default()
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
