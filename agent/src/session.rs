//! One job's running lanyard: the control plane, the proxy, the audit log
//! and the CA bundle on disk, plus the environment the job's commands get.
//! `run` and the `start` daemon both build exactly this, and tear it down
//! the same way: stop the listener, revoke, summarise, delete files. The
//! audit file is the one thing kept: it is the record of what the job did.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError, Control};
use crate::audit::{Audit, Summary};
use crate::config::Config;
use crate::env::Env;
use crate::proxy::{Proxy, ProxyError, ProxyOptions};
use crate::secret::Secret;
use crate::store::RevokeReport;

/// Why: GitHub's default job timeout; the CA and the daemon never outlive it
/// unless the platform says the job is longer.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// CA-bundle variables for every common runtime.
pub const CA_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
];

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    App(#[from] AppError),
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    #[error("audit file {path}: {source} (`[audit] file` chooses another path)")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the AWS container-credentials token file {path}: {source}")]
    ContainerToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the CA bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct SessionOptions {
    /// Where the CA bundle goes (removed at teardown).
    pub dir: PathBuf,
    pub max_lifetime: Duration,
    pub audience: Option<String>,
}

pub struct Session {
    pub control: Control,
    pub proxy: Proxy,
    pub audit: Arc<Audit>,
    /// Absolute; kept after teardown.
    pub audit_path: PathBuf,
    pub bundle: PathBuf,
    cancel: CancellationToken,
    scrub: Vec<String>,
    routes: Vec<crate::route::Route>,
    credentials: Vec<crate::config::CredentialConfig>,
    /// The AWS container-credentials token file (removed at teardown).
    container_token: Option<PathBuf>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// What teardown did.
#[derive(Debug)]
pub struct Teardown {
    pub revoked: Vec<RevokeReport>,
    pub summary: Summary,
    /// The audit file, which teardown keeps.
    pub audit: PathBuf,
}

/// The AWS container-credentials token's file, in the session's private
/// folder (never the workspace); removed at teardown.
pub const CONTAINER_TOKEN_FILE: &str = "aws-container-token";

/// The audit file's name when `[audit] file` names none.
pub const AUDIT_FILE: &str = "lanyard-audit.jsonl";

/// Where the audit record goes when `[audit] file` names none: outside the
/// state folder, because it must outlive the session.
/// Why these places: on GitHub, `$RUNNER_TEMP` is private to the job, is
/// not the checkout (a later `git add -A` cannot commit it), and lives
/// until the job ends, so a later step (`actions/upload-artifact`) can keep
/// it. Elsewhere the working directory: on GitLab that is the project
/// folder, the only place `artifacts: paths` can take files from; on a
/// laptop it is where you ran lanyard.
pub fn default_audit_path(env: &dyn Env) -> PathBuf {
    let dir = env
        .non_empty("RUNNER_TEMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    absolute(&dir.join(AUDIT_FILE))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// The line every teardown prints.
pub fn audit_kept_line(path: &Path) -> String {
    format!("lanyard: audit record kept in {}\n", path.display())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(text.as_bytes())
}

impl Session {
    pub async fn start(
        cfg: &Config,
        env: &dyn Env,
        opts: SessionOptions,
    ) -> Result<Session, SessionError> {
        let mut cfg = cfg.clone();
        if let Some(a) = opts.audience {
            cfg.identity.audience = Some(a);
        }
        let cancel = CancellationToken::new();
        let control = app::start(&cfg, env, cancel.child_token()).await?;
        let audit_path = match &cfg.audit.file {
            Some(f) => absolute(f),
            None => default_audit_path(env),
        };
        let audit =
            Arc::new(
                Audit::open(Some(&audit_path)).map_err(|source| SessionError::Audit {
                    path: audit_path.clone(),
                    source,
                })?,
            );
        audit.job(&serde_json::to_value(&control.job).unwrap_or_default());
        let mut trace = Vec::new();
        if cfg.audit.trace_headers {
            let pairs = [
                (crate::proxy::server::TRACE_COMMIT, &control.job.commit),
                (
                    crate::proxy::server::TRACE_PIPELINE,
                    &control.job.pipeline_id,
                ),
            ];
            for (name, value) in pairs {
                if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                    trace.push((HeaderName::from_static(name), v));
                }
            }
        }
        let proxy = Proxy::start(
            ProxyOptions {
                listen: cfg.proxy.listen,
                routes: cfg.routes.clone(),
                egress: cfg.proxy.egress,
                max_connections: cfg.proxy.max_connections,
                workers: crate::proxy::server::worker_threads(env)
                    .unwrap_or(crate::proxy::server::DEFAULT_WORKER_THREADS),
                extra_ca: cfg.upstream.extra_ca.clone(),
                ca_lifetime: opts.max_lifetime,
                trace,
                same_user: cfg!(target_os = "linux"),
                identity: control.session_identity.clone(),
                limits: cfg.proxy.limits,
                container_credential: crate::config::container_credential(&cfg.credentials),
                entra: crate::config::entra_credentials(&cfg.credentials),
                gcp: crate::config::gcp_credentials(&cfg.credentials),
                upstream_proxy: control.upstream_proxy.clone(),
            },
            control.store.clone(),
            audit.clone(),
        )
        .await?;
        let bundle = opts.dir.join("ca-bundle.pem");
        let text = proxy
            .ca()
            .bundle(cfg.upstream.extra_ca.as_deref())
            .and_then(|t| write_private(&bundle, &t))
            .map_err(|source| SessionError::Bundle {
                path: bundle.clone(),
                source,
            });
        let container_token = opts.dir.join(CONTAINER_TOKEN_FILE);
        let text = match (text, proxy.container_endpoint()) {
            (Ok(()), Some((_, token))) => write_private(&container_token, token.expose())
                .map(|()| Some(container_token.clone()))
                .map_err(|source| SessionError::ContainerToken {
                    path: container_token.clone(),
                    source,
                }),
            (Ok(()), None) => Ok(None),
            (Err(e), _) => Err(e),
        };
        let container_token = match text {
            Ok(t) => t,
            Err(e) => {
                // Nothing may outlive a failed start: revoke what was
                // obtained, delete what was written.
                let _ = std::fs::remove_file(&bundle);
                let _ = std::fs::remove_file(&container_token);
                proxy.shutdown().await;
                control.store.shutdown().await;
                return Err(e);
            }
        };
        // Identity inputs and the variables credentials read their client
        // secrets from (a Port client secret, an OAuth client secret).
        let mut scrub = control.identity.consumed_variables().to_vec();
        for c in &cfg.credentials {
            for v in c.kind.secret_variables() {
                if !scrub.iter().any(|s| s == v) {
                    scrub.push(v.to_owned());
                }
            }
        }
        // all_proxy/ALL_PROXY with the corporate proxy's password: the
        // child gets lanyard's URL in the four variables it reads first.
        for v in &control.upstream_proxy.scrub {
            if !scrub.iter().any(|s| s == v) {
                scrub.push((*v).to_owned());
            }
        }
        tokio::spawn(audit.clone().flush_loop(cancel.child_token()));
        Ok(Session {
            control,
            proxy,
            audit,
            audit_path,
            bundle,
            cancel,
            scrub,
            routes: cfg.routes.clone(),
            credentials: cfg.credentials.clone(),
            container_token,
        })
    }

    /// The environment the job's commands get. Values are `Secret`s: the
    /// proxy URLs carry the proxy secret.
    pub fn exports(&self) -> Vec<(String, Secret)> {
        let url = self.proxy.url();
        let mut out = Vec::new();
        for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            out.push((k.to_owned(), url.clone()));
        }
        // The job's own NO_PROXY entries stay (hosts it reaches directly,
        // as it did before lanyard), then the listener itself: loopback
        // routes (local token services, test upstreams) must still go
        // through it.
        let own = Secret::new(
            self.control
                .upstream_proxy
                .child_no_proxy(&self.proxy.addr.to_string()),
        );
        out.push(("NO_PROXY".into(), own.clone()));
        out.push(("no_proxy".into(), own));
        let bundle = Secret::new(self.bundle.display().to_string());
        for k in CA_VARS {
            out.push((k.to_owned(), bundle.clone()));
        }
        // Node ≥ 22.21 / 24.5 honours HTTPS_PROXY for fetch with this.
        out.push(("NODE_USE_ENV_PROXY".into(), Secret::new("1")));
        // AWS routes: placeholder keys for the SDKs (lanyard signs each
        // request afresh), the bundle for botocore, and no aws-chunked
        // uploads (their chunk signatures cannot be re-signed).
        let aws = self.proxy.aws_placeholder_env();
        if !aws.is_empty() {
            out.extend(aws);
            out.push(("AWS_CA_BUNDLE".into(), bundle.clone()));
            out.push((
                "AWS_REQUEST_CHECKSUM_CALCULATION".into(),
                Secret::new("when_required"),
            ));
        }
        out.push(("LANYARD_PROXY".into(), url));
        out.push(("LANYARD_CA_FILE".into(), bundle));
        // The endpoint's URL and the token's file, never the token.
        if let (Some((url, _)), Some(file)) =
            (self.proxy.container_endpoint(), &self.container_token)
        {
            out.push((
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                Secret::new(url),
            ));
            out.push((
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
                Secret::new(file.display().to_string()),
            ));
        }
        // Entra credentials: App Service's managed-identity variables, for
        // azure-identity; the tokens it hands out are placeholders.
        out.extend(self.proxy.azure_mi_env());
        // gcp-workload-identity credentials: the metadata server's address,
        // for google-auth; the tokens it hands out are placeholders.
        out.extend(self.proxy.gce_metadata_env());
        let mut rev = self.proxy.reverse_urls();
        rev.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(rev);
        out
    }

    pub fn routes(&self) -> &[crate::route::Route] {
        &self.routes
    }

    pub fn credentials(&self) -> &[crate::config::CredentialConfig] {
        &self.credentials
    }

    /// The AWS container-credentials endpoint's URL, when on.
    pub fn container_url(&self) -> Option<String> {
        self.proxy.container_endpoint().map(|(u, _)| u)
    }

    /// Identity inputs and client-secret variables that the job's commands
    /// must not inherit.
    pub fn scrub(&self) -> &[String] {
        &self.scrub
    }

    /// Stop the listener, revoke every credential, delete the bundle; keep
    /// the audit file.
    pub async fn teardown(self) -> Teardown {
        self.proxy.shutdown().await;
        let revoked = self.control.store.shutdown().await;
        self.cancel.cancel();
        self.audit.flush();
        let _ = std::fs::remove_file(&self.bundle);
        if let Some(t) = &self.container_token {
            let _ = std::fs::remove_file(t);
        }
        Teardown {
            revoked,
            summary: self
                .audit
                .summary()
                .with_configured(self.routes().iter().map(|r| {
                    let shown = match &r.name {
                        Some(n) => format!("{n} ({})", r.display_url()),
                        None => r.display_url(),
                    };
                    (r.audit_key(), shown)
                })),
            audit: self.audit_path,
        }
    }
}

/// Lines for the terminal about each revocation.
pub fn revoke_lines(reports: &[RevokeReport]) -> String {
    use crate::exchange::Revoked;
    let mut out = String::new();
    for r in reports {
        let what = match &r.outcome {
            Ok(Revoked::Done(how)) => format!("revoked ({how})"),
            Ok(Revoked::NotRevocable(why)) => format!("not revocable, expires on its own ({why})"),
            Ok(Revoked::ExpiresAt { at, why }) => format!(
                "not revocable, expires on its own at {} ({why})",
                crate::identity::format_time(*at)
            ),
            Err(e) => format!("revocation FAILED: {e}"),
        };
        out.push_str(&format!(
            "lanyard: credential {} ({}): {what}\n",
            r.name, r.fingerprint
        ));
    }
    out
}

/// Append the summary to `$GITHUB_STEP_SUMMARY` when it is set.
pub fn write_step_summary(env: &dyn Env, summary: &Summary) {
    let Some(path) = env.non_empty("GITHUB_STEP_SUMMARY") else {
        return;
    };
    use std::io::Write;
    let r = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(summary.markdown().as_bytes()));
    if let Err(e) = r {
        eprintln!("lanyard: cannot write GITHUB_STEP_SUMMARY {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn the_default_audit_file_is_outside_any_state_folder() {
        let gh = MapEnv::new([("RUNNER_TEMP", "/rt"), ("LANYARD_STATE_DIR", "/s")]);
        assert_eq!(
            default_audit_path(&gh),
            PathBuf::from("/rt/lanyard-audit.jsonl")
        );
        let elsewhere = MapEnv::new([("LANYARD_STATE_DIR", "/s")]);
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(default_audit_path(&elsewhere), cwd.join(AUDIT_FILE));
    }
}
